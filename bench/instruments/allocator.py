"""Pin glibc malloc's thresholds in a worker, so every worker reaches the same steady state.

Why (docs/compare.md, "Duet"; measured on our 2-core VM, torch 2.14.1, glibc): by default
glibc adjusts its mmap threshold (and with it the trim threshold) *dynamically*, from the
sizes of the mmapped chunks a process happens to free (glibc manual, "Malloc Tunable
Parameters": "If this parameter is not set, the default value is set as 128 KiB and the
threshold is adjusted dynamically to suit the allocation patterns of the program"). A CPU
step's activations are freed from more than one thread, so where that adjustment settles
differs between two processes running the same code. The steady state then differs too:
seven forked workers running the same inference step page-faulted 15, 15, 18, 13,639,
28,739, 43,258 and 61,574 times in 10 rounds (in the latter four the activations went back
to the kernel and came back every step). That is the per-worker effect that made one duet
worker 5-15% slower than its twin for its whole life.

`pin_malloc` sets both thresholds with ``mallopt`` (which also "disables the dynamic
adjustment", same manual) before the subject is built:

- ``M_MMAP_THRESHOLD`` = 32 MiB, the largest value glibc accepts on a 64-bit system
  (``DEFAULT_MMAP_THRESHOLD_MAX``, 4 * 1024 * 1024 * sizeof(long); mallopt(3)): chunks up to
  that size come from the heap, and are reused from step to step;
- ``M_TRIM_THRESHOLD`` = 1 GiB: the heap is not handed back to the kernel between steps.

Chunks above 32 MiB (large batches' activations, big weights) are still mmapped, in every
worker alike. Measured here, a pinned worker page-faults about twice per round, as the lucky
default workers do. Both sides of a duet get the same policy, so it cancels in their ratio;
the absolute step time is that of the steady state without allocator churn.

Not glibc (musl, macOS): nothing is changed and the record says why.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "pin_malloc"]

# <malloc.h>: #define M_TRIM_THRESHOLD -1, #define M_MMAP_THRESHOLD -3
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc


def pin_malloc() -> dict[str, Any]:
    """Fix glibc's mmap and trim thresholds in this process; a record of what was done."""
    libc = _glibc()
    if libc is None:
        return {"policy": "default", "reason": "not glibc: the allocator is left as it is"}
    version = libc.gnu_get_libc_version().decode()
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not (ok_mmap and ok_trim):
        return {"policy": "default", "glibc": version,
                "reason": f"mallopt refused (mmap threshold {ok_mmap}, trim threshold {ok_trim})"}
    return {"policy": "pinned", "glibc": version, "mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
