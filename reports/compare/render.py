"""Rendering a `Comparison`: the terminal table, the markdown (CI job summaries) and the JSON."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reports.compare.judgement import Comparison


def _header_lines(comp: Comparison) -> list[str]:
    lines = []
    if comp.intended_differences:
        lines.append("INTENDED ENVIRONMENT DIFFERENCES (--allow-env-diff):")
        lines += [f"  {d}" for d in comp.intended_differences]
    if comp.env_differences:
        lines.append("ENVIRONMENT DIFFERS (compared anyway, --allow-env-mismatch):")
        lines += [f"  {d}" for d in comp.env_differences]
    lines.append(f"baseline:  {_runs(comp.baseline_runs)}")
    lines.append(f"candidate: {_runs(comp.candidate_runs)}")
    s = comp.settings
    methods = sorted({m for m in comp.table.get("method", []) if m})
    thresholds = sorted({float(t) for t in comp.table.get("threshold", []) if not _nan(t)})
    shown = ", ".join(f"{t:.1%}" for t in thresholds) if thresholds else (
        f"{s['threshold']:.1%}" if s.get("threshold") is not None else "default")
    lines.append(
        f"alpha {s['alpha']}, time threshold {shown}, memory threshold {s['memory_threshold']:.0%}"
        + (f"; test: {', '.join(methods)}" if methods else "")
    )
    return lines


def _rows(comp: Comparison) -> list[list[str]]:
    rows = []
    for r in comp.table.itertuples(index=False):
        rows.append(
            [
                r.case,
                _fmt_ms(r.baseline_median_s),
                _fmt_ms(r.candidate_median_s),
                _fmt(r.ratio, "{:.3f}"),
                "" if _nan(r.ci_low) else f"{r.ci_low:.3f}-{r.ci_high:.3f}",
                _fmt(r.p_value, "{:.2g}"),
                r.verdict,
                _fmt(r.memory_ratio, "{:.3f}"),
                r.memory_verdict,
            ]
        )
    return rows


COLUMNS = ["case", "baseline", "candidate", "ratio", "95% CI", "p", "verdict", "mem ratio", "memory"]


def to_text(comp: Comparison) -> str:
    """The terminal table."""
    rows = [COLUMNS] + _rows(comp)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    out = _header_lines(comp) + [""]
    for j, row in enumerate(rows):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    out += [""] + [f"note: {n}" for n in comp.notes] + [comp.headline()]
    return "\n".join(out) + "\n"


def to_markdown(comp: Comparison) -> str:
    """The markdown table (CI job summaries, pull-request comments)."""
    out = ["## Benchmark comparison", ""]
    if comp.intended_differences:
        out += ["> **Intended environment differences** (`--allow-env-diff`):", ">"]
        out += [f"> - {_md(d)}" for d in comp.intended_differences]
        out.append("")
    if comp.env_differences:
        out += ["> **Environment differs** (compared anyway with `--allow-env-mismatch`):", ">"]
        out += [f"> - {_md(d)}" for d in comp.env_differences]
        out.append("")
    out += [f"**{_md(comp.headline())}**", ""]
    out += [f"- {_md(line)}" for line in _header_lines(comp) if not line.startswith(("ENV", "INTENDED", "  "))]
    out.append("")
    out.append("| " + " | ".join(COLUMNS) + " |")
    out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in _rows(comp):
        row = [f"**{row[0]}**" if "regression" in (row[6], row[8]) else row[0], *row[1:]]
        out.append("| " + " | ".join(_md(c) for c in row) + " |")
    if comp.notes:
        out.append("")
        out += [f"- note: {_md(n)}" for n in comp.notes]
    return "\n".join(out) + "\n"


def to_dict(comp: Comparison) -> dict:
    """Everything, JSON-ready (NaN written as null)."""
    records = json.loads(comp.table.to_json(orient="records"))  # NaN -> null
    return {
        "schema_version": 1,
        "has_regression": comp.has_regression,
        "headline": comp.headline(),
        "env_differences": list(comp.env_differences),
        "intended_differences": list(comp.intended_differences),
        "notes": list(comp.notes),
        "settings": dict(comp.settings),
        "baseline_runs": list(comp.baseline_runs),
        "candidate_runs": list(comp.candidate_runs),
        "cases": records,
    }


def to_json(comp: Comparison) -> str:
    """`to_dict` as the text ``--json FILE`` holds."""
    return json.dumps(to_dict(comp), indent=2) + "\n"


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x: Any, spec: str) -> str:
    return "" if _nan(x) else spec.format(x)


def _fmt_ms(x: Any) -> str:
    return "" if _nan(x) else f"{x * 1e3:.2f} ms"


def _md(s: str) -> str:
    # Table cells come from saved runs: keep a '|' or a newline from breaking the table.
    return str(s).replace("|", "\\|").replace("\n", " ")


def _runs(labels: list[str], most: int = 4) -> str:
    """The runs of a side, or for many (a duet's sessions) how many, the first and the last; the JSON keeps all."""
    if len(labels) <= most:
        return ", ".join(labels)
    return f"{len(labels)} runs, {labels[0]} ... {labels[-1]}"
