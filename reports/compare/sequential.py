"""The duet's sequential rule: look at the sessions at a few fixed counts and stop when it knows.

`ab` runs up to ``--repeats`` sessions per case (default 30) and looks at the session log ratios
after 4, 6, 8, 10, 12, 15, 20, 25 and 30 of them (`looks`). At each look, with n sessions, mean m, standard
error se and t = m / se:

- ``regression``: t above the look's efficacy boundary *and* m above log(1 + threshold);
  ``improvement`` mirrored;
- ``unchanged``: the one-sided (1 - `FUTILITY_LEVEL`) upper t bound of m below log(1 + threshold)
  and the lower one above log(1 - threshold), i.e. both one-sided 95% bounds (the two-sided
  90% t interval) inside the margin: the two one-sided tests of equivalence testing at 5% each
  (Schuirmann, J. Pharmacokinet. Biopharm. 15, 1987; the level and the 90% interval that
  bioequivalence studies use);
- otherwise the next look; after the last, ``noisy``.

Error control (docs/compare.md, "The sequential rule"):

- The efficacy boundaries are O'Brien and Fleming's ("A multiple testing procedure for clinical
  trials", Biometrics 1979): z_k = c * sqrt(N / n_k), with c chosen so that the probability
  that *any* look crosses, under no change, is alpha (two-sided; `obf_constant`). c comes from
  the exact joint law of the looks' z-statistics (partial sums of independent sessions, so
  corr(z_j, z_k) = sqrt(n_j / n_k)), by recursive numerical integration (Armitage, McPherson and
  Rowe, J. R. Stat. Soc. A 1969; Jennison and Turnbull, "Group Sequential Methods", 2000,
  ch. 19). For looks 4, 6, 8, 10, 12, 15, 20, 25, 30 and alpha 0.01: c = 2.6316 (the looks before
  10 spend almost nothing: with looks from 10 alone c = 2.6314), so z must exceed 7.21, 5.88, 5.10,
  4.56, 4.16, 3.72, 3.22, 2.88 and 2.63 (4 million simulated A/A sequences of the looks from 10
  crossed 0.996% of the time; the same code gives Jennison and Turnbull's table 2.3 figures for
  alpha 0.05, tests/test_duet_sequential.py).
  The session spread is estimated, not known, so each z boundary is turned into a t boundary with
  the same nominal tail probability on n_k - 1 degrees of freedom (their section 3.8, the
  "significance level approach"). Stopping for ``unchanged`` can only remove crossings, so it
  never raises the A/A rate (a non-binding futility stop).
- ``unchanged`` at a look needs both one-sided 95% bounds inside the margin. A true change of at
  least the threshold lies outside that bound at one look with probability at most 5%, so over
  the K looks it is stopped as ``unchanged`` with probability at most the sum of the levels (Bonferroni; the
  looks' bounds are strongly correlated, so far less in practice: docs/compare.md): the price in
  power for stopping a clear A/A early, measured for x1.05 by the bootstrap below. The level was
  1% (99% bounds) until earlier on 2026-12-03, then 2.5% (the 95% interval) until that evening; runs
  save theirs (``futility`` in the design) and are re-judged with it.
- What x1.02 and x1.05 do is measured, not derived: the bootstrap over saved sessions
  (studies/duet_error_rates.py, docs/compare.md).

Pure functions on plain numbers; `reports.compare.judgement` and `bench.cli.commands.ab` call them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import optimize, stats

# The looks: 4, then every 2 sessions from 6 to 12 (EARLY_LOOKS), then every LOOK_EVERY from 15.
# With the adjacent estimator's session spread on this VM (sd 0.015-0.045) a quiet case's A/A
# stops at 4 or 6 and a clear regression soon after 10 (the efficacy boundary is t > 15000 at 4,
# 86 at 6, 18 at 8, 9.6 at 10, 6.7 at 12: the looks before 10 are futility looks), so looks there
# save sessions where most cases stop; later looks are sparser because few cases get there.
# Measured by the bootstrap over the real A/A sessions of four whole-preset A/As (docs/compare.md,
# "The look at 4 and the 5% level"): with the look at 4 and the 5% futility level, an A/A of the
# quick preset's ten step cases is estimated at 10.4-13.3 min against 13.9-17.3 with the looks
# from 6 and 2.5%; x1.05 is flagged at least 92.5% of the time in every case of three sets (86.7%
# in one case of sd 0.054, where the looks from 6 gave 91.7%), x1.02 at most 6.7%, an A/A never;
# O'Brien-Fleming's c is 2.6316 either way.
EARLY_LOOKS = (4, 6, 8, 10, 12)
LOOK_EVERY = 5
# Each look's ``unchanged`` stop is a one-sided bound at this level (see the module docstring): 5%
# each side, so ``unchanged`` means the 90% t interval lies within the threshold (TOST at 5%).
FUTILITY_LEVEL = 0.05
RULE = "obf-t"  # saved in the runs' extra_info.duet.sequential: the rule that stopped them


def looks(max_sessions: int, *, early: Sequence[int] = EARLY_LOOKS, every: int = LOOK_EVERY) -> tuple[int, ...]:
    """The session counts at which the duet looks: the ``early`` ones, then every ``every`` from the
    next multiple of it, and always the last; a look closer to the last than 2 sessions (or than
    half the spacing before it) is dropped.

    4 6 8 10 12 15 20 25 30 for the default 30; 4 6 8 10 12 16 for 16; 25 32, not 25 30 32, at the end of 32.
    ``early=(6, 8, 10, 12)`` gives the rule of 2026-12-03's afternoon, ``early=(6, 10)`` its morning's
    (6 10 15 20 25 30), ``early=(10,)`` the one before it.
    """
    if max_sessions < 2:
        raise ValueError(f"a duet needs >= 2 sessions, got {max_sessions}")
    out = [n for n in sorted(set(early)) if 2 <= n < max_sessions]
    start = (out[-1] // every + 1) * every if out else every
    out += list(range(start, max_sessions, every))
    if out:
        gap = out[-1] - out[-2] if len(out) > 1 else every
        if max_sessions - out[-1] < max(2.0, gap / 2):
            out.pop()
    return tuple(out + [max_sessions])


def crossing_probability(z_bounds: Sequence[float], counts: Sequence[int], *, step: float = 0.05) -> float:
    """P(|z_k| > z_bounds[k] at some look k) when nothing changed, for looks after ``counts`` sessions.

    z_k = S_k / sqrt(n_k), S_k a sum of n_k independent standard normals. On the information
    scale t_k = n_k / N, W(t_k) = S_k / sqrt(N) is a Brownian motion; its density is carried from
    look to look on a grid over the continuation region (Armitage, McPherson and Rowe 1969).
    The grid holds the midpoints of equal cells covering each look's continuation region exactly;
    a step of 0.05 gives Jennison and Turnbull's C_B(2, 3, 5; 0.05) = 1.977, 2.004, 2.040 and the
    default design's c = 2.6314 as a step of 0.005 does, 100 times faster.
    """
    t = np.asarray(counts, dtype=float) / float(counts[-1])
    total = 0.0
    grid = dens = None
    for k, tk in enumerate(t):
        b = float(z_bounds[k]) * math.sqrt(tk)
        m = max(2, math.ceil(2 * b / step))
        new = -b + (np.arange(m) + 0.5) * (2 * b / m)  # midpoints of m cells covering [-b, b] exactly
        if grid is None:
            sd = math.sqrt(tk)
            total += 2 * float(stats.norm.sf(b / sd))
            dens = stats.norm.pdf(new, scale=sd)
        else:
            sd = math.sqrt(tk - t[k - 1])
            w = dens * (2 * float(z_bounds[k - 1]) * math.sqrt(t[k - 1]) / grid.size)  # density x cell width
            total += float(np.sum(w * (stats.norm.sf((b - grid) / sd) + stats.norm.cdf((-b - grid) / sd))))
            dens = stats.norm.pdf((new[:, None] - grid[None, :]) / sd).dot(w) / sd
        grid = new
    return total


@lru_cache(maxsize=64)
def obf_constant(counts: tuple[int, ...], alpha: float) -> float:
    """O'Brien-Fleming's c for these looks: P(any |z_k| > c * sqrt(N / n_k)) = alpha, two-sided."""
    if len(counts) == 1:
        return float(stats.norm.isf(alpha / 2))
    n_max = counts[-1]
    def excess(c: float) -> float:
        return crossing_probability([c * math.sqrt(n_max / n) for n in counts], counts) - alpha
    return float(optimize.brentq(excess, 1.5, 5.0, xtol=1e-4))


@lru_cache(maxsize=256)
def t_boundaries(counts: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    """Each look's efficacy boundary on the t scale (same nominal two-sided level as its z boundary)."""
    c = obf_constant(counts, alpha)
    out = []
    for n in counts:
        nominal = 2 * float(stats.norm.sf(c * math.sqrt(counts[-1] / n)))
        out.append(float(stats.t.isf(nominal / 2, n - 1)))
    return tuple(out)


@dataclass(frozen=True)
class Look:
    """The state of a sequential duet after ``n`` sessions."""

    n: int
    verdict: str | None  # regression / improvement / unchanged, "noisy" after the last look, None: go on
    mean: float  # mean session log ratio
    se: float
    t_bound: float  # the efficacy boundary on t at this look
    futility_bound: float  # the one-sided t quantile of the unchanged stop


def decide(log_ratios: Sequence[float], counts: Sequence[int], *, alpha: float, threshold: float,
           futility: float = FUTILITY_LEVEL) -> Look | None:
    """The sequential rule's decision after ``len(log_ratios)`` sessions; None when that is no look."""
    counts = tuple(int(c) for c in counts)
    n = len(log_ratios)
    if n not in counts:
        return None
    k = counts.index(n)
    d = np.asarray(log_ratios, dtype=float)
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    tb = t_boundaries(counts, float(alpha))[k]
    tf = float(stats.t.isf(futility, n - 1))
    up, lo = math.log1p(threshold), math.log1p(-threshold)
    # Sessions that all read the same ratio carry no spread to test against: no efficacy stop on
    # them (a t of 0), only `unchanged` when that ratio itself lies within the threshold. A real duet
    # never gives identical sessions; a bootstrap drawing one saved session 4 times does.
    t = mean / se if se > 0.0 else 0.0
    if t > tb and mean > up:
        v: str | None = "regression"
    elif t < -tb and mean < lo:
        v = "improvement"
    elif mean + tf * se < up and mean - tf * se > lo:
        v = "unchanged"
    else:
        v = "noisy" if k == len(counts) - 1 else None
    return Look(n=n, verdict=v, mean=mean, se=se, t_bound=tb, futility_bound=tf)


def run_rule(log_ratios: Sequence[float], counts: Sequence[int], *, alpha: float, threshold: float,
             futility: float = FUTILITY_LEVEL) -> Look:
    """Apply the rule to sessions in their order: the look that stopped, or the last one reached."""
    last = None
    for n in counts:
        if n > len(log_ratios):
            break
        last = decide(log_ratios[:n], counts, alpha=alpha, threshold=threshold, futility=futility)
        if last is not None and last.verdict is not None:
            return last
    if last is None:
        raise ValueError(f"{len(log_ratios)} sessions reach no look of {list(counts)}")
    return last


def design(max_sessions: int, *, alpha: float) -> dict:
    """What the saved runs record in ``extra_info.duet.sequential``: enough to re-judge them the same way."""
    counts = looks(max_sessions)
    return {"rule": RULE, "looks": list(counts), "alpha": alpha, "futility": FUTILITY_LEVEL,
            "obf_c": round(obf_constant(counts, alpha), 4)}


def saved_futility(plan: dict) -> float:
    """The futility level a saved design used (0.01 for runs saved before the level was recorded)."""
    return float(plan.get("futility", 0.01))


def describe_futility(plan: dict) -> str:
    """A saved design's futility level in words: "95% (the 90% interval)"."""
    f = saved_futility(plan)
    return f"{1 - f:.1%}".replace(".0%", "%") + f" (the {1 - 2 * f:.0%} interval)"
