"""The run record: the saved run's schema, its store and the sample arithmetic. No torch, nothing else of ours."""
