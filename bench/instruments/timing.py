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
from typing import TYPE_CHECKING, Callable

import torch

from runrecord.samples import MIN_ROUNDS, NOISY_REL_IQR, Stats, paced_samples, summarize

if TYPE_CHECKING:
    from alexnet.runtime import StepRunner


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work; a no-op on CPU. Called before any clock is read.

    The instrument's own copy (alexnet.runtime has the subject's): `alexnet-bench ab` loads this
    module beside another ref's `alexnet`, so the timing must not depend on the subject's API.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)

__all__ = [
    "MIN_ROUNDS",
    "NOISY_REL_IQR",
    "PaceKernel",
    "Stats",
    "cold_step_time",
    "make_round",
    "synchronize",
    "timed_rounds",
    "paced_samples",
    "summarize",
    "timer_samples",
    "warm_up",
]

def make_round(runner: "StepRunner", x: torch.Tensor, y: torch.Tensor, *, steps: int = 1) -> Callable[[], None]:
    """One timed round: ``steps`` back-to-back steps, then a device sync so the clock covers the
    GPU work. With more than one, each step after the first is launched while the one before
    runs, as in a training loop (timm's benchmark and `torch.utils.benchmark` time blocks of
    back-to-back iterations for this reason); the caller divides the round by ``steps``."""
    device = runner.cfg.device
    if steps < 1:
        raise ValueError(f"steps per round {steps} is not valid; it must be >= 1")

    def round_() -> None:
        for _ in range(steps):
            runner.step(x, y)
        synchronize(device)

    return round_


def timed_rounds(round_: Callable[[], None], n: int, *, pace: "PaceKernel | None", pace_after: bool = True,
                 rewarm: int = 0, steps_per_round: int = 1) -> list[float]:
    """``n`` timed rounds, each preceded by a pace sample (and one more after the last); each
    sample is the round's time divided by ``steps_per_round`` (seconds per step).

    Each duration is this process's ``perf_counter`` around one ``round_`` (which ends
    synchronised), so whatever happens between requests, in this process or between processes,
    stays out. ``pace_after=False`` leaves the closing pace sample to a later call: a duet
    side's rounds are not adjacent, and its next pace sample is the one before its next round.

    ``rewarm`` untimed calls of ``round_`` run between the pace sample and the timed round. A
    duet side's round follows the *other* side's round, so without them it times the first
    step after another process ran: cold caches and TLB, a sleeping thread pool. With one
    re-warming step *and* glibc's malloc thresholds pinned (`bench.instruments.allocator`) the A/A session
    spread on this VM fell from sd 0.114 to 0.024; either alone did not help (docs/compare.md,
    "Duet"). The timed step is then a steady-state step, as in a loop.
    """
    out: list[float] = []
    for _ in range(n):
        if pace is not None:
            pace()
        for _ in range(rewarm):
            round_()
        t0 = time.perf_counter()
        round_()
        out.append((time.perf_counter() - t0) / steps_per_round)
    if pace is not None and pace_after:
        pace()
    return out


def cold_step_time(round_: Callable[[], None], *, device: str) -> float:
    """Seconds taken by the first call of ``round_`` (compile + lazy init + first step)."""
    synchronize(device)
    t0 = time.perf_counter()
    round_()  # ends synchronised
    return time.perf_counter() - t0


def warm_up(round_: Callable[[], None], *, rounds: int, min_seconds: float = 0.0) -> dict[str, float]:
    """Untimed rounds: cuDNN autotuning, allocator growth, CUDA-graph recording, caches.

    At least ``rounds`` of them, and on until ``min_seconds`` have passed: a GPU's clocks and
    cuDNN's autotuning settle over seconds, not over a count of steps. Returns what was done:
    ``{"rounds": n, "seconds": s}``.
    """
    t0 = time.perf_counter()
    done = 0
    while done < rounds or time.perf_counter() - t0 < min_seconds:
        round_()
        done += 1
    return {"rounds": done, "seconds": time.perf_counter() - t0}


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

    **Which precision the GEMM ran in.** The inputs are fp32, but the case's switches decide the
    arithmetic: on CUDA, ``torch.backends.cuda.matmul.allow_tf32`` (which
    ``set_float32_matmul_precision("high")`` also turns on; torch docs of
    ``set_float32_matmul_precision``: "equivalent to setting allow_tf32 = True") makes cuBLAS
    compute in TF32, so a tf32 case's pace kernel is a TF32 GEMM. On the CPU, the docs say the
    setting "only affects CUDA", but torch >= 2.9 maps it onto oneDNN's
    ``torch.backends.mkldnn.matmul.fp32_precision`` too: on our AVX2 machine (torch 2.14.1)
    ``"medium"`` set it to ``"bf16"`` and made this 512x512 ``torch.mm`` 5600x less exact
    (max error against fp64 relative to the largest entry: 4.6e-7 -> 2.6e-3, bf16's level),
    while ``"high"`` set it to ``"tf32"`` and changed nothing (oneDNN uses TF32 only where the
    CPU has it). So the precision is not assumed: the switches are read at every call, and
    whenever they differ from the last call's, the first `_CHECK_ROWS` rows of the result are
    compared, outside the timed part, with an fp64 product computed once on the CPU. The
    relative error tells the arithmetic apart (measured here on 512 and 4096 squared inputs,
    normal entries): fp32 about 5e-7, TF32 3e-4 (rounded inputs) to 8e-4 (truncated inputs),
    bf16 2.6e-3 (rounded) to 6e-3 (truncated). `record` names it in ``kernel`` and
    ``precision``. The CUDA side of this is untested on GPU.
    """

    # Rows of the result checked against fp64: 8 x n products, computed once on the CPU.
    _CHECK_ROWS = 8
    # Relative error (max |c - ref| / max |ref|) below which the GEMM is fp32, resp. TF32;
    # above the second it is bf16 or coarser. Each boundary lies 1.7x or more from the
    # measured errors on either side (class docstring).
    _FP32_MAX_REL_ERR = 2e-5
    _TF32_MAX_REL_ERR = 1.5e-3

    def __init__(self, device: str | torch.device) -> None:
        self.device = str(device)
        self.n = 4096 if torch.device(device).type == "cuda" else 512
        g = torch.Generator().manual_seed(0)
        a_cpu = torch.randn(self.n, self.n, generator=g)
        b_cpu = torch.randn(self.n, self.n, generator=g)
        self.a = a_cpu.to(device)
        self.b = b_cpu.to(device)
        self.c = torch.empty(self.n, self.n, device=device)
        self.samples: list[float] = []
        # The reference lives on the CPU: no device memory beyond the three buffers.
        self._ref = a_cpu[: self._CHECK_ROWS].double() @ b_cpu.double()
        del a_cpu, b_cpu
        self._switches: tuple[object, ...] | None = None
        self._precision = "fp32"
        self.precisions: list[str] = []  # the precision of each timed sample
        torch.mm(self.a, self.b, out=self.c)  # untimed: first-call costs
        synchronize(self.device)
        self._check_precision()

    def __call__(self) -> None:
        synchronize(self.device)
        t0 = time.perf_counter()
        torch.mm(self.a, self.b, out=self.c)
        synchronize(self.device)
        self.samples.append(time.perf_counter() - t0)
        self._check_precision()  # after the clock: a sync and a small copy, only when switches changed
        self.precisions.append(self._precision)

    @staticmethod
    def switches() -> tuple[object, ...]:
        """The settings that choose the fp32 GEMM's arithmetic, read now."""
        mkldnn_matmul = getattr(torch.backends, "mkldnn", None)
        mkldnn_matmul = getattr(mkldnn_matmul, "matmul", None)
        return (
            torch.get_float32_matmul_precision(),
            bool(torch.backends.cuda.matmul.allow_tf32),
            # torch >= 2.9 (the new per-backend precision API); absent before.
            str(getattr(mkldnn_matmul, "fp32_precision", "none")),
        )

    @classmethod
    def classify(cls, result: torch.Tensor, reference: torch.Tensor) -> str:
        """``fp32``, ``tf32`` or ``bf16``: the arithmetic that produced ``result`` (rows x n)."""
        ref = reference.double()
        rel = float((result.double().cpu() - ref).abs().max() / ref.abs().max())
        if rel < cls._FP32_MAX_REL_ERR:
            return "fp32"
        if rel < cls._TF32_MAX_REL_ERR:
            return "tf32"
        return "bf16"

    def _check_precision(self) -> None:
        now = self.switches()
        if now == self._switches:
            return
        self._switches = now
        # .cpu() of contiguous rows copies them to the host; it waits for the GEMM.
        self._precision = self.classify(self.c[: self._CHECK_ROWS].cpu(), self._ref)

    @property
    def precision(self) -> str:
        """The precision of the timed samples (``mixed: ...`` if the switches changed between them)."""
        seen = list(dict.fromkeys(self.precisions)) or [self._precision]
        return seen[0] if len(seen) == 1 else "mixed: " + ", ".join(seen)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.a, self.b, self.c))

    def record(self) -> dict[str, object]:
        """What a saved case keeps (``extra_info["pace"]``; docs/saved-run-format.md)."""
        return {
            "kernel": f"mm {self.n}x{self.n} {self.precision}",
            "precision": self.precision,
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
