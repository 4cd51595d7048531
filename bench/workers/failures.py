"""Which exceptions during a measurement are expected (out of memory) and which are fatal.

An out-of-memory case is skipped with its reason and the sweep goes on. After a *sticky*
CUDA error the CUDA context of the process is unusable, so the run must stop (or, where each
try has a process of its own, as in ``alexnet-bench max-batch``, that process is discarded).
Used by the benchmark matrix (bench/) and ``alexnet-bench max-batch``.

Importing this module does not import torch: ``is_oom`` looks torch up only if the process
has already imported it (an exception can only be a ``torch.OutOfMemoryError`` then).
"""

from __future__ import annotations

import sys

__all__ = ["FATAL_CUDA_ERRORS", "is_fatal_device_error", "is_oom"]

# Substrings (lower case) of the messages of the CUDA errors after which "the process is in an
# inconsistent state and any further CUDA work will return the same error; to continue using
# CUDA, the process must be terminated and relaunched" (CUDA Runtime API, cudaError enum:
# cudaErrorIllegalAddress, cudaErrorAssert, cudaErrorLaunchFailure, cudaErrorIllegalInstruction,
# cudaErrorMisalignedAddress). PyTorch raises them as "CUDA error: <cudaGetErrorString>",
# e.g. "CUDA error: an illegal memory access was encountered", "CUDA error: device-side assert
# triggered", "CUDA error: unspecified launch failure", "CUDA error: misaligned address",
# "CUDA error: an illegal instruction was encountered" (c10/cuda/CUDAException.cpp,
# c10_cuda_check_implementation; pytorch/pytorch#32893, vllm-project/vllm#18045).
# cuBLAS reports a kernel that failed on the device as "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED
# when calling `cublasSgemm(...)`" (ATen/cuda/CUDABlas.cpp, TORCH_CUDABLAS_CHECK); it follows
# the same device faults.
FATAL_CUDA_ERRORS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "cublas_status_execution_failed",
)
# torch.OutOfMemoryError on CUDA; the CPU allocator raises a plain RuntimeError.
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # not imported: exc cannot be a torch.OutOfMemoryError
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def is_fatal_device_error(exc: BaseException | str) -> bool:
    """True for a sticky CUDA error: the process's CUDA context cannot be used any more."""
    return any(m in str(exc).lower() for m in FATAL_CUDA_ERRORS)
