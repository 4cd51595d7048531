"""The run record: the saved run's schema, its store and the sample arithmetic. No torch, nothing else of ours.

- `runrecord.schema`: the saved run as typed records (`RunRecord`, `Case`, `Section`, `Skip`,
  `Failure`, `Isolation`, `Duet`), ``SCHEMA_VERSION`` and the readers of older versions;
- `runrecord.store`: the one store that numbers, saves, finds and reads run files;
- `runrecord.samples`: median/IQR of rounds, pace normalisation, a case's pytest-benchmark ``stats``;
- `runrecord.gitinfo`: a run's ``commit_info``.

docs/saved-run-format.md is the contract these modules implement.
"""
