"""Write a report directory: index.html (jinja2, autoescape on) with its PNGs beside it.

Everything that comes from a saved run (names, case ids, reasons, versions) reaches the page
only through jinja2's autoescaping or pandas' ``to_html(escape=True)``, so a hostile benchmark
name renders as text. The page is self-contained: inline CSS, local images, no scripts, no CDN.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Sequence

import jinja2
import pandas as pd
from markupsafe import Markup

from reports.figures import FIGURES, draw_all
from reports.load import Run, RunLoadError, config_axes, runs_to_frame, skipped_frame
from reports.summary import SPEED_AXES, best_configs

__all__ = ["build_report", "INDEX", "CSV_NAME"]

INDEX = "index.html"
CSV_NAME = "cases.csv"
TEMPLATES = Path(__file__).with_name("templates")

# The full table: (column, header, formatter). Columns a run lacks are left out.
_TABLE = (
    ("run_label", "run", str),
    ("case_id", "case", str),
    ("kind", "kind", str),
    ("mode", "mode", str),
    ("variant", "variant", str),
    ("batch_size", "batch", lambda v: f"{int(v)}"),
    ("resolution", "resolution", str),
    ("device", "device", str),
    ("amp", "amp", str),
    ("compile", "compile", str),
    ("channels_last", "channels_last", lambda v: "yes" if v else "no"),
    ("images_per_s", "images/s (median)", lambda v: f"{v:,.1f}"),
    ("images_per_s_iqr", "IQR images/s", lambda v: f"{v:,.1f}"),
    ("step_time_s", "step ms (median)", lambda v: f"{v * 1e3:,.2f}"),
    ("rounds", "rounds", lambda v: f"{int(v)}"),
    ("achieved_tflops", "TFLOP/s", lambda v: f"{v:.4f}"),
    ("mfu", "MFU %", lambda v: f"{v * 100:.2f}"),
    ("peak_memory_bytes", "peak memory MiB", lambda v: f"{v / 2**20:,.0f}"),
    ("memory_rise_bytes", "memory rise MiB (CPU: the case's own, over its idle worker)", lambda v: f"{v / 2**20:,.1f}"),
    ("memory_kind", "memory kind", str),
    ("compile_time_s", "compile s", lambda v: f"{v:.1f}"),
    ("correctness_loss_rel_diff", "loss rel. diff vs fp32", lambda v: f"{v:.2e}"),
    ("data_wait_fraction", "data wait %", lambda v: f"{v * 100:.1f}"),
    ("warnings", "warnings", str),
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


def _best(entries: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for e in entries:
        changed = [f"{k}={v}" for k, v in e["settings"].items()
                   if str(v) not in ("off", "False", "None")]
        speedup = e["speedup"]
        rows.append({
            "run": e["run_label"],
            "mode": str(e["mode"]),
            "case": str(e["case_id"]),
            "settings": ", ".join(changed) or "the seed's settings (fp32, eager, NCHW)",
            "images_per_s": f"{e['images_per_s']:,.1f} ± {e['images_per_s_iqr'] / 2:,.1f}"
            if not math.isnan(e["images_per_s_iqr"]) else f"{e['images_per_s']:,.1f}",
            "baseline": _fmt(e["baseline_case_id"]),
            "baseline_images_per_s": _fmt(e["baseline_images_per_s"], lambda v: f"{v:,.1f}"),
            "speedup": "—" if math.isnan(speedup) else f"{speedup:.2f}×",
            "note": e["note"] or "",
        })
    return rows


def _table(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    cols = [(c, h, f) for c, h, f in _TABLE if c in frame and not frame[c].map(_missing).all()]
    if "run_label" in frame and frame["run_label"].nunique() < 2:
        cols = [col for col in cols if col[0] != "run_label"]
    rows = [[_fmt(row[c], f) for c, _, f in cols] for _, row in frame.iterrows()]
    return [h for _, h, _ in cols], rows


def _comparison(runs: Sequence[Run]) -> dict[str, Any] | None:
    """The comparison section for exactly two runs, or a visible note saying why there is none."""
    if len(runs) != 2:
        return None
    base, cand = runs
    section: dict[str, Any] = {"baseline": base.label, "candidate": cand.label, "note": None, "table": None,
                               "env_differences": [], "has_regression": None,
                               "headline": None, "notes": []}
    try:
        from reports.compare import compare_runs  # docs/compare.md; imported lazily so reports work without it
    except ImportError as exc:
        section["note"] = f"Comparison unavailable: reports.compare could not be imported ({exc})."
        return section
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
    # headline() and notes are extras of reports.compare beyond the agreed API: use them when present.
    headline = getattr(comparison, "headline", None)
    section["headline"] = headline() if callable(headline) else None
    section["notes"] = [str(n) for n in getattr(comparison, "notes", None) or []]
    section["env_differences"] = list(comparison.env_differences)
    section["has_regression"] = bool(comparison.has_regression)
    section["table"] = Markup(comparison.table.to_html(index=False, escape=True, na_rep="—",
                                                       float_format=lambda v: f"{v:.4g}", border=0,
                                                       classes="cases"))
    return section


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
    headers, rows = _table(frame)
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
        best=_best(best_configs(frame, axes)),
        speed_axes=", ".join(SPEED_AXES),
        figures=figures,
        not_drawn=[title for slug, (title, _) in FIGURES.items() if f"{slug}.png" not in {f.file for f in figures}],
        headers=headers,
        rows=rows,
        n_cases=len(frame),
        skipped=skipped.fillna("").to_dict("records"),
        comparison=_comparison(runs),
        n_runs=len(runs),
        csv_file=CSV_NAME if csv else None,
    )
    index = out_dir / INDEX
    index.write_text(html, encoding="utf-8")
    return index
