"""Data-parallel scaling under torchrun: the rank worker (``python -m bench.ddp.rank``)."""
