"""The duet A/B: two live workers, one per git ref, with rounds alternated (``alexnet-bench ab``)."""
