"""Change points in one series of nightly medians (``alexnet-bench history``, docs/history.md).

A series is one case on one machine, one value per commit (the median of its runs' medians).
The detection works on the natural log of those values, so a step is a ratio whatever the
case's speed:

- **Segmentation: the scan (default).** Binary segmentation (`scan_segment`): a segment is split
  where a two-sided CUSUM scan of clipped scores (`scan_scores`) is significant by a permutation
  test (`scan_test`); where no split is, a short blip inside it may be (`blip_test`). The tests
  share ``ALPHA``, so a flat series gets a false change point in at most 1% of cases, whatever
  its length or the shape of its noise. Chosen over PELT by simulation on real A/A residuals
  (docs/history.md, "Choosing the detector"; studies/history_power.py): it finds a step in the
  newest 3-5 commits, where PELT's penalty almost never lets a segment start.
- **Segmentation: PELT (``detector="pelt"``).** ruptures' PELT with the ``l1`` cost (a change in
  the median of the log) and ``min_size`` 3: a segment needs at least 3 commits, so one odd
  night never makes a segment of its own. l1, not l2: run medians on a shared machine are
  heavy-tailed, and a squared cost lets such an outlier buy itself a segment. ``jump=1``:
  ruptures' default (5) would only let a change start at every fifth commit. ``pen = PENALTY_C *
  sigma * log(n)``, a BIC-like rule in the l1 cost's units, where ``sigma`` is a robust sd of the
  log values: the MAD of successive differences over sqrt(2), which a step barely moves.
- **Size and interval.** For each change: the Hodges-Lehmann shift between the runs of the
  segments after and before it, as a ratio, and the distribution-free 95% interval of the
  Mann-Whitney test (`shift_ratio`; the run is the unit of evidence on these machines,
  docs/compare.md). A bootstrap of medians (`bootstrap_ratio`, kept for reference) is too
  narrow on segments of 3-5 runs.
- **Suspected.** A change whose new segment is the newest and shorter than `SUSPECT_RUNS` points
  (`suspected`): seen in the last few commits only, to be settled with ``alexnet-bench ab``.
- **Verdict.** ``regression`` when the ratio is at or above 1 + threshold, ``improvement`` at
  or below 1 / (1 + threshold), else ``minor``. A minor change never fails anything on its own.
  A regression fails ``--fail-on-regression`` only when it is the newest change of its series
  and its interval's low end is above 1 + threshold (`fails`).
- **Creep.** Minor steps that add up: the newest segment against the first one (since the last
  accepted change) and against the best one, when the ratio passes 1 + threshold.
"""

from __future__ import annotations

import hashlib
import math
from bisect import insort
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import ruptures as rpt
from ruptures.base import BaseCost
from ruptures.costs import NotEnoughPoints

__all__ = [
    "ALPHA",
    "BLIP_LONGEST",
    "BLIP_SHARE",
    "BOOTSTRAP_REPLICATES",
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "PERMUTATIONS",
    "SUSPECT_RUNS",
    "COST_MODEL",
    "RowL1Cost",
    "DEFAULT_THRESHOLD",
    "MIN_SEGMENT",
    "MIN_SIGMA",
    "PENALTY_C",
    "Change",
    "Creep",
    "Detection",
    "blip_test",
    "bootstrap_ratio",
    "detect",
    "fails",
    "find_creep",
    "noise_sigma",
    "penalty",
    "scan_scores",
    "scan_segment",
    "scan_test",
    "resolution",
    "segment",
    "shift_ratio",
    "suspected",
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
# "scan": binary segmentation with a rank scan whose false-alarm rate per series is set by a
# permutation test (the default); "pelt": ruptures' PELT with the penalty above (docs/history.md,
# "Choosing the detector").
DETECTORS = ("scan", "pelt")
DEFAULT_DETECTOR = "scan"
# The scan's false-alarm rate per series: a flat series gets any change point with this probability.
ALPHA = 0.01
# Permutations behind each p-value of the scan.
PERMUTATIONS = 2000
_CHUNK = 250  # permutations drawn at a time (the scan stops early once it cannot be significant)
# Blips: runs of 3 to BLIP_LONGEST commits unlike the commits on both sides; BLIP_SHARE of ALPHA is theirs.
BLIP_LONGEST = 10
BLIP_SHARE = 0.2
# The scan's scores are clipped at this many noise units (a Huber score, `scan_scores`).
SCORE_CLIP = 3.0
PERMUTATION_SEED = 0
# A change whose new segment is the newest one and has fewer points than this is "suspected": seen
# in the last few runs only, to be settled with `ab` (or by more nights).
SUSPECT_RUNS = 6
# Step size, in units of the series' noise estimate (`noise_sigma`), that the scan finds within one
# commit in 90% of 40-run series with this many runs after the step (studies/history_power.py).
RESOLUTION_K = {3: 3.5, 5: 2.8, 8: 2.4}


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


def scan_scores(log_values: Sequence[float]) -> np.ndarray:
    """What the scan adds up: each log value's distance from the series' median in units of their
    spread (1.4826 x MAD, floored at `MIN_SIGMA`), clipped at ±`SCORE_CLIP` (a Huber score), minus
    their mean.

    Clipping keeps one wild night (runs on a shared machine can be several times slow) from
    outweighing a real step; unlike ranks, a step of 3 noise units still scores 3, so a step seen in
    the last 3 runs can be significant. Median and MAD do not depend on the order of the values,
    so the scores of a shuffled series are the shuffled scores: the permutation test is exact."""
    y = np.asarray(log_values, dtype=float)
    centre = np.median(y)
    spread = max(_MAD_TO_SD * float(np.median(np.abs(y - centre))), MIN_SIGMA)
    r = np.clip((y - centre) / spread, -SCORE_CLIP, SCORE_CLIP)
    return r - r.mean()


def _scan_z(c: np.ndarray, min_size: int) -> np.ndarray:
    """Standardised sums of centred scores ``c`` before each split (rows: permutations of one
    series' scores), sign flipped.

    Column j is the split after ``min_size + j`` values; > 0 means the values after the split score
    higher (slower). Under exchangeability each has mean 0 and variance 1 (sampling without
    replacement from the series' own scores)."""
    m = c.shape[-1]
    ks = np.arange(min_size, m - min_size + 1)
    ss = float(np.sum(c.reshape(-1, m)[0] ** 2))  # the same for every permutation
    if ss <= 0:
        return np.zeros(c.shape[:-1] + ks.shape)
    scale = -1 / np.sqrt(ks * (m - ks) / (m * (m - 1)) * ss)
    return np.cumsum(c, axis=-1)[..., ks - 1] * scale


def _blip_z(c: np.ndarray, min_size: int, longest: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised sums of centred scores over every window of ``min_size`` to ``longest`` values
    that leaves ``min_size`` values on each side (rows: permutations): the largest |z| per row,
    and its window's start and length."""
    m = c.shape[-1]
    rows = c.reshape(-1, m)
    ss = float(np.sum(rows[0] ** 2))
    best = np.zeros(rows.shape[0])
    start = np.zeros(rows.shape[0], dtype=int)
    length = np.zeros(rows.shape[0], dtype=int)
    if ss <= 0:
        return best, start, length
    cs = np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(rows, axis=1)], axis=1)
    for n in range(min_size, min(longest, m - 2 * min_size) + 1):
        starts = np.arange(min_size, m - min_size - n + 1)
        z = np.abs(cs[:, starts + n] - cs[:, starts]) / math.sqrt(n * (m - n) / (m * (m - 1)) * ss)
        j = np.argmax(z, axis=1)
        zj = z[np.arange(z.shape[0]), j]
        better = zj > best
        best = np.where(better, zj, best)
        start = np.where(better, starts[j], start)
        length = np.where(better, n, length)
    return best, start, length


def _permutation_p(c: np.ndarray, observed: float, stat, alpha: float | None) -> float:
    """Permutation p-value of ``stat`` (a function of rows of shuffled scores), stopping early once it
    is sure to be above ``alpha``."""
    # Shuffles seeded by the scores themselves: the same series always gets the same answer, and
    # different series get different shuffles (one fixed set for every series is not quite exact).
    digest = hashlib.blake2b(np.ascontiguousarray(c).tobytes(), digest_size=8).digest()
    rng = np.random.default_rng([PERMUTATION_SEED, int.from_bytes(digest, "little")])
    limit = math.inf if alpha is None else alpha * (PERMUTATIONS + 1) - 1  # more exceedances: p > alpha
    exceed = done = 0
    while done < PERMUTATIONS and exceed <= limit:
        n = min(_CHUNK, PERMUTATIONS - done)
        exceed += int(np.count_nonzero(stat(rng.permuted(np.tile(c, (n, 1)), axis=1)) >= observed - 1e-9))
        done += n
    return (1 + exceed) / (PERMUTATIONS + 1)


def scan_test(log_values: Sequence[float], *, min_size: int = MIN_SEGMENT,
              alpha: float | None = None) -> tuple[int, float, float]:
    """The best single split of a series: (split index, |z|, permutation p-value).

    The statistic is the largest standardised sum of `scan_scores` over the splits that leave
    ``min_size`` values on each side (a two-sided CUSUM scan); its null distribution comes from
    `PERMUTATIONS` shuffles of the same scores (fixed seed: the same series, the same answer). A
    permutation test holds its false-alarm rate whatever the shape of the noise, and needs no
    estimate of it to be right. With ``alpha``, the shuffles stop as soon as the p-value is sure to
    be above it (the p-value returned is then a lower bound, still above ``alpha``)."""
    c = scan_scores(log_values)
    z = np.abs(_scan_z(c, min_size))
    j = int(np.argmax(z))
    p = _permutation_p(c, float(z[j]), lambda rows: np.abs(_scan_z(rows, min_size)).max(axis=1), alpha)
    return min_size + j, float(z[j]), p


def blip_test(log_values: Sequence[float], *, min_size: int = MIN_SEGMENT, longest: int = BLIP_LONGEST,
              alpha: float | None = None) -> tuple[int, int, float, float]:
    """The most unusual run of ``min_size`` to ``longest`` consecutive values inside a series (a
    regression fixed a few commits later, which no single split separates): (start, end, |z|,
    permutation p-value), by the same scores and shuffles as `scan_test`."""
    c = scan_scores(log_values)
    z, start, length = _blip_z(c, min_size, longest)
    p = _permutation_p(c, float(z[0]), lambda rows: _blip_z(rows, min_size, longest)[0], alpha)
    return int(start[0]), int(start[0] + length[0]), float(z[0]), p


def _place(y: np.ndarray, k: int, *, min_size: int, reach: int = 2) -> int:
    """Where to put a significant split: within ``reach`` of the scan's own, the one that leaves the
    least l1 cost (absolute deviations from each side's median), when it is lower than the scan's
    by more than one noise unit (`noise_sigma`); else the scan's own. The scan's sums
    are pulled by a large value near the step; medians are not. In simulation this places 1-3% more
    steps within one commit (docs/history.md)."""
    def cost(j: int) -> float:
        left, right = y[:j], y[j:]
        return float(np.abs(left - np.median(left)).sum() + np.abs(right - np.median(right)).sum())

    options = range(max(min_size, k - reach), min(y.size - min_size, k + reach) + 1)
    costs = {j: cost(j) for j in options}
    least = min(costs.values())
    if costs[k] - least <= noise_sigma(y):  # no clear gain (a staircase's cost is flat): the scan's split
        return k
    return min((j for j, v in costs.items() if v <= least + 1e-12), key=lambda j: abs(j - k))


def scan_segment(log_values: Sequence[float], *, alpha: float = ALPHA, min_size: int = MIN_SEGMENT) -> list[int]:
    """Binary segmentation by `scan_test`: split where the scan is significant, then test each side
    the same way; where no split is, look for a blip (`blip_test`: a short run of slow or fast
    commits inside the segment) and cut it out. ``alpha`` is shared between the two tests
    (`BLIP_SHARE` of it to blips). On a flat series only the first two tests can raise a false
    alarm, so ``alpha`` bounds the false-alarm rate per series, whatever its length."""
    y = np.asarray(log_values, dtype=float)
    starts: list[int] = []
    todo = [(0, y.size)]
    while todo:
        a, b = todo.pop()
        if b - a < 2 * min_size:
            continue
        step_alpha = alpha * (1 - BLIP_SHARE)
        k, _, p = scan_test(y[a:b], min_size=min_size, alpha=step_alpha)
        if p <= step_alpha:
            k = _place(y[a:b], k, min_size=min_size)
            starts.append(a + k)
            todo += [(a, a + k), (a + k, b)]
            continue
        if b - a < 3 * min_size:
            continue
        i, j, _, p = blip_test(y[a:b], min_size=min_size, alpha=alpha * BLIP_SHARE)
        if p <= alpha * BLIP_SHARE:
            starts += [a + i, a + j]
            todo += [(a, a + i), (a + j, b)]
    return sorted(starts)


def shift_ratio(before: Sequence[float], after: Sequence[float], *, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """Ratio after / before of run values as the Hodges-Lehmann shift of their logs (the median of
    every pairwise difference), with the distribution-free interval that inverts the Mann-Whitney
    test (Hollander & Wolfe): order statistics of the same pairwise differences.

    Unlike a bootstrap of medians it keeps its coverage on segments of 3-5 runs."""
    a = np.log(np.asarray(before, dtype=float))
    b = np.log(np.asarray(after, dtype=float))
    d = np.sort((b[:, None] - a[None, :]).ravel())
    n1, n2 = a.size, b.size
    z = _normal_quantile(1 - (1 - level) / 2)
    k = int(math.floor(n1 * n2 / 2 - z * math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)))
    k = min(max(k, 1), d.size)  # k-th smallest and k-th largest difference (1-based)
    return float(np.exp(np.median(d))), float(np.exp(d[k - 1])), float(np.exp(d[d.size - k]))


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


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
    detector: str = DEFAULT_DETECTOR

    @property
    def segments(self) -> list[tuple[int, int]]:
        ends = [*self.starts[1:], None]
        return [(s, e) for s, e in zip(self.starts, ends)]


def _runs(run_values: Sequence[Sequence[float]], seg: tuple[int, int]) -> list[float]:
    return [v for point in run_values[seg[0]:seg[1]] for v in point]


def detect(
    run_values: Sequence[Sequence[float]], *, threshold: float = DEFAULT_THRESHOLD, c: float = PENALTY_C,
    min_size: int = MIN_SEGMENT, detector: str = DEFAULT_DETECTOR, alpha: float = ALPHA,
) -> Detection:
    """Change points of a series given each point's run values (seconds or paced units, > 0).

    The detection signal is the log of each point's median run value; ``detector`` is ``"scan"``
    (`scan_segment` at ``alpha``) or ``"pelt"`` (`segment` with `penalty`). Each change's ratio and
    interval come from `shift_ratio` over the runs of the segments on either side.
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; one of {', '.join(DETECTORS)}")
    point_values = np.array([float(np.median(v)) for v in run_values], dtype=float)
    if point_values.size and not np.all(point_values > 0):
        raise ValueError("series values must be positive step times")
    y = np.log(point_values)
    sigma = noise_sigma(y)
    pen = penalty(sigma, len(y), c=c)
    if detector == "scan":
        found = scan_segment(y, alpha=alpha, min_size=min_size)
    else:
        found = segment(y, pen=pen, min_size=min_size)
    starts = [0, *found]
    n = len(y)
    bounds = [(s, e) for s, e in zip(starts, [*starts[1:], n])]
    changes = []
    for prev, new in zip(bounds, bounds[1:]):
        ratio, low, high = shift_ratio(_runs(run_values, prev), _runs(run_values, new))
        changes.append(Change(index=new[0], before=prev, after=new, ratio=ratio, ci_low=low, ci_high=high,
                              verdict=verdict(ratio, threshold=threshold)))
    return Detection(sigma=sigma, pen=pen, starts=starts, changes=changes, detector=detector)


def suspected(change: Change, n_points: int) -> bool:
    """A change seen only in the newest few points (fewer than `SUSPECT_RUNS`): to be settled with `ab`."""
    return change.after[1] == n_points and change.after[1] - change.after[0] < SUSPECT_RUNS


def resolution(sigma: float, *, runs_after: int = 5) -> float:
    """About the smallest step (as a fraction, 0.07 = 7%) the scan finds at the right commit in 90% of
    series when ``runs_after`` runs follow it, for a series whose `noise_sigma` is ``sigma``: the
    factor measured on real A/A residuals (studies/history_power.py, docs/history.md) times sigma."""
    k = RESOLUTION_K.get(runs_after)
    if k is None:
        raise ValueError(f"no measured resolution for {runs_after} runs after a step; one of {sorted(RESOLUTION_K)}")
    return math.expm1(k * sigma)


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
        ratio, low, high = shift_ratio(_runs(run_values, seg), _runs(run_values, newest))
        if ratio >= 1 + threshold:
            out.append(Creep(reference=" and ".join(names), ref_segment=seg, newest=newest, ratio=ratio,
                             ci_low=low, ci_high=high))
    return out
