"""Change points in one series of nightly medians (``alexnet-bench history``, docs/history.md).

A series is one case on one machine, one value per commit (the median of its runs' medians).
The detection works on the natural log of those values, so a step is a ratio whatever the
case's speed:

- **Segmentation.** ruptures' PELT with the ``l1`` cost (a change in the median of the log)
  and ``min_size`` 3: a segment needs at least 3 commits, so one odd night never makes a
  segment of its own. l1, not l2: run medians on a shared machine are heavy-tailed (single runs
  here were up to 5x slow even after pacing), and a squared cost lets such an outlier buy
  itself a segment: on flat series resampled from real A/A runs, l2 at the classic BIC
  penalty put false change points into 78% of them, l1 at the default penalty into 0.5%
  (docs/history.md).
  ``jump=1``: ruptures' default (5) would only let a change start at every fifth commit.
- **Penalty from the series' own noise.** ``pen = PENALTY_C * sigma * log(n)``, a BIC-like
  rule in the l1 cost's units (a sum of absolute log deviations), where ``sigma`` is a robust sd
  of the log values: the MAD of successive differences over sqrt(2), which a step barely moves
  (one large difference among many). `PENALTY_C` was chosen by simulation on this machine's
  A/A residuals (docs/history.md).
- **Size and interval.** For each change: the ratio of the medians of the runs in the segments
  after and before it, and a 95% percentile bootstrap interval that resamples the runs of each
  segment (the run is the unit of evidence on these machines, docs/compare.md).
- **Verdict.** ``regression`` when the ratio is at or above 1 + threshold, ``improvement`` at
  or below 1 / (1 + threshold), else ``minor``. A minor change never fails anything on its own.
  A regression fails ``--fail-on-regression`` only when it is the newest change of its series
  and its interval's low end is above 1 + threshold (`fails`).
- **Creep.** Minor steps that add up: the newest segment against the first one (since the last
  accepted change) and against the best one, when the ratio passes 1 + threshold.
"""

from __future__ import annotations

import math
from bisect import insort
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import ruptures as rpt
from ruptures.base import BaseCost
from ruptures.costs import NotEnoughPoints

__all__ = [
    "BOOTSTRAP_REPLICATES",
    "COST_MODEL",
    "RowL1Cost",
    "DEFAULT_THRESHOLD",
    "MIN_SEGMENT",
    "MIN_SIGMA",
    "PENALTY_C",
    "Change",
    "Creep",
    "Detection",
    "bootstrap_ratio",
    "detect",
    "fails",
    "find_creep",
    "noise_sigma",
    "penalty",
    "segment",
    "verdict",
]

# A segment needs at least this many commits: fewer cannot tell a step from a bad night.
MIN_SEGMENT = 3
# PELT's cost: absolute deviations from each segment's median (ruptures' CostL1).
COST_MODEL = "l1"
# pen = PENALTY_C * sigma * log(n), in the l1 cost's units. For Laplace noise of scale b the
# BIC penalty per change is about b * log(n) (sigma ~ 1.4 b); C was chosen on flat series
# resampled from real A/A runs of this VM (docs/history.md, "Choosing the penalty").
PENALTY_C = 4.0
# The noise estimate's floor (log units, i.e. 0.2%): a series of identical medians (a synthetic
# one, or a timer that rounds) would otherwise get a zero penalty and a change at every wobble.
MIN_SIGMA = 0.002
DEFAULT_THRESHOLD = 0.05
CI_LEVEL = 0.95
BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same runs always give the same interval
# 1.4826 * MAD estimates the sd of a normal sample; successive differences have sqrt(2) times
# the sd of the values themselves.
_MAD_TO_SD = 1.4826

VERDICTS = ("regression", "improvement", "minor")


def noise_sigma(log_values: Sequence[float]) -> float:
    """Robust sd of a series' log values from successive differences (floored at `MIN_SIGMA`)."""
    y = np.asarray(log_values, dtype=float)
    if y.size < 3:
        return MIN_SIGMA
    d = np.diff(y)
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(_MAD_TO_SD * mad / math.sqrt(2), MIN_SIGMA)


def penalty(sigma: float, n: int, *, c: float = PENALTY_C) -> float:
    """PELT's penalty per change, in the l1 cost's units (a sum of absolute log deviations)."""
    return c * sigma * math.log(max(n, 2))


class RowL1Cost(BaseCost):
    """ruptures' ``l1`` cost (`ruptures.costs.CostL1`: the sum of absolute deviations from the
    segment's median), the same values computed a row at a time.

    CostL1 calls ``np.median`` once per segment PELT asks about (about 0.2 ms each): 0.8 s for a
    200-commit series, 35 s for a page of 40. Here the first question about a start ``s`` costs one
    pass over the later values, keeping them sorted: the sum of absolute deviations from the
    median of sorted values is the sum of the upper half minus the sum of the lower half.
    """

    model = COST_MODEL

    def __init__(self) -> None:
        self.signal: np.ndarray | None = None
        self.min_size = 2
        self._values: list[float] = []
        self._rows: dict[int, list[float]] = {}

    def fit(self, signal: np.ndarray) -> "RowL1Cost":
        self.signal = signal.reshape(-1, 1) if signal.ndim == 1 else signal
        if self.signal.shape[1] != 1:
            raise ValueError("RowL1Cost takes a single series")
        self._values = [float(v) for v in self.signal[:, 0]]
        self._rows = {}
        return self

    def _row(self, start: int) -> list[float]:
        row = [0.0]
        ordered: list[float] = []
        for k, value in enumerate(self._values[start:], start=1):
            insort(ordered, value)
            half = k // 2
            row.append(math.fsum(ordered[k - half:]) - math.fsum(ordered[:half]))
        return row

    def error(self, start: int, end: int) -> float:
        if end - start < self.min_size:
            raise NotEnoughPoints
        row = self._rows.get(start)
        if row is None:
            row = self._rows[start] = self._row(start)
        return row[end - start]


def segment(log_values: Sequence[float], *, pen: float, min_size: int = MIN_SEGMENT) -> list[int]:
    """Indices where a new segment starts (ruptures' breakpoints without the final ``n``)."""
    y = np.asarray(log_values, dtype=float).reshape(-1, 1)
    if y.shape[0] < 2 * min_size:
        return []
    # jump=1: every commit may start a segment (ruptures' default jump is 5).
    bkps = rpt.Pelt(custom_cost=RowL1Cost(), min_size=min_size, jump=1).fit(y).predict(pen=pen)
    return [int(b) for b in bkps[:-1]]


def bootstrap_ratio(
    before: Sequence[float], after: Sequence[float], *, reps: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float, float]:
    """Ratio median(after) / median(before) of run values, and its percentile bootstrap interval."""
    a = np.asarray(before, dtype=float)
    b = np.asarray(after, dtype=float)
    ratio = float(np.median(b) / np.median(a))
    rng = np.random.default_rng(seed)
    ra = np.median(a[rng.integers(0, a.size, size=(reps, a.size))], axis=1)
    rb = np.median(b[rng.integers(0, b.size, size=(reps, b.size))], axis=1)
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(rb / ra, [tail, 100 - tail])
    return ratio, float(low), float(high)


def verdict(ratio: float, *, threshold: float) -> str:
    if ratio >= 1 + threshold:
        return "regression"
    if ratio <= 1 / (1 + threshold):
        return "improvement"
    return "minor"


@dataclass(frozen=True)
class Change:
    """A change point: the segment starting at point ``index`` against the one before it."""

    index: int  # first point of the new segment (its commit is "the first run after the change")
    before: tuple[int, int]  # [start, end) of the previous segment, in points
    after: tuple[int, int]  # [start, end) of the new segment
    ratio: float  # > 1: slower after the change
    ci_low: float
    ci_high: float
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Creep:
    """The newest segment against an earlier, non-adjacent one (``first`` or ``best``)."""

    reference: str  # "first" or "best" (or "first and best" when they are one segment)
    ref_segment: tuple[int, int]
    newest: tuple[int, int]
    ratio: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Detection:
    """What `detect` found in one series."""

    sigma: float
    pen: float
    starts: list[int]  # every segment's first point, 0 included
    changes: list[Change]

    @property
    def segments(self) -> list[tuple[int, int]]:
        ends = [*self.starts[1:], None]
        return [(s, e) for s, e in zip(self.starts, ends)]


def _runs(run_values: Sequence[Sequence[float]], seg: tuple[int, int]) -> list[float]:
    return [v for point in run_values[seg[0]:seg[1]] for v in point]


def detect(
    run_values: Sequence[Sequence[float]], *, threshold: float = DEFAULT_THRESHOLD, c: float = PENALTY_C,
    min_size: int = MIN_SEGMENT,
) -> Detection:
    """Change points of a series given each point's run values (seconds or paced units, > 0).

    The detection signal is the log of each point's median run value.
    """
    point_values = np.array([float(np.median(v)) for v in run_values], dtype=float)
    if point_values.size and not np.all(point_values > 0):
        raise ValueError("series values must be positive step times")
    y = np.log(point_values)
    sigma = noise_sigma(y)
    pen = penalty(sigma, len(y), c=c)
    starts = [0, *segment(y, pen=pen, min_size=min_size)]
    n = len(y)
    bounds = [(s, e) for s, e in zip(starts, [*starts[1:], n])]
    changes = []
    for prev, new in zip(bounds, bounds[1:]):
        ratio, low, high = bootstrap_ratio(_runs(run_values, prev), _runs(run_values, new))
        changes.append(Change(index=new[0], before=prev, after=new, ratio=ratio, ci_low=low, ci_high=high,
                              verdict=verdict(ratio, threshold=threshold)))
    return Detection(sigma=sigma, pen=pen, starts=starts, changes=changes)


def fails(change: Change, *, threshold: float) -> bool:
    """A regression whose whole interval lies above 1 + threshold (what fails nightly CI)."""
    return change.verdict == "regression" and change.ci_low > 1 + threshold


def find_creep(
    run_values: Sequence[Sequence[float]], detection: Detection, *, threshold: float, since: int = 0
) -> list[Creep]:
    """Slow creep: the newest segment against the first segment starting at or after ``since``
    (the point after the last accepted change) and against the fastest one, when not adjacent
    to the newest (the adjacent pair is the newest change itself) and the ratio passes 1 + threshold."""
    n = len(run_values)
    bounds = [(s, e) for s, e in zip(detection.starts, [*detection.starts[1:], n])]
    bounds = [b for b in bounds if b[0] >= since]
    if len(bounds) < 3:
        return []
    newest = bounds[-1]
    candidates = bounds[:-2]
    medians = [float(np.median(_runs(run_values, b))) for b in candidates]
    refs: dict[tuple[int, int], list[str]] = {}
    refs.setdefault(candidates[0], []).append("first")
    refs.setdefault(candidates[int(np.argmin(medians))], []).append("best")
    out = []
    for seg, names in refs.items():
        ratio, low, high = bootstrap_ratio(_runs(run_values, seg), _runs(run_values, newest))
        if ratio >= 1 + threshold:
            out.append(Creep(reference=" and ".join(names), ref_segment=seg, newest=newest, ratio=ratio,
                             ci_low=low, ci_high=high))
    return out
