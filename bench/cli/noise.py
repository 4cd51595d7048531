"""Third-party output that is not for the user, silenced at the command line's start.

Only exact, known messages are dropped; every other warning still reaches the user.

- torch's ``No CUDA runtime is found, using CUDA_HOME=...`` (``torch.utils.cpp_extension``,
  logged when ``CUDA_HOME`` is set on a machine without a GPU, e.g. a CPU box built from a
  CUDA image): nothing here needs a CUDA toolkit on a CPU machine.

The profiler's ``USDT: ... profiler_start`` lines are C++ writes to file descriptor 2; they are
filtered where the profiler runs (`bench.instruments.profiling`).
"""

from __future__ import annotations

import logging

__all__ = ["silence_third_party_noise", "NOISE_LOGGERS"]

# logger name -> message prefixes dropped from it
NOISE_LOGGERS = {"torch.utils.cpp_extension": ("No CUDA runtime is found, using CUDA_HOME",)}


class _DropKnown(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def silence_third_party_noise() -> None:
    """Install the filters (once per process)."""
    for name, prefixes in NOISE_LOGGERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(prefixes))
