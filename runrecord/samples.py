"""Sample arithmetic shared by the instruments and the readers of saved runs: no torch here.

`bench.instruments.timing` (which measures) and `reports/` (which reads saved runs, and must start
without importing torch) both use these: the median/IQR summary of raw per-round samples and
the pace normalisation of rounds by the pace GEMM timed around them (`bench.instruments.timing.PaceKernel`).
The writers that save runs without pytest-benchmark's fixture take a case's ``stats`` from
`benchmark_stats`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["MIN_ROUNDS", "NOISY_REL_IQR", "Stats", "benchmark_stats", "paced_samples", "summarize"]

# Later statistics (compare, Mann-Whitney) need something to stand on.
MIN_ROUNDS = 10
# IQR/median above this is flagged in a case's warnings instead of trusting the median.
# Rounds of one case on our 2-core CPU spread 2-15% (docs/measurement-notes.md, "Noise on the
# 2-core CPU machine"): 10% flags the noisy end of that range.
NOISY_REL_IQR = 0.10


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


def benchmark_stats(samples: Sequence[float]) -> dict[str, Any]:
    """A saved case's ``stats``: what pytest-benchmark writes for these rounds, ``data`` included.

    Computed by pytest-benchmark's own `pytest_benchmark.stats.Stats` (its quartiles are not
    `summarize`'s interpolated percentiles), so a run saved without pytest-benchmark's fixture
    (`alexnet-bench ddp`, the duet) has the same ``stats`` the suite's replayed rounds get.
    ``iterations`` is 1: every sample is one round of one step.
    """
    from pytest_benchmark.stats import Stats as PytestBenchmarkStats

    data = [float(x) for x in samples]
    if not data:
        raise ValueError("no samples to summarise; a case needs at least one timed round")
    s = PytestBenchmarkStats()
    for x in data:
        s.update(x)
    return {**s.as_dict(), "data": data, "iterations": 1}


def paced_samples(step_s: Sequence[float], pace_s: Sequence[float]) -> np.ndarray | None:
    """Each round divided by the mean of the pace samples before and after it (unitless).

    Returns None when the pace samples do not bracket the rounds (R rounds need R + 1).
    """
    step = np.asarray(step_s, dtype=float)
    pace = np.asarray(pace_s, dtype=float)
    if step.size == 0 or pace.size != step.size + 1 or not np.all(pace > 0):
        return None
    return step / ((pace[:-1] + pace[1:]) / 2)
