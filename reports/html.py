"""Write a report directory: index.html (jinja2, autoescape on) with its PNGs beside it.

Everything that comes from a saved run (names, case ids, reasons, versions) reaches the page
only through jinja2's autoescaping or pandas' ``to_html(escape=True)``, so a hostile benchmark
name renders as text. The page is self-contained: inline CSS, local images, no scripts, no CDN.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Sequence

import jinja2
import pandas as pd

from reports.figures import FIGURES, draw_all
from reports.load import Run, RunLoadError, config_axes, runs_to_frame, skipped_frame
from reports.headlines import MAX_ROUND_SPREAD, Headline, headlines
from reports.summary import SPEED_AXES

__all__ = ["build_report", "INDEX", "CSV_NAME"]

INDEX = "index.html"
CSV_NAME = "cases.csv"
TEMPLATES = Path(__file__).with_name("templates")

def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}"


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f}"


# The full table: (column, header, formatter). Columns a run lacks are left out. The figures a
# reader looks for come first (throughput, step time, MFU, memory), then the config, then the
# rest; warnings are numbered notes under the table (`_table`), not a column off to the right.
_TABLE = (
    ("run_label", "run", str),
    ("case_id", "case", str),
    ("images_per_s", "images/s (median)", lambda v: f"{v:,.1f}"),
    ("images_per_s_iqr", "IQR images/s", lambda v: f"{v:,.1f}"),
    ("step_time_s", "step ms (median)", _ms),
    ("mfu", "MFU %", lambda v: f"{v * 100:.2f}"),
    ("peak_memory_bytes", "peak memory MiB", _mib),
    ("memory_rise_bytes", "memory the case added MiB", lambda v: f"{v / 2**20:,.1f}"),
    ("kind", "kind", str),
    ("mode", "mode", str),
    ("variant", "variant", str),
    ("batch_size", "batch", lambda v: f"{int(v)}"),
    ("resolution", "resolution", str),
    ("device", "device", str),
    ("amp", "amp", str),
    ("compile", "compile", str),
    ("channels_last", "channels_last", lambda v: "yes" if v else "no"),
    ("rounds", "rounds", lambda v: f"{int(v)}"),
    ("achieved_tflops", "TFLOP/s", lambda v: f"{v:.4f}"),
    ("memory_kind", "memory kind", str),
    ("compile_time_s", "compile s", lambda v: f"{v:.1f}"),
    ("correctness_loss_rel_diff", "loss rel. diff vs fp32", lambda v: f"{v:.2e}"),
    ("data_wait_fraction", "data wait %", lambda v: f"{v * 100:.1f}"),
)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _fmt(value: Any, formatter: Any = str) -> str:
    if _missing(value) or value == "":
        return "—"
    try:
        return formatter(value)
    except (TypeError, ValueError):
        return str(value)


def _environment(run: Run) -> dict[str, str]:
    info, commit = run.machine_info, run.commit_info
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    if info.get("gpu_name"):
        device = f"GPU: {info['gpu_name']}"
        if info.get("gpu_driver"):
            device += f" (driver {info['gpu_driver']})"
    else:
        device = f"CPU: {info.get('cpu_model') or cpu.get('brand_raw') or info.get('processor') or 'unknown'}"
    commit_id = str(commit.get("id") or "unknown")[:12]
    if commit.get("dirty"):
        commit_id += " (uncommitted changes)"
    calibration = run.suite.get("calibration") or {}
    gflops = calibration.get("gflops")
    return {
        "run": run.label,
        "file": str(run.path),
        "date (UTC)": _fmt(run.datetime),
        "device": device,
        "CPU cores / torch threads": f"{_fmt(info.get('cpu_count'))} / {_fmt(info.get('torch_num_threads'))}",
        "torch": _fmt(info.get("torch_version")),
        "torchvision": _fmt(info.get("torchvision_version")),
        # cuda_version is the CUDA that torch was built with; say when no GPU was used.
        "CUDA": (f"{info['cuda_version']} (torch build{'' if info.get('cuda_available') else '; no GPU visible'})"
                 if info.get("cuda_version") else "none (CPU-only torch build)"),
        "cuDNN": _fmt(info.get("cudnn_version")),
        "Python": _fmt(info.get("python_version")),
        "commit": f"{commit_id} on {commit.get('branch') or '?'}",
        "host": _fmt(info.get("hostname") or info.get("node")),
        "preset": _fmt(run.suite.get("preset")),
        "fp32 GEMM calibration": f"{gflops:.1f} GFLOP/s" if isinstance(gflops, (int, float)) else "—",
        "CPU peak (MFU's denominator)": _cpu_peak_text(calibration.get("peak")),
    }


def _cpu_peak_text(peak: Any) -> str:
    """The CPU's peak per dtype and its inputs, from the run's calibration (bench/instruments/cpu_peak.py)."""
    if not isinstance(peak, dict) or not isinstance(peak.get("tflops"), dict):
        return "—"
    inputs = peak.get("inputs") or {}
    rates = ", ".join(f"{d} {t * 1e3:.0f} GFLOP/s" for d, t in peak["tflops"].items() if isinstance(t, (int, float)))
    clock = inputs.get("clock_ghz")
    return (f"{rates or 'none'} ({inputs.get('cores')} cores x "
            f"{f'{clock:.2f} GHz' if isinstance(clock, (int, float)) else '? GHz'}; clock: {inputs.get('clock_source')})")


def _x(v: float) -> str:
    return f"{v:.2f}×"


def _headline_rows(heads: Sequence[Headline]) -> list[dict[str, Any]]:
    """One row per answer: the question, the setting, the figure (or "not resolved") and its evidence."""
    rows = []
    for h in heads:
        runs = len(h.answers) > 1
        if h.note:
            figure, evidence, state = "—", h.note, "none"
        elif h.resolved:
            lows, highs = [a.low for a in h.answers], [a.high for a in h.answers]
            figure = f"{_x(h.speedup)} (95%: {min(lows):.2f}–{max(highs):.2f})" if not runs else (
                f"{_x(h.speedup)} (runs: {', '.join(_x(a.speedup) for a in h.answers)})")
            evidence = "; ".join(
                (f"run {a.run_label}: " if runs else "")
                + f"{_x(a.speedup)}, 95% interval {a.low:.2f}–{a.high:.2f}; rounds spread {a.spreads[0]:.0%} "
                  f"and {a.spreads[1]:.0%} (IQR/median, at most {MAX_ROUND_SPREAD:.0%})"
                + ("; paced" if a.paced else "; raw times")
                for a in h.answers)
            state = "good" if h.speedup > 1 else "bad"
        else:
            figure, evidence, state = "not resolved", h.reason or "no rounds to judge", "unresolved"
        rows.append({
            "mode": h.mode, "question": h.question, "workload": h.workload, "workload_note": h.workload_note,
            "settings": h.settings, "baseline": h.baseline, "figure": figure, "evidence": evidence, "state": state,
        })
    return rows


def _table(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, rows and the numbered warning notes (the last column holds each row's note numbers)."""
    cols = [(c, h, f) for c, h, f in _TABLE if c in frame and not frame[c].map(_missing).all()]
    if "run_label" in frame and frame["run_label"].nunique() < 2:
        cols = [col for col in cols if col[0] != "run_label"]
    notes: list[str] = []
    rows = []
    for _, row in frame.iterrows():
        cells = [_fmt(row[c], f) for c, _, f in cols]
        refs = []
        for warning in [w for w in str(row.get("warnings") or "").split("; ") if w and not _missing(row.get("warnings"))]:
            if warning not in notes:
                notes.append(warning)
            refs.append(str(notes.index(warning) + 1))
        rows.append([*cells, ", ".join(refs) or ""])
    return [h for _, h, _ in cols] + ["warnings (notes below)"], rows, notes


# The comparison table: what a reader decides on first (the verdicts, the ratios and their
# intervals), then the figures in ms and MiB, then the test's details.
_COMPARISON = (
    ("case", "case", str), ("verdict", "time verdict", str), ("ratio", "time ratio", "{:.3f}".format),
    ("ci_low", "95% interval", None), ("baseline_median_s", "baseline ms", _ms),
    ("candidate_median_s", "candidate ms", _ms), ("memory_verdict", "memory verdict", str),
    ("memory_ratio", "memory ratio", "{:.3f}".format), ("baseline_memory_bytes", "baseline MiB", _mib),
    ("candidate_memory_bytes", "candidate MiB", _mib), ("p_value", "p", "{:.2g}".format), ("method", "test", str),
)


def _comparison_table(table: pd.DataFrame) -> tuple[list[str], list[dict[str, Any]]]:
    cols = [c for c in _COMPARISON if c[0] in table and not table[c[0]].map(_missing).all()]
    rows = []
    for _, r in table.iterrows():
        cells = []
        for col, _, f in cols:
            if col == "ci_low":
                cells.append("—" if _missing(r[col]) else f"{r[col]:.3f}–{r['ci_high']:.3f}")
            else:
                cells.append(_fmt(r[col], f))
        bad = "regression" in (r.get("verdict"), r.get("memory_verdict"))
        rows.append({"cells": cells, "bad": bad})
    return [h for _, h, _ in cols], rows


def _comparison(base: Run, cand: Run) -> dict[str, Any]:
    """One comparison section (candidate against baseline), or a visible note saying why there is none."""
    from reports.compare import compare_runs  # docs/compare.md

    section: dict[str, Any] = {"baseline": base.label, "candidate": cand.label, "note": None, "headers": [],
                               "rows": [], "env_differences": [], "has_regression": None,
                               "headline": None, "notes": []}
    try:
        comparison = compare_runs([base], [cand])
    except (RunLoadError, ValueError) as exc:
        # Different machines or versions: still compare, but say so first, loudly.
        try:
            comparison = compare_runs([base], [cand], allow_env_mismatch=True)
            section["note"] = f"Warning: {exc} The comparison below was made anyway; read it with care."
        except (RunLoadError, ValueError) as exc2:
            section["note"] = f"No comparison: {exc2}"
            return section
    section["headline"] = comparison.headline()
    section["notes"] = [str(n) for n in comparison.notes]
    section["env_differences"] = list(comparison.env_differences)
    section["has_regression"] = bool(comparison.has_regression)
    section["headers"], section["rows"] = _comparison_table(comparison.table)
    return section


def _comparisons(runs: Sequence[Run]) -> tuple[str | None, list[dict[str, Any]]]:
    """Two runs: the second against the first. More: each against the first, and the page says so."""
    if len(runs) < 2:
        return None, []
    first = runs[0]
    if len(runs) == 2:
        plan = f"Run {runs[1].label} (candidate) against run {first.label} (baseline)."
    else:
        plan = (f"{len(runs)} runs: each later run is compared against the first, {first.label} (the baseline), "
                "one section each: " + ", ".join(r.label for r in runs[1:]) + ".")
    return plan, [_comparison(first, cand) for cand in runs[1:]]


def build_report(runs: Sequence[Run], *, out_dir: Path, csv: bool = False) -> Path:
    """Write index.html, its PNGs (and cases.csv when asked) into ``out_dir``; return the index path."""
    if not runs:
        raise RunLoadError("no runs to report on")
    out_dir = Path(out_dir)
    frame = runs_to_frame(runs)
    axes = config_axes(runs)
    figures = draw_all(runs, frame, axes, out_dir=out_dir)
    if csv:
        frame.to_csv(out_dir / CSV_NAME, index=False)
    headers, rows, warning_notes = _table(frame)
    plan, comparisons = _comparisons(runs)
    skipped = skipped_frame(runs)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every saved-run string is escaped, whatever the template's name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    html = env.get_template("index.html.j2").render(
        title="AlexNet benchmark report",
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        environments=[_environment(r) for r in runs],
        headlines=_headline_rows(headlines(frame, axes, runs)),
        speed_axes=", ".join(SPEED_AXES),
        max_spread=f"{MAX_ROUND_SPREAD:.0%}",
        figures=figures,
        not_drawn=[title for slug, (title, _) in FIGURES.items() if f"{slug}.png" not in {f.file for f in figures}],
        headers=headers,
        rows=rows,
        warning_notes=warning_notes,
        n_cases=len(frame),
        skipped=skipped.fillna("").to_dict("records"),
        comparison_plan=plan,
        comparisons=comparisons,
        n_runs=len(runs),
        csv_file=CSV_NAME if csv else None,
        interrupted=[{"label": r.label, "signal": r.interrupted.get("signal"),
                      "not_run": r.interrupted.get("not_run") or [], "collected": r.interrupted.get("collected")}
                     for r in runs if r.interrupted],
    )
    index = out_dir / INDEX
    index.write_text(html, encoding="utf-8")
    return index
