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
from typing import Callable, Sequence

import torch

from alexnet.runtime import StepRunner, synchronize
from bench.samples import MIN_ROUNDS, NOISY_REL_IQR, Stats, paced_samples, summarize

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


def timer_samples(fn: Callable[[], object], *, min_run_time: float = 0.2, label: str = "step") -> list[float]:
    """Per-call times from ``torch.utils.benchmark.Timer(...).blocked_autorange()``.

    An independent reference for the suite's own timing (tests/test_bench_timing.py). The
    Timer synchronises CUDA itself; each returned value is the mean of one block.
    """
    from torch.utils.benchmark import Timer

    m = Timer(stmt="fn()", globals={"fn": fn}, label=label, num_threads=torch.get_num_threads())
    return list(m.blocked_autorange(min_run_time=min_run_time).times)
