"""The report's headlines: which settings make AlexNet faster, answered only as far as the data resolves.

Per mode (train, inference), two answers:

- **Best settings at the seed's workload**: the fastest *speed settings* (`reports.summary.SPEED_AXES`)
  at the seed's own variant, batch size and resolution (`SEED_WORKLOAD`, the defaults of
  ``alexnet.config.RunConfig``), against the seed's settings (`SEED_SPEED_SETTINGS`) at that same
  workload. A preset that does not hold the seed's workload (``quick`` runs batch 32 at 96x96) is
  answered at the workload whose settings it swept, and the headline names that workload.
- **Fastest overall**: the highest throughput at the same per-image work (variant, resolution,
  device), with what made it so: a bigger batch is a setting too, and is named as one.

A case is never judged against itself: when the fastest case is the seed's own, the headline says
so and prints no ratio.

A ratio is printed only when the data supports it; otherwise the headline says **not resolved**
and why. Two cases of one run ran in two worker processes, so their ratio carries the same
process-to-process drift a single-run `compare` is judged against (`reports.compare`,
docs/compare.md, "The noise model"); it is estimated the same way (`single_run_estimate`, paced
rounds when both cases saved pace samples). Not resolved when:

- either case's raw rounds spread (IQR/median) by more than `MAX_ROUND_SPREAD` (10%): a busy
  machine, where the drift floor does not hold;
- the ratio's 95% interval includes 1;
- with several runs, the runs disagree: one is not resolved, or they point different ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from reports.compare.estimators import DRIFT_SD, PACED_DRIFT_SD, round_spread, single_run_estimate
from reports.compare.judgement import MAX_ROUND_SPREAD
from reports.load import Run
from reports.summary import SEED_SPEED_SETTINGS, SPEED_AXES, is_seed, shape_axes, step_cases
from runrecord.samples import paced_samples

__all__ = ["SEED_WORKLOAD", "Answer", "Headline", "headlines"]

# The seed's workload: the d2l chapter's net at batch 128 on 224x224 inputs. These are the
# defaults of alexnet.config.RunConfig (reports/ may not import alexnet; tests/test_report_headlines.py
# checks the two agree).
SEED_WORKLOAD: dict[str, Any] = {"variant": "d2l", "batch_size": 128, "resolution": "224x224"}
# Axes that change the work done per image: images/s is only comparable when they are equal.
PER_IMAGE_WORK = ("variant", "resolution", "device")


@dataclass
class Answer:
    """One case set against the seed's settings, in one run."""

    run_label: str
    case_id: str
    baseline_case_id: str
    speedup: float            # images/s over the baseline's images/s (> 1: faster)
    low: float                # 95% interval of the speedup
    high: float
    spreads: tuple[float, float]  # raw rounds' IQR/median: case, baseline
    paced: bool
    reason: str | None        # why it is not resolved; None when it is

    @property
    def resolved(self) -> bool:
        return self.reason is None


@dataclass
class Headline:
    """One answer of the page, per mode: the question, the setting, and the evidence across runs."""

    mode: str
    question: str
    workload: str             # the workload the answer is about, in words
    settings: str             # what the answer changes from the seed's, in words
    baseline: str             # what it is set against, in words
    answers: list[Answer] = field(default_factory=list)
    note: str | None = None   # a headline without a ratio (the seed's own case was fastest, ...)
    workload_note: str = ""   # whether the workload is the seed's own, and if not, why this one

    @property
    def resolved(self) -> bool:
        if not self.answers or not all(a.resolved for a in self.answers):
            return False
        return len({a.speedup > 1 for a in self.answers}) == 1

    @property
    def speedup(self) -> float:
        """The geometric mean of the runs' speedups (one run: its own)."""
        return float(math.exp(np.mean([math.log(a.speedup) for a in self.answers]))) if self.answers else math.nan

    @property
    def reason(self) -> str | None:
        """Why the headline is not resolved (None when it is, or when it has no ratio)."""
        if not self.answers:
            return None
        bad = [a for a in self.answers if not a.resolved]
        if bad:
            prefix = (lambda a: f"run {a.run_label}: ") if len(self.answers) > 1 else (lambda a: "")
            return "; ".join(prefix(a) + str(a.reason) for a in bad)
        if not self.resolved:
            return "the runs disagree: " + ", ".join(f"run {a.run_label} {a.speedup:.2f}x" for a in self.answers)
        return None


# --- reading a case's rounds ------------------------------------------------------------------


def _bench_index(runs: Sequence[Run]) -> list[dict]:
    """Every saved case in `reports.load.runs_to_frame`'s row order: a frame row's index finds its case."""
    return [bench for run in runs for bench in run.benchmarks]


def _rounds(bench: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(raw seconds per step, paced rounds or None) of a saved case."""
    raw = np.asarray((bench.get("stats") or {}).get("data") or [], dtype=float)
    pace = ((bench.get("extra_info") or {}).get("pace") or {}).get("samples")
    paced = paced_samples(raw, pace) if isinstance(pace, list) and pace and raw.size else None
    return raw, paced


def _answer(run_label: str, case: pd.Series, base: pd.Series, index: list[dict]) -> Answer | None:
    b_bench, c_bench = index[int(base.name)], index[int(case.name)]
    b_raw, b_paced = _rounds(b_bench)
    c_raw, c_paced = _rounds(c_bench)
    if b_raw.size < 2 or c_raw.size < 2:
        return None
    paced = b_paced is not None and c_paced is not None
    b_s, c_s = (b_paced, c_paced) if paced else (b_raw, c_raw)
    # Per image: a case at another batch size does other work per step.
    b_s, c_s = b_s / float(base["batch_size"]), c_s / float(case["batch_size"])
    est = single_run_estimate([b_s], [c_s], drift_sd=PACED_DRIFT_SD if paced else DRIFT_SD)
    # est is a ratio of times per image (candidate / baseline); a speedup is its inverse.
    speedup, low, high = 1 / est.ratio, 1 / est.ci_high, 1 / est.ci_low
    if not paced:  # the printed figure is images/s over images/s, which is what the table shows
        speedup = float(case["images_per_s"]) / float(base["images_per_s"])
    spreads = (round_spread(c_raw), round_spread(b_raw))
    reason = None
    if max(spreads) > MAX_ROUND_SPREAD:
        which = case["case_id"] if spreads[0] >= spreads[1] else base["case_id"]
        reason = (f"the rounds of {which} spread {max(spreads):.0%} (IQR/median), above the {MAX_ROUND_SPREAD:.0%} "
                  "a ratio can be read at: the machine was busy")
    elif low <= 1 <= high:
        drift = PACED_DRIFT_SD if paced else DRIFT_SD
        reason = (f"its 95% interval {low:.2f}-{high:.2f}x includes 1: two worker processes of the same code "
                  f"drift by sd {drift:.1%} ({'paced' if paced else 'raw'} rounds), so one run resolves about "
                  f"{math.exp(1.96 * drift):.2f}x")
    return Answer(run_label=run_label, case_id=str(case["case_id"]), baseline_case_id=str(base["case_id"]),
                  speedup=float(speedup), low=float(low), high=float(high), spreads=spreads, paced=paced, reason=reason)


# --- choosing the workload and the cases -----------------------------------------------------------


def _key(row: pd.Series, cols: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(row[c]) for c in cols)


def _pixels(resolution: Any) -> float:
    try:
        h, w = (int(v) for v in str(resolution).lower().split("x"))
        return float(h * w)
    except ValueError:
        return math.nan


def _distance_to_seed(row: pd.Series) -> float:
    """How far a workload is from the seed's: another variant first, then log2 of batch and pixels."""
    d = 0.0 if str(row.get("variant")) == SEED_WORKLOAD["variant"] else 100.0
    if "batch_size" in row and not pd.isna(row["batch_size"]):
        d += abs(math.log2(float(row["batch_size"]) / SEED_WORKLOAD["batch_size"]))
    pixels = _pixels(row.get("resolution"))
    seed_pixels = _pixels(SEED_WORKLOAD["resolution"])
    if not math.isnan(pixels):
        d += abs(math.log2(pixels / seed_pixels)) / 2
    return d


def _settings_key(row: pd.Series) -> tuple[str, ...]:
    return tuple(str(row[a]) if a in row.index else "" for a in SPEED_AXES)


def _describe_settings(row: pd.Series) -> str:
    changed = []
    for axis, seed in SEED_SPEED_SETTINGS.items():
        value = row.get(axis)
        if value is None or value == seed or (isinstance(value, float) and math.isnan(value)):
            continue
        changed.append(axis if isinstance(value, (bool, np.bool_)) else f"{axis}={value}")
    return ", ".join(changed) or "the seed's settings"


def _describe_workload(row: pd.Series) -> str:
    parts = [f"{row.get('variant')}", f"batch {int(row['batch_size'])}" if "batch_size" in row else "",
             str(row.get("resolution", "")), str(row.get("device", ""))]
    return " ".join(p for p in parts if p and p != "nan")


def _seed_workload_note(row: pd.Series) -> str:
    if _distance_to_seed(row) == 0:
        return "the seed's own workload"
    return (f"the seed's workload ({SEED_WORKLOAD['variant']}, batch {SEED_WORKLOAD['batch_size']}, "
            f"{SEED_WORKLOAD['resolution']}) was not measured; this is the workload whose settings the run swept")


def _best_by_runs(rows: pd.DataFrame, key_cols: Sequence[str]) -> pd.DataFrame:
    """The rows of the configuration with the highest geometric-mean images/s across runs."""
    keys = rows.apply(lambda r: _key(r, key_cols), axis=1)
    score = np.log(rows["images_per_s"].astype(float)).groupby(keys).mean()
    return rows[keys == score.idxmax()]


def headlines(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> list[Headline]:
    """Per mode: the best settings at the seed's workload, then the fastest case overall (`Headline`)."""
    steps = step_cases(frame)
    out: list[Headline] = []
    if steps.empty or "mode" not in steps:
        return out
    index = _bench_index(runs)
    shape = [a for a in shape_axes(axes) if a in steps and a != "mode"]
    config_cols = [a for a in axes if a in steps and a not in ("height", "width")]
    seeds_all = steps[is_seed(steps)]
    for mode in [m for m in steps["mode"].dropna().unique()]:
        rows = steps[steps["mode"] == mode]
        seeds = seeds_all[seeds_all["mode"] == mode]
        if seeds.empty:
            out.append(Headline(mode=str(mode), question="Which settings make it faster?", workload="—",
                                settings="—", baseline="—",
                                note="no case with the seed's settings (fp32, eager, NCHW, default cuDNN switches) "
                                     "was measured in this mode, so no speedup can be stated"))
            continue
        # The workload: the seed's own if measured with other settings, else the most swept one.
        workloads = []
        for key, group in rows.groupby([rows[c].map(str) for c in shape], sort=False):
            seed_rows = group[is_seed(group)]
            if seed_rows.empty:
                continue
            n_settings = group.apply(_settings_key, axis=1).nunique()
            distance = _distance_to_seed(seed_rows.iloc[0])
            workloads.append(((n_settings < 2, distance > 0, -n_settings, distance), group, seed_rows))
        workloads.sort(key=lambda w: w[0])
        _, group, seed_rows = workloads[0]
        seed0 = seed_rows.iloc[0]
        workload = _describe_workload(seed0)
        seed_text = f"the seed's settings at {workload} ({seed0['case_id']})"
        others = group[~is_seed(group)]
        head = Headline(mode=str(mode), question="Best settings at the seed's workload", workload=workload,
                        settings="—", baseline=seed_text, workload_note=_seed_workload_note(seed0))
        if others.empty:
            head.note = f"only the seed's settings were measured at {workload}: no other setting to set against them"
        else:
            best = _best_by_runs(others, config_cols)
            head.settings = _describe_settings(best.iloc[0])
            head.answers = _answers(best, seed_rows, index)
        out.append(head)

        # The fastest overall, at the same per-image work as the seed's workload.
        same_work = rows
        for axis in PER_IMAGE_WORK:
            if axis in rows:
                same_work = same_work[same_work[axis].map(str) == str(seed0[axis])]
        fastest = _best_by_runs(same_work, config_cols)
        f0 = fastest.iloc[0]
        overall = Headline(mode=str(mode), question="Fastest overall (same per-image work)",
                           workload=_describe_workload(f0), settings=_what_made_it(f0, seed0, shape),
                           baseline=seed_text)
        if _key(f0, config_cols) == _key(seed0, config_cols):
            overall.note = "the seed's own settings at this workload were the fastest measured: nothing to set against them"
        elif head.answers and {a.case_id for a in head.answers} == {str(c) for c in fastest["case_id"]}:
            overall.note = "the same case as the best settings above"
        else:
            overall.answers = _answers(fastest, seed_rows, index)
        out.append(overall)
    return out


def _answers(cases: pd.DataFrame, seed_rows: pd.DataFrame, index: list[dict]) -> list[Answer]:
    answers = []
    for _, case in cases.iterrows():
        base = seed_rows[seed_rows["run_label"] == case["run_label"]]
        if base.empty:
            continue
        answer = _answer(str(case["run_label"]), case, base.iloc[0], index)
        if answer is not None:
            answers.append(answer)
    return answers


def _what_made_it(case: pd.Series, seed: pd.Series, shape: Sequence[str]) -> str:
    parts = []
    for axis in shape:
        if axis in case.index and str(case[axis]) != str(seed[axis]):
            if axis == "batch_size":
                bigger = "bigger" if case[axis] > seed[axis] else "smaller"
                parts.append(f"batch {int(case[axis])} instead of {int(seed[axis])} (a {bigger} batch is a setting too)")
            else:
                parts.append(f"{axis} {case[axis]} instead of {seed[axis]}")
    settings = _describe_settings(case)
    if settings != "the seed's settings":
        parts.append(settings)
    return "; ".join(parts) or "the seed's settings"
