"""The judgement: thresholds, alpha and gates, and one verdict per case (`compare_runs`).

The estimates come from `reports.compare.estimators`, the runs' fields from
`reports.compare.cases`; `Comparison` renders itself through `reports.compare.render`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from reports.compare import render
from reports.compare.cases import (
    _calibration_gflops,
    _case_label,
    _cases,
    _duet,
    _env_value,
    _label,
    _pace,
    _paced,
    _peak_memory,
    _samples,
)
from reports.compare.estimators import (
    DRIFT_SD,
    MEMORY_FLOOR,
    MEMORY_FLOOR_KINDS,
    PACED_DRIFT_SD,
    Estimate,
    duet_estimate,
    duet_session_log_ratio,
    paired_estimate,
    round_spread,
    runs_estimate,
    single_run_estimate,
)
from reports.compare.sequential import describe_futility, run_rule, saved_futility
from reports.load import Run

# That drift floor holds only for a quiet machine. A run whose rounds spread by more than this
# (IQR/median; bench warns at the same 10%) ran on a busy machine, where runs drift by 30% and
# more: a single-run comparison then gives no regression/improvement verdict, only `noisy`.
MAX_ROUND_SPREAD = 0.10

# The calibration GEMM (timed in every run) as a gate for single-run verdicts: if the two runs'
# GEMM speeds differ by more than this (|log ratio|, ~16%), the machine changed state between
# them (on our shared 2-core machine, step times jump ~4x when a co-tenant takes a core), and
# the pair gets no verdict but `noisy`. Measured under shared load (docs/compare.md):
# with the spread gate it removed every single-run A/A false alarm in 552 pairs of real runs
# at 2 threads (the spread gate alone left 0.7% and 5.8%); at 1 thread 3 of 66 remained.
MAX_CALIBRATION_SHIFT = 0.15

# Environment fields whose difference makes timings incomparable (saved-run-format.md).
ENV_KEYS = ("gpu_name", "gpu_driver", "torch_version", "cuda_version", "cudnn_version", "cpu_model")
# The names `--allow-env-diff` takes, and the field each stands for.
ENV_FIELDS = {"gpu": "gpu_name", "driver": "gpu_driver", "torch": "torch_version", "cuda": "cuda_version",
              "cudnn": "cudnn_version", "cpu": "cpu_model"}
# The duet's default threshold, from the measured error rates (docs/compare.md, "Duet"):
# between the x1.02 that must pass (at most 1 in 10 flagged) and the x1.05 that must be caught
# (at least 9 in 10), where the session-to-session spread puts the two tails.
DUET_THRESHOLD = 0.035

DEFAULT_THRESHOLD = 0.05  # process-level and single-run comparisons

VERDICTS = ("regression", "improvement", "unchanged", "noisy", "only in baseline", "only in candidate")


def verdict(est: Estimate, *, alpha: float, threshold: float) -> str:
    """regression / improvement need p < alpha *and* an effect beyond the threshold.

    ``unchanged`` means the 95% interval lies within +-threshold; ``noisy`` means the data
    cannot rule out a change of that size either way.
    """
    if est.p_value < alpha and est.ratio > 1 + threshold:
        return "regression"
    if est.p_value < alpha and est.ratio < 1 - threshold:
        return "improvement"
    if est.ci_low >= 1 - threshold and est.ci_high <= 1 + threshold:
        return "unchanged"
    return "noisy"


def memory_verdict(ratio: float, *, threshold: float, floor: float) -> str:
    """regression / improvement need a change beyond the threshold *and* beyond the noise floor
    (|log ratio| > ``floor``); ``unchanged`` within the threshold; ``noisy`` in between."""
    beyond_floor = abs(math.log(ratio)) > floor
    if beyond_floor and ratio > 1 + threshold:
        return "regression"
    if beyond_floor and ratio < 1 - threshold:
        return "improvement"
    if 1 - threshold <= ratio <= 1 + threshold:
        return "unchanged"
    return "noisy"


def env_differences(baseline: Sequence[Run], candidate: Sequence[Run]) -> list[str]:
    """One line per `ENV_KEYS` field whose values are not one and the same across all runs."""
    lines = []
    for key in ENV_KEYS:
        b = sorted({str(_env_value(r, key)) for r in baseline})
        c = sorted({str(_env_value(r, key)) for r in candidate})
        if b != c or len(b) > 1:
            lines.append(f"{key}: baseline {' / '.join(b)}, candidate {' / '.join(c)}")
    return lines


# --- the comparison ----------------------------------------------------------------------------


@dataclass
class Comparison:
    """The result: one row per case in `table`, environment differences listed first."""

    table: pd.DataFrame
    env_differences: list[str]
    intended_differences: list[str]
    notes: list[str]
    settings: dict[str, Any]
    baseline_runs: list[str]
    candidate_runs: list[str]

    @property
    def has_regression(self) -> bool:
        return bool(len(self.table)) and bool(
            ((self.table["verdict"] == "regression") | (self.table["memory_verdict"] == "regression")).any()
        )

    def headline(self) -> str:
        counts = self.table["verdict"].value_counts()
        parts = [f"{counts[v]} {v}" for v in VERDICTS if v in counts]
        mem = int((self.table["memory_verdict"] == "regression").sum())
        if mem:
            parts.append(f"{mem} memory regression")
        word = "REGRESSION" if self.has_regression else "no regression"
        return f"{word}: " + ", ".join(parts)

    def to_text(self) -> str:
        """The terminal table."""
        return render.to_text(self)

    def to_markdown(self) -> str:
        return render.to_markdown(self)

    def to_dict(self) -> dict:
        return render.to_dict(self)

    def to_json(self) -> str:
        return render.to_json(self)


def compare_runs(
    baseline: Sequence[Run],
    candidate: Sequence[Run],
    *,
    alpha: float = 0.01,
    threshold: float | None = None,
    memory_threshold: float = 0.10,
    allow_env_mismatch: bool = False,
    allow_env_diff: Sequence[str] = (),
    paired: bool = False,
    drift_sd: float | None = None,
    pace: bool = True,
) -> Comparison:
    """Compare two sides of one or more runs each. See `reports.compare`'s docstring for the models.

    ``paired=True`` pairs baseline[i] with candidate[i] (runs interleaved by ``ab``, or the two
    sides of one duet session). ``threshold`` None means `DUET_THRESHOLD` for duet sessions and
    5% otherwise. ``allow_env_diff`` names environment fields (`ENV_FIELDS` keys: torch, cuda,
    cudnn, ...) that may differ: the differences head the output, and any other refuses.
    Raises `RunLoadError` (a ValueError) for runs without raw samples and ValueError for no
    cases in common, an environment mismatch or bad settings.
    """
    if not baseline or not candidate:
        raise ValueError("each side needs at least one run")
    if drift_sd is not None and not drift_sd >= 0:
        raise ValueError(f"drift sd {drift_sd!r} is not valid; it must be >= 0, e.g. {DRIFT_SD}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha!r} is not valid; it must be in (0, 1)")
    for name, t in (("threshold", threshold), ("memory threshold", memory_threshold)):
        if t is not None and not 0 <= t < 1:
            raise ValueError(f"{name} {t!r} is not valid; it must be in [0, 1), e.g. 0.05 for 5%")
    if paired and len(baseline) != len(candidate):
        raise ValueError(f"paired comparison needs as many baseline runs as candidate runs, got {len(baseline)} and {len(candidate)}")

    bad = sorted(set(allow_env_diff) - set(ENV_FIELDS))
    if bad:
        raise ValueError(f"--allow-env-diff {','.join(bad)} is not valid; choose from {', '.join(ENV_FIELDS)}")
    allowed_keys = {ENV_FIELDS[name] for name in allow_env_diff}
    diffs = env_differences(baseline, candidate)
    intended = [d for d in diffs if d.split(":", 1)[0] in allowed_keys]
    refused = [d for d in diffs if d.split(":", 1)[0] not in allowed_keys]
    if refused and not allow_env_mismatch:
        raise ValueError("environments differ: " + "; ".join(refused) + " (pass --allow-env-mismatch to compare anyway"
                         + (", or --allow-env-diff FIELD,... for intended differences)" if not allow_env_diff else ")"))

    base_cases = [_cases(r) for r in baseline]
    cand_cases = [_cases(r) for r in candidate]
    base_keys = {k for c in base_cases for k in c}
    cand_keys = {k for c in cand_cases for k in c}
    common = base_keys & cand_keys
    if not common:
        raise ValueError(
            f"no cases in common between baseline ({len(base_keys)} cases) and candidate ({len(cand_keys)} cases); "
            "cases match by their config"
        )

    # A sample is a round's time over its steps_per_round (schema 3; absent: 1). Blocks of k
    # back-to-back steps and single steps from an idle queue are not the same quantity on a GPU.
    mixed_k = []
    for key in sorted(common, key=lambda k: _case_label(_first(k, base_cases, cand_cases))):
        ks = {int((c[key].get("extra_info") or {}).get("steps_per_round") or 1) for c in [*base_cases, *cand_cases]
              if key in c}
        if len(ks) > 1:
            mixed_k.append(f"{_case_label(_first(key, base_cases, cand_cases))} ({', '.join(map(str, sorted(ks)))})")
    if mixed_k:
        raise ValueError(f"steps per round differ between the runs, so their per-step times are not comparable: "
                         f"{'; '.join(mixed_k[:3])}{' ...' if len(mixed_k) > 3 else ''} "
                         "(run both with the same --steps-per-round)")

    notes: list[str] = []
    speed_shift = False
    shift_note = ""
    single = not paired and (len(baseline) < 2 or len(candidate) < 2)
    if single:
        gb = [_calibration_gflops(r) for r in baseline]
        gc = [_calibration_gflops(r) for r in candidate]
        if all(gb) and all(gc):
            shift = float(np.median(gc) / np.median(gb))
            speed_shift = abs(math.log(shift)) > MAX_CALIBRATION_SHIFT
            shift_note = (
                f"the calibration GEMM ran at {shift:.2f}x the baseline's speed in the candidate run: the machine "
                "changed state between the runs, so cases without pace samples cannot be judged (verdict noisy)"
            )
    elif not paired:
        n = min(len(baseline), len(candidate))
        # Exact two-sided Mann-Whitney: the most extreme of C(m+n, n) orderings, both tails.
        p_min = 2 / math.comb(len(baseline) + len(candidate), n)
        if p_min >= alpha:
            notes.append(
                f"with {len(baseline)} vs {len(candidate)} runs the smallest possible Mann-Whitney p is {p_min:.3g} "
                f">= alpha {alpha}: no case can be called a regression; use more runs (6 per side reach p = 0.0022)"
            )

    rows = []
    busy: list[str] = []
    n_paced = n_raw = n_duet = n_sequential = 0
    mixed_memory: list[str] = []
    floored: list[str] = []
    unfloored: list[str] = []
    shifted_raw = False
    cold_compiles: list[str] = []
    futility_levels: set[str] = set()
    order = sorted(base_keys | cand_keys, key=lambda k: _case_label(_first(k, base_cases, cand_cases)))
    for key in order:
        bench0 = _first(key, base_cases, cand_cases)
        row: dict[str, Any] = {"case": _case_label(bench0), "name": bench0.get("name")}
        b_runs = [(i, c[key]) for i, c in enumerate(base_cases) if key in c]
        c_runs = [(i, c[key]) for i, c in enumerate(cand_cases) if key in c]
        row["baseline_runs"], row["candidate_runs"] = len(b_runs), len(c_runs)
        b_raw = {i: _samples(baseline[i], b) for i, b in b_runs}
        c_raw = {i: _samples(candidate[i], b) for i, b in c_runs}
        row["baseline_median_s"] = float(np.median([np.median(s) for s in b_raw.values()])) if b_raw else math.nan
        row["candidate_median_s"] = float(np.median([np.median(s) for s in c_raw.values()])) if c_raw else math.nan
        bmem = [m for _, b in b_runs if (m := _peak_memory(b)) is not None]
        cmem = [m for _, b in c_runs if (m := _peak_memory(b)) is not None]
        row["baseline_memory_bytes"] = float(np.median(bmem)) if bmem else math.nan
        row["candidate_memory_bytes"] = float(np.median(cmem)) if cmem else math.nan
        if not b_runs or not c_runs:
            row.update(ratio=math.nan, ci_low=math.nan, ci_high=math.nan, p_value=math.nan, method="", paced=False)
            row["verdict"] = "only in baseline" if b_runs else "only in candidate"
            row.update(memory_ratio=math.nan, memory_verdict="n/a")
            rows.append(row)
            continue
        # Judge pace-normalised rounds when every run of the case has them (runs saved
        # before pace samples existed, or --no-pace, fall back to the raw times).
        b_pace = {i: _paced(baseline[i], b) for i, b in b_runs} if pace else {}
        c_pace = {i: _paced(candidate[i], b) for i, b in c_runs} if pace else {}
        use_pace = pace and all(v is not None for v in [*b_pace.values(), *c_pace.values()])
        b_by_run, c_by_run = (b_pace, c_pace) if use_pace else (b_raw, c_raw)
        b_samples, c_samples = list(b_by_run.values()), list(c_by_run.values())
        duet_infos = [_duet(b) for _, b in b_runs] + [_duet(b) for _, b in c_runs]
        sequential_verdict: str | None = None
        is_duet = paired and all(duet_infos)
        n_duet += is_duet
        n_paced += use_pace and not is_duet
        n_raw += not use_pace and not is_duet
        if is_duet:
            pairs = [i for i, _ in b_runs if key in cand_cases[i]]
            estimators = {d["estimator"] for d in duet_infos}
            if len(estimators) != 1:
                raise ValueError(f"case {row['case']!r}: duet runs saved with different estimators {sorted(estimators)}")
            estimator = estimators.pop()
            _refuse_mixed_sides(row["case"], [(_duet(base_cases[i][key]), _duet(cand_cases[i][key])) for i in pairs])
            ratios = [duet_session_log_ratio(_samples(baseline[i], base_cases[i][key]),
                                             _samples(candidate[i], cand_cases[i][key]), estimator=estimator,
                                             base_pace=_pace(base_cases[i][key]), head_pace=_pace(cand_cases[i][key]))
                      for i in pairs]
            # A compiled case's cold compile, from the session that ran with empty caches (each side in a
            # fresh worker): one measurement per side, shown beside the verdict and never judged.
            if str(((bench0.get("extra_info") or {}).get("config") or {}).get("compile", "off")) != "off":
                for i in pairs:
                    b, c = base_cases[i][key], cand_cases[i][key]
                    if _duet(b).get("compile_cache") == _duet(c).get("compile_cache") == "fresh":
                        cold_b, cold_c = b["extra_info"].get("cold_step_s"), c["extra_info"].get("cold_step_s")
                        if cold_b is not None and cold_c is not None:
                            row["baseline_cold_compile_s"], row["candidate_cold_compile_s"] = cold_b, cold_c
                            cold_compiles.append(f"{row['case']} base {cold_b:.1f} s, head {cold_c:.1f} s "
                                                 f"(x{cold_c / cold_b:.2f})")
                        break
            seq_design = _sequential_design(row["case"], duet_infos)
            if seq_design is not None:
                row_threshold = threshold if threshold is not None else DUET_THRESHOLD
                n_sequential += 1
                plan = "/".join(map(str, seq_design["looks"]))
                if len(ratios) < seq_design["looks"][0]:  # cut short before the first look: no verdict
                    where, sequential_verdict = f"cut short before the first look of {plan}", "noisy"
                else:
                    # The futility level the runs saved (docs/compare.md, "The sequential rule").
                    futility_levels.add(describe_futility(seq_design))
                    look = run_rule(ratios, seq_design["looks"], alpha=alpha, threshold=row_threshold,
                                    futility=saved_futility(seq_design))
                    ratios = ratios[: look.n]
                    where, sequential_verdict = f"stopped at look {look.n} of {plan}", look.verdict or "noisy"
            est = duet_estimate(ratios, estimator=estimator)
            if seq_design is not None:
                est = Estimate(est.ratio, est.ci_low, est.ci_high, est.p_value, f"{est.method}, sequential: {where}")
            use_pace = estimator == "paced"
        elif paired:
            pairs = [i for i, _ in b_runs if key in cand_cases[i]]
            if len(pairs) < 2:
                raise ValueError(f"case {row['case']!r} is in fewer than 2 run pairs; a paired comparison needs >= 2")
            est = paired_estimate(
                [np.median(b_by_run[i]) for i in pairs],
                [np.median(c_by_run[i]) for i in pairs],
            )
        elif len(b_samples) >= 2 and len(c_samples) >= 2:
            est = runs_estimate(b_samples, c_samples)
        else:
            sd = drift_sd if drift_sd is not None else (PACED_DRIFT_SD if use_pace else DRIFT_SD)
            est = single_run_estimate(b_samples, c_samples, drift_sd=sd)
        method = est.method if is_duet else ("paced: " if use_pace else "") + est.method
        row_threshold = threshold if threshold is not None else (DUET_THRESHOLD if is_duet else DEFAULT_THRESHOLD)
        row.update(ratio=est.ratio, ci_low=est.ci_low, ci_high=est.ci_high, p_value=est.p_value, method=method,
                   paced=use_pace, threshold=row_threshold)
        row["verdict"] = sequential_verdict or verdict(est, alpha=alpha, threshold=row_threshold)
        # The busy-machine gate reads the raw rounds: paced ones also carry the pace GEMM's jitter
        # (on the 60-pair data a paced gate let more false alarms through and caught less).
        spread = max(round_spread(s) for s in [*b_raw.values(), *c_raw.values()])
        row["max_round_spread"] = spread
        if est.method.startswith("single run") and spread > MAX_ROUND_SPREAD:
            row["verdict"] = "noisy"
            busy.append(f"{row['case']} ({spread:.0%})")
        if est.method.startswith("single run") and speed_shift and not use_pace:
            row["verdict"] = "noisy"
            shifted_raw = True
        kinds = {(b.get("extra_info") or {}).get("memory_kind") for _, b in [*b_runs, *c_runs]
                 if _peak_memory(b) is not None}
        if len(kinds) > 1:
            # The field changed meaning between schema versions (CPU: schema 1 saved the whole
            # process's RSS, schema 2 the case's own worker): never compared across them.
            row.update(memory_ratio=math.nan, memory_verdict="n/a")
            mixed_memory.append(f"{row['case']} ({' vs '.join(sorted(str(k) for k in kinds))})")
        elif bmem and cmem and row["baseline_memory_bytes"] > 0 and row["candidate_memory_bytes"] > 0:
            # CPU memory is judged against its measured A/A noise floor (identical code must not read
            # as an improvement); a kind without a measured floor keeps the plain threshold.
            floor = MEMORY_FLOOR if kinds and kinds <= set(MEMORY_FLOOR_KINDS) else 0.0
            mr = row["candidate_memory_bytes"] / row["baseline_memory_bytes"]
            row.update(memory_ratio=mr, memory_floor=floor,
                       memory_verdict=memory_verdict(mr, threshold=memory_threshold, floor=floor))
            (floored if floor else unfloored).append(row["case"])
        else:
            row.update(memory_ratio=math.nan, memory_verdict="n/a")
        rows.append(row)

    if floored:
        notes.append(
            f"peak memory: a verdict needs a change beyond {memory_threshold:.0%} and beyond the noise floor, "
            f"x/÷ {math.exp(MEMORY_FLOOR):.2f}, the largest difference two runs of identical code have shown on a "
            "CPU; a change between the two is noisy "
            "(docs/compare.md, \"Peak memory: its noise floor\")"
        )
    if unfloored:
        notes.append(
            f"peak memory of {len(unfloored)} case(s) has no measured noise floor (GPU memory: no GPU has run the "
            f"suite yet): judged on the plain ratio against {memory_threshold:.0%}"
        )
    if mixed_memory:
        notes.append(
            "peak memory not compared for " + ", ".join(mixed_memory) + ": the runs measured it differently "
            "(cpu_peak_rss, schema 1: the whole pytest process's RSS, including earlier cases; cpu_peak_rss_worker, "
            "schema 2: the case's own worker)"
        )
    if n_duet:
        notes.append(
            f"{n_duet} case(s) judged as duet sessions: one log ratio per session (a fresh pair of live workers, "
            "rounds alternated A B B A ...), by the estimator saved in the runs; a t-test across sessions"
        )
    if n_sequential:
        levels = "; ".join(sorted(futility_levels)) or "none reached"
        notes.append(
            f"{n_sequential} duet case(s) judged by the sequential rule saved in the runs: looks at fixed session "
            f"counts, O'Brien-Fleming boundaries (overall alpha {alpha}), a stop as unchanged when both one-sided "
            f"bounds at the saved futility level, {levels}, lie within the threshold (docs/compare.md, "
            "\"The sequential rule\")"
        )
    if cold_compiles:
        notes.append(
            "cold compile (the first session: empty caches, each side in a fresh worker, one measurement per side, "
            "not judged: one cold compile can take twice another of the same code, docs/compare.md, "
            "\"Compile caches\"): "
            + "; ".join(cold_compiles)
        )
    if n_paced:
        notes.append(
            f"{n_paced} case(s) judged on pace-normalised rounds: each round divided by the GEMM timed right before "
            "and after it, which removes the machine's drift in speed (--no-pace judges raw times)"
        )
    if n_raw and pace:
        notes.append(f"{n_raw} case(s) have no pace samples in some run (saved by an older suite): judged on raw times")
    if single:
        floors = []
        if n_paced:
            floors.append(f"{drift_sd if drift_sd is not None else PACED_DRIFT_SD:.1%} for paced cases")
        if n_raw:
            floors.append(f"{drift_sd if drift_sd is not None else DRIFT_SD:.1%} for raw times")
        notes.append(
            f"single-run comparison: judged against a run-to-run drift (sd) of {' and '.join(floors)}; "
            "`alexnet-bench ab` resolves finer"
        )
        if n_raw and not shift_note and not all(_calibration_gflops(r) for r in [*baseline, *candidate]):
            notes.append("runs without a calibration figure: no check that the machine kept its speed between them")
    if shifted_raw:
        notes.append(shift_note + "; use `alexnet-bench ab`")
    if busy:
        notes.append(
            f"rounds spread by more than {MAX_ROUND_SPREAD:.0%} (IQR/median) in {', '.join(busy)}: the machine was busy, "
            "so single runs cannot be judged (verdict noisy); rerun on a quiet machine or use `alexnet-bench ab`"
        )
    table = pd.DataFrame(rows)
    settings = dict(
        alpha=alpha,
        threshold=threshold,
        allow_env_diff=sorted(allow_env_diff),
        memory_threshold=memory_threshold,
        paired=paired,
        drift_sd=drift_sd,
        pace=pace,
        allow_env_mismatch=allow_env_mismatch,
    )
    return Comparison(
        table=table,
        env_differences=refused,
        intended_differences=intended,
        notes=notes,
        settings=settings,
        baseline_runs=[_label(r) for r in baseline],
        candidate_runs=[_label(r) for r in candidate],
    )


def _refuse_mixed_sides(case: str, pairs: list[tuple[dict | None, dict | None]]) -> None:
    """ValueError (one line) when a session's two sides ran with a different re-warm count or allocator
    policy: their ratio would measure the setting, not the code."""
    for b, h in pairs:
        b, h = b or {}, h or {}
        for what, get in (("rewarm", lambda d: d.get("rewarm", 0)),
                          ("allocator policy", lambda d: (d.get("allocator") or {"policy": "default"}).get("policy"))):
            if get(b) != get(h):
                raise ValueError(f"case {case!r}, duet session {b.get('session') or h.get('session')}: the sides ran "
                                 f"with a different {what} (base {get(b)}, head {get(h)}); a duet compares code, "
                                 "so both sides of a session must share it")


def _sequential_design(case: str, duet_infos: list[dict | None]) -> dict | None:
    """The sequential design every run of a duet case saved (``extra_info.duet.sequential``), or None
    when none saved one (sessions of a fixed count: the t-test on all of them)."""
    designs = [(d or {}).get("sequential") for d in duet_infos]
    if not any(designs):
        return None
    keys = {repr(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in (d or {}).items()))
            for d in designs}
    if len(keys) != 1:
        raise ValueError(f"case {case!r}: duet runs saved with different sequential designs (or only some with one)")
    return designs[0]


def _first(key: str, *sides: list[dict[str, dict]]) -> dict:
    for side in sides:
        for cases in side:
            if key in cases:
                return cases[key]
    raise KeyError(key)
