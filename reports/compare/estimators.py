"""The estimators: a step time's ratio candidate/baseline, with its interval and p-value.

Plain arrays in, an `Estimate` out; nothing here reads a saved run or decides a verdict
(`reports.compare.judgement` does). One estimator per noise model (`reports.compare`'s
docstring says when each applies), the duet session estimators, and the run-to-run drift
floors a single-run comparison is judged against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from runrecord.samples import paced_samples

# Run-to-run drift of one case's median, as the standard deviation of the natural log of the
# ratio of two single runs of the same code: the floor a single-run comparison is judged
# against. Measured on the project's 2-core CPU VM with nothing else running (2026-11-25):
# 12 interleaved A/A runs of one quick case (inference, batch 32, 96x96) gave 6 pair log
# ratios with sd 0.21 (run medians 75-175 ms), and in CI a single A/A pair of tiny runs
# differed by 1.24x. Under shared load it was 0.20-0.62 (docs/compare.md, "Earlier figures: raw
# times under heavy shared load"). A quieter machine's figure (adjacent runs within 9%, sd
# ~0.045: `QUIET_DRIFT_SD`) was never reached on this VM, so the default is the measured 0.2; on
# a steadier machine pass --drift-sd (e.g. 0.045) to judge single runs finer.
DRIFT_SD = 0.2
# The same drift for pace-normalised rounds (each round divided by the pace GEMM timed around
# it, ``extra_info.pace``): 60 interleaved A/A pairs through `ab` on the same VM (2026-11-26,
# cases train and inference, d2l b32 96x96) gave pair log-ratio sd 0.095 and 0.092 paced,
# against 0.144 and 0.230 raw (docs/compare.md, "Earlier figures: the process-level flow").
PACED_DRIFT_SD = 0.095
# A quiet machine's drift (adjacent runs within 9%): the figure given when this comparison was
# first specified, not measured on this project's VM (docs/compare.md, "The noise model"); for
# machines that drift that little (--drift-sd 0.045).
QUIET_DRIFT_SD = 0.045

# Peak memory's noise floor: the largest |log ratio| of one case's peak memory between two runs
# of identical code (docs/compare.md, "Peak memory: its noise floor"). A CPU worker's peak RSS
# plausibly depends on where glibc's malloc thresholds settled in that process (the per-process
# effect the duet pins away, docs/compare.md, "What made a session tight"; not verified for
# memory), and most A/A pairs agree within
# 2% and a few jump: 27 pairs measured on the 2-core VM (2026-12-03: 6 tiny runs, 2 quick runs,
# adjacent runs' cases) all lay within 0.989-1.017 (log-ratio sd 0.006), while the issue "A first
# run that can be trusted" reported two quick A/A pairs at 0.846 and 0.864. A normal floor fitted
# to all 29 (sd 0.041) would still call 0.846 an improvement (z = 4.0), so the floor is the
# largest A/A difference seen, rounded outward (0.846 is 0.8455-0.8465): |log 0.8455| = 0.168
# (x/÷ 1.18). Measured only for CPU memory
# (`memory_kind` cpu_*); no GPU has run the suite, so CUDA memory has no floor yet.
MEMORY_FLOOR = 0.168
MEMORY_FLOOR_KINDS = ("cpu_peak_rss_worker", "cpu_peak_rss")

# Duet sessions (``ab``): how one session's two sides become one log ratio. "raw": medians of
# the raw rounds; "paced": medians of the pace-normalised rounds; "adjacent": the median of the
# log ratios of adjacent rounds (A B B A ...: the k-th head round against the k-th base round,
# which ran right next to it). Chosen per run by `ab` and saved in ``extra_info.duet``.
DUET_ESTIMATORS = ("raw", "paced", "adjacent")

CI_LEVEL = 0.95
BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same runs always give the same interval


@dataclass(frozen=True)
class Estimate:
    """Ratio candidate/baseline of a case's step time (> 1 means slower), with its evidence."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str


# --- the three noise models, on plain arrays (seconds per step) ------------------------------


def paired_estimate(base_medians: Sequence[float], cand_medians: Sequence[float]) -> Estimate:
    """Pairs (base[i], cand[i]) ran next to each other; the run is the unit."""
    b = np.log(np.asarray(base_medians, dtype=float))
    c = np.log(np.asarray(cand_medians, dtype=float))
    if b.shape != c.shape or b.size < 2:
        raise ValueError(f"paired comparison needs >= 2 pairs of runs, got {b.size} and {c.size} runs")
    d = c - b
    mean = float(d.mean())
    n = d.size
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # identical pairs: no spread to test against
        p = 1.0 if mean == 0.0 else 0.0
        return Estimate(math.exp(mean), math.exp(mean), math.exp(mean), p, f"paired t on {n} run pairs")
    se = sd / math.sqrt(n)
    p = float(stats.ttest_1samp(d, 0.0).pvalue)
    half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, n - 1)) * se
    return Estimate(math.exp(mean), math.exp(mean - half), math.exp(mean + half), p, f"paired t on {n} run pairs")


def _bootstrap_side(samples: Sequence[np.ndarray], rng: np.random.Generator, reps: int) -> np.ndarray:
    """Hierarchical bootstrap of a side's median of run medians: runs, then rounds in each run."""
    per_run = np.empty((len(samples), reps))
    for i, s in enumerate(samples):
        idx = rng.integers(0, s.size, size=(reps, s.size))
        per_run[i] = np.median(s[idx], axis=1)
    if len(samples) == 1:
        return per_run[0]
    pick = rng.integers(0, len(samples), size=(reps, len(samples)))
    return np.median(per_run[pick, np.arange(reps)[:, None]], axis=1)


def runs_estimate(base: Sequence[np.ndarray], cand: Sequence[np.ndarray]) -> Estimate:
    """Several unpaired runs per side: Mann-Whitney U on run medians, bootstrap interval."""
    if len(base) < 2 or len(cand) < 2:
        raise ValueError("the runs model needs >= 2 runs on each side")
    bm = np.array([np.median(s) for s in base])
    cm = np.array([np.median(s) for s in cand])
    p = float(stats.mannwhitneyu(cm, bm, alternative="two-sided").pvalue)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    boot = _bootstrap_side(cand, rng, BOOTSTRAP_REPLICATES) / _bootstrap_side(base, rng, BOOTSTRAP_REPLICATES)
    lo, hi = np.quantile(boot, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    ratio = float(np.median(cm) / np.median(bm))
    return Estimate(ratio, float(lo), float(hi), p, f"Mann-Whitney on run medians ({len(base)} vs {len(cand)} runs)")


def round_spread(samples: np.ndarray) -> float:
    """IQR/median of one run's rounds."""
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float((q3 - q1) / med)


def single_run_estimate(
    base: Sequence[np.ndarray], cand: Sequence[np.ndarray], *, drift_sd: float = DRIFT_SD
) -> Estimate:
    """A side with one run: rounds give the median's precision, `drift_sd` the run-to-run part."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    lb = np.log(_bootstrap_side(base, rng, BOOTSTRAP_REPLICATES))
    lc = np.log(_bootstrap_side(cand, rng, BOOTSTRAP_REPLICATES))
    se_within = float(np.std(lc - lb, ddof=1))
    bm = float(np.median([np.median(s) for s in base]))
    cm = float(np.median([np.median(s) for s in cand]))
    log_ratio = math.log(cm / bm)
    sd = math.hypot(drift_sd, se_within)
    if sd == 0.0:
        p = 1.0 if log_ratio == 0.0 else 0.0
    else:
        p = float(2 * stats.norm.sf(abs(log_ratio) / sd))
    half = float(stats.norm.ppf(0.5 + CI_LEVEL / 2)) * sd
    method = f"single run + drift sd {drift_sd:.1%}"
    return Estimate(math.exp(log_ratio), math.exp(log_ratio - half), math.exp(log_ratio + half), p, method)


def duet_session_log_ratio(base: Sequence[float], head: Sequence[float], *, estimator: str,
                           base_pace: Sequence[float] | None = None, head_pace: Sequence[float] | None = None) -> float:
    """One duet session's log(head / base) by ``estimator`` (`DUET_ESTIMATORS`)."""
    b = np.asarray(base, dtype=float)
    h = np.asarray(head, dtype=float)
    if estimator == "raw":
        return float(np.log(np.median(h)) - np.log(np.median(b)))
    if estimator == "paced":
        pb = paced_samples(b, base_pace or [])
        ph = paced_samples(h, head_pace or [])
        if pb is None or ph is None:
            raise ValueError("the paced duet estimator needs R + 1 pace samples for R rounds on both sides")
        return float(np.log(np.median(ph)) - np.log(np.median(pb)))
    if estimator == "adjacent":
        if b.size != h.size or b.size == 0:
            raise ValueError(f"the adjacent duet estimator needs as many base as head rounds, got {b.size} and {h.size}")
        return float(np.median(np.log(h) - np.log(b)))
    raise ValueError(f"duet estimator {estimator!r} is not valid; choose from {', '.join(DUET_ESTIMATORS)}")


def duet_estimate(session_log_ratios: Sequence[float], *, estimator: str) -> Estimate:
    """Sessions are the unit: a one-sample t-test on their log ratios, and its 95% t interval."""
    d = np.asarray(session_log_ratios, dtype=float)
    if d.size < 2:
        raise ValueError(f"a duet comparison needs >= 2 sessions, got {d.size}")
    est = paired_estimate(np.ones_like(d), np.exp(d))
    return Estimate(est.ratio, est.ci_low, est.ci_high, est.p_value,
                    f"duet: {estimator} estimator, t on {d.size} sessions")
