"""The history page (one figure per series, the change-point table at the top) and its markdown.

Built as the report is (`reports.html`): matplotlib's object API on the Agg canvas, PNGs
written beside ``index.html``, jinja2 with autoescape on, tables from pandas with
``escape=True``; every string from a saved run reaches the page escaped. Offline: inline CSS,
local images, no scripts.
"""

from __future__ import annotations

import datetime as _dt
import math
import uuid
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

from reports.history import History, Series
from reports.html import INDEX, TEMPLATES

__all__ = ["HISTORY_MARKER", "build_page", "draw_series", "to_markdown"]

# A comment in every history page: `history --out` only replaces a folder whose index.html has it.
HISTORY_MARKER = "<!-- alexnet-bench history page -->"
TEMPLATE = "history.html.j2"
# Small figures: 40 series of 200 commits must stay well under 20 MB and 60 s (docs/history.md).
FIG_SIZE_IN = (9.0, 2.8)
FIG_DPI = 80
MAX_TICKS = 12
COLORS = {"regression": "#c62828", "improvement": "#2e7d32", "minor": "#9e9e9e", "software": "#6a1b9a",
          "line": "#1565c0", "band": "#90caf9", "raw": "#bdbdbd", "segment": "#ef6c00"}


def _short(commit: str) -> str:
    return commit[:8]


def draw_series(s: Series) -> Figure:
    """Median step time against commit: the IQR as a band, segment medians, change points with ratios."""
    shown = s.shown()
    x = np.arange(len(s.points))
    y = np.array([v["value_s"] for v in shown]) * 1e3
    fig = Figure(figsize=FIG_SIZE_IN, dpi=FIG_DPI, layout="constrained")
    ax = fig.subplots()
    q1 = np.array([np.nan if v["q1_s"] is None else v["q1_s"] for v in shown], dtype=float) * 1e3
    q3 = np.array([np.nan if v["q3_s"] is None else v["q3_s"] for v in shown], dtype=float) * 1e3
    ax.fill_between(x, q1, q3, color=COLORS["band"], alpha=0.5, linewidth=0, label="IQR of the rounds")
    if s.paced:
        raw = np.array([p.median_s for p in s.points]) * 1e3
        ax.plot(x, raw, color=COLORS["raw"], linewidth=0.8, label="raw median")
    ax.plot(x, y, color=COLORS["line"], marker="o", markersize=2.5, linewidth=1,
            label="paced median, in s of this series' pace" if s.paced else "median")
    repeats = [i for i, p in enumerate(s.points) if len(p.runs) > 1]
    if repeats:
        lo = np.array([shown[i]["min_s"] for i in repeats]) * 1e3
        hi = np.array([shown[i]["max_s"] for i in repeats]) * 1e3
        ax.vlines(repeats, lo, hi, color=COLORS["line"], linewidth=1.5, label="range of repeated runs")
    d = s.detection
    values = s.run_values()
    top = np.nanmax(np.concatenate([y, q3[np.isfinite(q3)]])) if len(y) else 1.0
    if d:
        for start, end in d.segments:
            end = len(s.points) if end is None else end
            level = np.median([v for p in values[start:end] for v in p]) * 1e3
            ax.hlines(level, start - 0.4, end - 0.6, color=COLORS["segment"], linewidth=1.5)
        for i, ch in enumerate(d.changes):
            color = COLORS[ch.verdict]
            ax.axvline(ch.index - 0.5, color=color, linewidth=1.2, linestyle="-")
            label = f"×{ch.ratio:.3g}" + (" accepted" if i in s.accepted_changes else "")
            ax.annotate(label, (ch.index - 0.5, top), xytext=(2, -2), textcoords="offset points",
                        color=color, fontsize=8, va="top")
    for change in s.software_changes():
        ax.axvline(change["index"] - 0.5, color=COLORS["software"], linewidth=1, linestyle=":")
        text = ", ".join(f"{c['what']} {c['to']}" for c in change["changes"])
        ax.annotate(text, (change["index"] - 0.5, 0), xycoords=("data", "axes fraction"), xytext=(2, 2),
                    textcoords="offset points", color=COLORS["software"], fontsize=7, rotation=90, va="bottom")
    step = max(1, math.ceil(len(x) / MAX_TICKS))
    ticks = list(range(0, len(x), step))
    ax.set_xticks(ticks, [_short(s.points[i].commit) for i in ticks], rotation=30, ha="right", fontsize=7)
    ax.set_xlim(-0.7, max(len(x) - 0.3, 0.7))
    ax.set_ylabel("step time (ms)")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=7, ncols=4, frameon=False)
    return fig


def _fmt_ratio(v: float) -> str:
    return f"×{v:.3f}"


def _change_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    frame = pd.DataFrame([{
        "series": r["series"], "case": r["case"], "machine": r["machine"],
        "previous commit": _short(r["previous_commit"]), "commit": _short(r["commit"]),
        "ratio": _fmt_ratio(r["ratio"]), "95% interval": f"{r['ci_low']:.3f}–{r['ci_high']:.3f}",
        "verdict": _verdict(r),
        "software change": r["software_change"] or "—",
        "confirm with": r["ab_command"] or "— (same commit: only the software changed)",
    } for r in rows])
    return _links(frame)


def _verdict(r: dict[str, Any]) -> str:
    """The verdict as shown: "suspected" when seen only in the newest few commits (which are listed)."""
    text = r["verdict"] + (" (fails)" if r["fails"] else "") + (" (accepted)" if r["accepted"] else "")
    if r.get("suspected"):
        text = f"suspected {text}: seen in the newest {len(r['confirming_commits'])} commit(s) only"
    return text


def _creep_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    frame = pd.DataFrame([{
        "series": r["series"], "case": r["case"], "machine": r["machine"],
        "against": f"{r['reference']} segment ({_short(r['reference_commits'][0])}–{_short(r['reference_commits'][1])})",
        "newest segment": f"{_short(r['newest_commits'][0])}–{_short(r['newest_commits'][1])}",
        "ratio": _fmt_ratio(r["ratio"]), "95% interval": f"{r['ci_low']:.3f}–{r['ci_high']:.3f}",
        "fails": "yes" if r["fails"] else "no", "confirm with": r["ab_command"],
    } for r in rows])
    return _links(frame)


def _links(frame: pd.DataFrame) -> str:
    """pandas escapes every cell; the series column's placeholders then become links to the series'
    anchors (their ids are hex digests, so nothing from a saved run reaches the markup unescaped)."""
    keys = list(frame["series"])
    nonce = uuid.uuid4().hex
    frame = frame.assign(series=[f"{nonce}-{i}" for i in range(len(keys))])
    html = frame.to_html(index=False, escape=True, border=0, classes="cases")
    for i, key in enumerate(keys):
        html = html.replace(f"<td>{nonce}-{i}</td>", f'<td><a href="#{key}">graph</a></td>', 1)
    return html


def build_page(history: History, *, out_dir: Path) -> Path:
    """Write index.html and one PNG per series into ``out_dir``; return the index path."""
    out_dir = Path(out_dir)
    sections = []
    for s in history.series:
        fig = draw_series(s)
        file = f"{s.key}.png"
        fig.savefig(out_dir / file, format="png", dpi=FIG_DPI)
        d = s.detection
        sections.append({
            "key": s.key, "case": s.case_id, "machine": s.machine, "threads": s.threads, "file": file,
            "n_points": len(s.points), "n_runs": sum(len(p.runs) for p in s.points), "paced": s.paced,
            "pace_ref_ms": f"{s.pace_ref_s * 1e3:.3f}" if s.pace_ref_s else None,
            "sigma": f"{d.sigma:.4f}" if d else "—", "pen": f"{d.pen:.3g}" if d else "—",
            "detector": d.detector if d else "—", "noise": (s.noise() or {}).get("text"),
            "n_changes": len(d.changes) if d else 0,
            "first": _short(s.points[0].commit), "last": _short(s.points[-1].commit),
            "last_ms": f"{s.points[-1].median_s * 1e3:.2f}",
            "software": [{"commit": _short(c["commit"]), "text": ", ".join(
                f"{x['what']} {x['from']} → {x['to']}" for x in c["changes"])} for c in s.software_changes()],
            "memory": s.memory(),
            "notes": s.notes,
        })
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    changes = history.change_rows()
    creep = history.creep_rows()
    html = env.get_template(TEMPLATE).render(
        marker=Markup(HISTORY_MARKER),
        title="AlexNet benchmark history",
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        n_files=history.n_files, n_runs=history.n_runs, n_series=len(history.series),
        n_points=sum(len(s.points) for s in history.series),
        sources=history.sources, order=history.order_method,
        threshold=f"{history.threshold:.0%}" if history.threshold * 100 == round(history.threshold * 100)
        else f"{history.threshold:.1%}",
        counts={v: sum(r["verdict"] == v for r in changes) for v in ("regression", "improvement", "minor")},
        failing=history.failing(),
        change_table=Markup(_change_table(changes)),
        creep_table=Markup(_creep_table(creep)),
        accepted=[a.to_dict() for a in history.acceptances],
        skipped=[{"path": f.path, "reason": f.reason} for f in history.skipped_files],
        notes=history.notes,
        sections=sections,
    )
    index = out_dir / INDEX
    index.write_text(html, encoding="utf-8")
    return index


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(history: History) -> str:
    """The job summary: counts, what fails, every change point (regressions first), creep, skipped files."""
    changes = history.change_rows()
    creep = history.creep_rows()
    failing = history.failing()
    lines = ["## Benchmark history", ""]
    lines.append(f"{len(history.series)} series, {sum(len(s.points) for s in history.series)} points from "
                 f"{history.n_runs} runs ({history.n_files} files); ordered by {history.order_method}; "
                 f"threshold {history.threshold:.1%}.")
    lines.append("")
    if failing:
        lines.append(f"**{len(failing)} regression(s) in the newest segment** (interval above 1 + threshold):")
        lines += [f"- `{_md(f['case'])}` on {_md(f['machine'])}: {f['what']} ×{f['ratio']:.3f} "
                  f"(low end {f['ci_low']:.3f}) at `{f['commit'][:12]}`" for f in failing]
    else:
        lines.append("No regression in the newest segment of any series.")
    lines.append("")
    if changes:
        lines += ["| case | machine | previous → commit | ratio | 95% interval | verdict | software | confirm with |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in changes:
            verdict = _verdict(r)
            lines.append(f"| `{_md(r['case'])}` | {_md(r['machine'])} | `{r['previous_commit'][:8]}` → "
                         f"`{r['commit'][:8]}` | ×{r['ratio']:.3f} | {r['ci_low']:.3f}–{r['ci_high']:.3f} | "
                         f"{verdict} | {_md(r['software_change'] or '—')} | "
                         f"{'`' + _md(r['ab_command']) + '`' if r['ab_command'] else '—'} |")
    else:
        lines.append("No change points.")
    if creep:
        lines += ["", "Creep (the newest segment against an earlier one):", ""]
        lines += [f"- `{_md(r['case'])}` on {_md(r['machine'])}: ×{r['ratio']:.3f} "
                  f"({r['ci_low']:.3f}–{r['ci_high']:.3f}) against the {r['reference']} segment" for r in creep]
    noise = [(s, s.noise()) for s in history.series if s.detection]
    if noise:
        lines += ["", "What each series can resolve (its noise per run; the step found at its commit in 90% of "
                  "series with 5 runs after it):", "", "| case | machine | judged on | noise per run | resolves |",
                  "|---|---|---|---|---|"]
        lines += [f"| `{_md(s.case_id)}` | {_md(s.machine)} | {n['judged_on']} | {n['sigma']:.1%} | "
                  f"about {n['resolves_within_5_runs']:.0%} |" for s, n in noise]
    if history.skipped_files:
        lines += ["", f"{len(history.skipped_files)} file(s) skipped:", ""]
        lines += [f"- `{_md(f.path)}`: {_md(f.reason)}" for f in history.skipped_files]
    if history.notes:
        lines += [""] + [f"- {_md(n)}" for n in history.notes]
    return "\n".join(lines) + "\n"
