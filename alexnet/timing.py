"""Timed rounds that are right on a GPU, cold compile time, and median/IQR statistics.

A *round* is one step followed by a device synchronisation: CUDA kernels are queued
asynchronously, so a host clock read before ``torch.cuda.synchronize`` would time the
launch, not the work. The benchmark suite hands `make_round`'s callable to
``benchmark.pedantic`` (pytest-benchmark reads ``time.perf_counter`` around it); every
previous round also ended synchronised, so each timed interval holds exactly one step.

Warm-up and compilation are kept out of the timed rounds: `cold_step_time` times the very
first step (which, for a compiled model, is where torch.compile traces and generates code),
and `warm_up` runs the further untimed steps that absorb lazy init and cuDNN autotuning.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from alexnet.runtime import StepRunner, synchronize

__all__ = [
    "MIN_ROUNDS",
    "NOISY_REL_IQR",
    "Stats",
    "cold_step_time",
    "make_round",
    "summarize",
    "timer_samples",
    "warm_up",
]

# Later statistics (compare, Mann-Whitney) need something to stand on.
MIN_ROUNDS = 10
# IQR/median above this is flagged in a case's warnings instead of trusting the median.
# Our CPU machines spread 2-5% within a run (REFERENCE.md), so 10% means real trouble.
NOISY_REL_IQR = 0.10


def make_round(runner: StepRunner, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One timed round: a step, then a device sync so the clock covers the GPU work."""
    device = runner.cfg.device

    def round_() -> None:
        runner.step(x, y)
        synchronize(device)

    return round_


def cold_step_time(round_: Callable[[], None], *, device: str) -> float:
    """Seconds taken by the first call of ``round_`` (compile + lazy init + first step)."""
    synchronize(device)
    t0 = time.perf_counter()
    round_()  # ends synchronised
    return time.perf_counter() - t0


def warm_up(round_: Callable[[], None], *, rounds: int) -> None:
    """Untimed rounds: cuDNN autotuning, allocator growth, CUDA-graph recording, caches."""
    for _ in range(rounds):
        round_()


@dataclass(frozen=True)
class Stats:
    """Order statistics of raw per-round samples, in seconds."""

    n: int
    median: float
    q1: float
    q3: float
    iqr: float
    mean: float
    min: float
    max: float

    @property
    def rel_iqr(self) -> float:
        return self.iqr / self.median if self.median > 0 else float("inf")

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "rel_iqr": self.rel_iqr}


def summarize(samples: Sequence[float]) -> Stats:
    """Median and quartiles first: the mean hides the outliers a shared machine produces."""
    if len(samples) == 0:
        raise ValueError("no samples to summarise; a case needs at least one timed round")
    a = np.asarray(samples, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return Stats(
        n=int(a.size), median=float(med), q1=float(q1), q3=float(q3), iqr=float(q3 - q1),
        mean=float(a.mean()), min=float(a.min()), max=float(a.max()),
    )


def timer_samples(fn: Callable[[], object], *, min_run_time: float = 0.2, label: str = "step") -> list[float]:
    """Per-call times from ``torch.utils.benchmark.Timer(...).blocked_autorange()``.

    An independent reference for the suite's own timing (tests/test_bench_timing.py). The
    Timer synchronises CUDA itself; each returned value is the mean of one block.
    """
    from torch.utils.benchmark import Timer

    m = Timer(stmt="fn()", globals={"fn": fn}, label=label, num_threads=torch.get_num_threads())
    return list(m.blocked_autorange(min_run_time=min_run_time).times)
