"""What benchmarks the subject (`alexnet/`): the instruments (timers, per-layer profiler,
NVML/psutil sampler, MFU, environment capture), the case worker, the pytest-benchmark matrix
(``pytest bench/``) and the ``alexnet-bench`` command line (`bench.cli`).

Importing this package imports nothing heavy: `runrecord.samples` and the commands that only read
saved runs (`compare`, `report`, `history`) start without torch.
"""
