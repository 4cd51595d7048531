"""The subject: the d2l.ai chapter's AlexNet (and torchvision's), its configuration, data,
input pipelines, training step and training loop.

It imports nothing from `bench/` (the instruments, the worker, the suite, the command line)
or `reports/` (readers of saved runs): `alexnet-bench ab` loads one ref's `alexnet` beside the
running tool's `bench` (tests/test_layout.py checks this).
"""

__version__ = "0.1.0"
