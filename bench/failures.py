"""Which exceptions during a measurement are expected (out of memory) and which are fatal.

An out-of-memory case is skipped with its reason and the sweep goes on; after an illegal
memory access or a device-side assert the CUDA context is unusable, so the run must stop.
Used by the benchmark matrix (bench/) and ``alexnet-bench max-batch``.
"""

from __future__ import annotations

import torch

__all__ = ["FATAL_CUDA_ERRORS", "is_fatal_device_error", "is_oom"]

FATAL_CUDA_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure")
# torch.OutOfMemoryError on CUDA; the CPU allocator raises a plain RuntimeError.
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def is_fatal_device_error(exc: BaseException) -> bool:
    return any(m in str(exc).lower() for m in FATAL_CUDA_ERRORS)
