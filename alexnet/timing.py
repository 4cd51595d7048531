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
    "PaceKernel",
    "Stats",
    "cold_step_time",
    "make_round",
    "paced_samples",
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


class PaceKernel:
    """A fixed fp32 GEMM timed between the rounds of a case: the machine's speed at that moment.

    On our shared 2-core VM a case's speed drifts by tens of percent over seconds, between
    runs and inside one run alike; a GEMM timed right before and right after each round
    drifts with it. Dividing each round by the mean of its two neighbouring pace samples
    removes most of that drift: measured here, the sd of 2-3 s block medians' log fell from
    0.065-0.127 raw to 0.018-0.030 paced (docs/compare.md). The bench suite calls this as
    ``benchmark.pedantic``'s untimed ``setup`` hook, so it sits outside the timed rounds, and
    once more after the last round: R rounds give R + 1 pace samples.

    The output buffer is preallocated, so the kernel allocates nothing while rounds run; its
    three buffers (`nbytes`: 3 MiB on a CPU, 192 MiB on a GPU) stay live throughout, and the
    suite subtracts them from the CUDA peak-memory figures. Size: 512 on a CPU (~3 ms here),
    4096 on a GPU (big enough to fill it and not be launch-bound).
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = str(device)
        self.n = 4096 if torch.device(device).type == "cuda" else 512
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(self.n, self.n, generator=g).to(device)
        self.b = torch.randn(self.n, self.n, generator=g).to(device)
        self.c = torch.empty(self.n, self.n, device=device)
        self.samples: list[float] = []
        torch.mm(self.a, self.b, out=self.c)  # untimed: first-call costs
        synchronize(self.device)

    def __call__(self) -> None:
        synchronize(self.device)
        t0 = time.perf_counter()
        torch.mm(self.a, self.b, out=self.c)
        synchronize(self.device)
        self.samples.append(time.perf_counter() - t0)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.a, self.b, self.c))

    def record(self) -> dict[str, object]:
        """What a saved case keeps (``extra_info["pace"]``; docs/saved-run-format.md)."""
        return {
            "kernel": f"mm {self.n}x{self.n} fp32",
            "flops": 2 * self.n**3,
            "samples": list(self.samples),
        }


def paced_samples(step_s: Sequence[float], pace_s: Sequence[float]) -> np.ndarray | None:
    """Each round divided by the mean of the pace samples before and after it (unitless).

    Returns None when the pace samples do not bracket the rounds (R rounds need R + 1).
    """
    step = np.asarray(step_s, dtype=float)
    pace = np.asarray(pace_s, dtype=float)
    if step.size == 0 or pace.size != step.size + 1 or not np.all(pace > 0):
        return None
    return step / ((pace[:-1] + pace[1:]) / 2)


def timer_samples(fn: Callable[[], object], *, min_run_time: float = 0.2, label: str = "step") -> list[float]:
    """Per-call times from ``torch.utils.benchmark.Timer(...).blocked_autorange()``.

    An independent reference for the suite's own timing (tests/test_bench_timing.py). The
    Timer synchronises CUDA itself; each returned value is the mean of one block.
    """
    from torch.utils.benchmark import Timer

    m = Timer(stmt="fn()", globals={"fn": fn}, label=label, num_threads=torch.get_num_threads())
    return list(m.blocked_autorange(min_run_time=min_run_time).times)
