"""PNG figures drawn from saved runs (matplotlib's object API on the Agg canvas).

Each ``draw_*`` function returns a `matplotlib.figure.Figure`, or ``None`` when the data does
not support the figure: an axis that was not swept (one batch size -> no batch-size figure),
a metric that was never recorded (no ``layers`` -> no per-layer bars). So a report never
shows empty axes. `draw_all` saves what was drawn and returns what it saved, in order.

`matplotlib.figure.Figure` is used directly rather than pyplot: no global state, no GUI
backend, and figures are freed as soon as they are saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from reports.load import Run, samples_frame
from reports.summary import DERIVED_AXES, SEED_SPEED_SETTINGS, shape_axes, step_cases, with_baseline

__all__ = ["ReportFigure", "draw_all", "FIGURES"]

DPI = 100
MAX_LINES = 12          # legend entries beyond this are unreadable; the caption says what was cut
MAX_BARS = 30           # rows in a bar or box chart before it stops fitting on a screen
MAX_LAYER_CASES = 4
MAX_TIMELINE_CASES = 6
LABEL_CHARS = 90
MIB = 2**20
# Timeline series keys in the order they are most useful; any other numeric key follows.
TIMELINE_ORDER = ("gpu_util", "mem_util", "power_w", "sm_clock_mhz", "mem_clock_mhz", "temperature_c",
                  "cpu_percent", "rss_bytes")
MAX_TIMELINE_KEYS = 6


@dataclass(frozen=True)
class ReportFigure:
    """One saved PNG: file name (relative to the report), title and a caption saying what is shown."""

    file: str
    title: str
    caption: str


def _short(text: Any) -> str:
    text = str(text)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _new(rows: int = 1, cols: int = 1, *, width: float = 8.0, height: float = 4.5) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axs = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(rows, cols)
    return fig, axs


def _varying(frame: pd.DataFrame, axes: Sequence[str], *, exclude: Sequence[str] = ()) -> list[str]:
    """Axes with more than one value among these rows: the ones that tell families apart."""
    cols = [a for a in axes if a in frame and a not in DERIVED_AXES and a not in exclude]
    if frame["run_label"].nunique() > 1:
        cols = ["run_label", *cols]
    return [c for c in cols if frame[c].map(str).nunique() > 1]


def _family_label(values: Sequence[Any], cols: Sequence[str]) -> str:
    parts = []
    for col, value in zip(cols, values):
        if isinstance(value, (bool, np.bool_)):
            parts.append(col if value else f"no {col}")
        else:
            parts.append(f"{col}={value}" if col != "run_label" else f"run {value}")
    return ", ".join(parts) or "all cases"


def _families(frame: pd.DataFrame, axes: Sequence[str], x: str) -> tuple[list[tuple[str, pd.DataFrame]], int]:
    """Lines of (label, rows sorted by x) with >= 2 distinct x values; the best MAX_LINES, and how many there were."""
    cols = _varying(frame, axes, exclude=(x, "mode"))
    groups = frame.groupby([frame[c].map(str) for c in cols], sort=False) if cols else [((), frame)]
    kept = [rows.sort_values(x) for _, rows in groups if rows[x].nunique() >= 2]
    # Label lines by what tells the drawn lines apart; a lone line is labelled by its settings.
    firsts = pd.DataFrame([rows.iloc[0] for rows in kept]) if kept else frame.iloc[0:0]
    differ = [c for c in cols if firsts[c].map(str).nunique() > 1] or cols
    lines = [(_family_label([rows.iloc[0][c] for c in differ], differ), rows) for rows in kept]
    lines.sort(key=lambda item: -item[1]["images_per_s"].max())
    return lines[:MAX_LINES], len(lines)


def _cut_note(shown: int, total: int, what: str) -> str:
    return f" Only the {shown} {what} with the highest throughput of {total} are drawn." if total > shown else ""


def _line_figure(frame: pd.DataFrame, axes: Sequence[str], *, x: str, y: str, yerr: str | None,
                 xlabel: str, ylabel: str, scale: float = 1.0,
                 xticks: Callable[[pd.DataFrame], tuple[list[float], list[str]]] | None = None,
                 logx: bool = False) -> tuple[Figure | None, int, int]:
    modes = [m for m in frame["mode"].dropna().unique()]
    panels = []
    for mode in modes:
        rows = frame[(frame["mode"] == mode) & frame[y].notna()]
        if rows.empty:
            continue
        lines, total = _families(rows, axes, x)
        if lines:
            panels.append((mode, lines, total))
    if not panels:
        return None, 0, 0
    fig, axs = _new(1, len(panels), width=6.5 * len(panels), height=4.8)
    shown = total_all = 0
    for ax, (mode, lines, total) in zip(axs[0], panels):
        for label, rows in lines:
            err = rows[yerr] * scale / 2 if yerr and yerr in rows and rows[yerr].notna().all() else None
            ax.errorbar(rows[x], rows[y] * scale, yerr=err, marker="o", capsize=3, label=_short(label))
        if logx:
            ax.set_xscale("log", base=2)
        if xticks is not None:
            ticks, names = xticks(pd.concat([r for _, r in lines]))
            ax.set_xticks(ticks, names)
        elif logx:
            values = sorted(pd.concat([r[x] for _, r in lines]).unique())
            ax.set_xticks(values, [str(int(v)) for v in values])
        ax.set_title(str(mode))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        shown += len(lines)
        total_all += total
    return fig, shown, total_all


def draw_throughput_vs_batch(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    steps = step_cases(frame)
    if "batch_size" not in steps or steps.empty:
        return None
    fig, shown, total = _line_figure(steps, axes, x="batch_size", y="images_per_s", yerr="images_per_s_iqr",
                                     xlabel="batch size (images per step)", ylabel="images/s (median)", logx=True)
    if fig is None:
        return None
    return fig, ("Median throughput per batch size; one line per configuration family (the axes that differ), "
                 "error bars span the IQR of the timed rounds." + _cut_note(shown, total, "families"))


def _resolution_ticks(rows: pd.DataFrame) -> tuple[list[float], list[str]]:
    pairs = rows[["_side", "resolution"]].drop_duplicates().sort_values("_side")
    return list(pairs["_side"]), [str(r) for r in pairs["resolution"]]


def draw_throughput_vs_resolution(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    steps = step_cases(frame)
    if not {"height", "width", "resolution"} <= set(steps.columns) or steps.empty:
        return None
    # x is the side of a square with the same pixel count, so 224x244 sits between 224 and 244.
    steps = steps.assign(_side=np.sqrt(steps["height"].astype(float) * steps["width"].astype(float)))
    fig, shown, total = _line_figure(steps, [a for a in axes if a != "resolution"], x="_side", y="images_per_s",
                                     yerr="images_per_s_iqr", xlabel="input resolution, pixels (HxW)",
                                     ylabel="images/s (median)", xticks=_resolution_ticks)
    if fig is None:
        return None
    return fig, ("Median throughput per input resolution; one line per configuration family, error bars span "
                 "the IQR." + _cut_note(shown, total, "families"))


# Plain axis labels for the saved memory kinds (docs/saved-run-format.md); the caption names the kind.
MEMORY_LABELS = {
    "cpu_rise_over_idle_worker": "memory the case added (peak RSS over its idle worker)",
    "cpu_peak_rss_worker": "peak resident memory of the case's worker",
    "cpu_peak_rss": "peak resident memory of the whole process",
    "cuda_max_allocated": "peak GPU memory allocated",
    "cuda_max_reserved_cudagraphs": "peak GPU memory reserved (CUDA graphs)",
}


def draw_memory_vs_batch(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    """Memory per batch size: the CUDA allocator's peak, or on a CPU the case's own memory.

    Schema 2 runs (every case in its own worker) save, on a CPU, the worker's peak RSS during
    the rounds and its rise over the idle built worker (``memory_rise_bytes``): the rise is the
    case's own memory, so it is what is drawn. Schema 1 runs saved the whole pytest process's
    RSS, which includes every earlier case: drawn as such, and labelled.
    """
    steps = step_cases(frame)
    if "peak_memory_bytes" not in steps or "batch_size" not in steps:
        return None
    steps = steps.copy()
    rise = steps["memory_rise_bytes"] if "memory_rise_bytes" in steps else pd.Series(float("nan"), index=steps.index)
    kind = steps.get("memory_kind", pd.Series(None, index=steps.index, dtype=object))
    use_rise = (kind == "cpu_peak_rss_worker") & rise.notna()
    steps["_memory"] = steps["peak_memory_bytes"].where(~use_rise, rise)
    steps["_memory_kind"] = kind.where(~use_rise, "cpu_rise_over_idle_worker")
    steps = steps[steps["_memory"].notna()]
    if steps.empty:
        return None
    kinds = sorted(str(k) for k in steps["_memory_kind"].dropna().unique()) or ["unknown"]
    ylabel = " / ".join(MEMORY_LABELS.get(k, k.replace("_", " ")) for k in kinds) + ", MiB"
    fig, shown, total = _line_figure(steps, axes, x="batch_size", y="_memory", yerr=None,
                                     xlabel="batch size (images per step)", ylabel=ylabel,
                                     scale=1 / MIB, logx=True)
    if fig is None:
        return None
    notes = {
        "cpu_rise_over_idle_worker": "cpu_rise_over_idle_worker is the case's own memory: the kernel's peak RSS of its "
                                     "worker during the timed rounds minus the worker's RSS once built, before its first "
                                     "step (the peak RSS itself is in the case table). ",
        "cpu_peak_rss": "cpu_peak_rss (runs of schema 1) is the whole process's resident memory sampled during the case, "
                        "so it includes the Python runtime and every earlier case. ",
        "cuda_max_allocated": "cuda_max_allocated is torch.cuda.max_memory_allocated over the rounds (CUDA-graph cases "
                              "keep intermediates in a private pool it does not show). ",
        "cuda_max_reserved_cudagraphs": "cuda_max_reserved_cudagraphs (CUDA-graph cases, reduce-overhead and "
                                        "max-autotune) is torch.cuda.max_memory_reserved, which includes the graphs' "
                                        "private pool: an upper bound, not comparable with the allocated peak of "
                                        "eager cases. ",
    }
    what = "".join(notes[k] for k in kinds if k in notes)
    return fig, (f"Memory per batch size ({', '.join(kinds)}). {what}" + _cut_note(shown, total, "families"))


def draw_speedup_heatmap(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    steps = with_baseline(frame, axes)
    if steps.empty or not {"amp", "compile"} <= set(steps.columns):
        return None
    # Hold the cuDNN switches at the seed's values: the heatmap is about compile x AMP x layout.
    for axis in ("cudnn_benchmark", "deterministic", "tf32"):
        if axis in steps:
            steps = steps[steps[axis].map(lambda v, want=SEED_SPEED_SETTINGS[axis]: v == want or (v is None and not want))]
    steps = steps[steps["speedup"].notna()]
    if "channels_last" not in steps:
        steps = steps.assign(channels_last=False)
    shape = ["run_label", *shape_axes(axes)]
    panels = []
    for mode in steps["mode"].dropna().unique():
        rows = steps[steps["mode"] == mode]
        # One workload per mode: the one whose speed settings were swept the most.
        groups = rows.groupby([rows[c].map(str) for c in shape if c in rows], sort=False)
        best = max(groups, key=lambda kv: len(kv[1]))[1]
        # compile x AMP must have been swept; channels_last alone is not this figure's subject.
        if best[["amp", "compile"]].map(str).drop_duplicates().shape[0] < 2:
            continue
        panels.append((mode, best))
    if not panels:
        return None
    cl_values = sorted({bool(v) for _, rows in panels for v in rows["channels_last"]})
    fig, axs = _new(len(panels), len(cl_values), width=4.2 * len(cl_values) + 1.5, height=3.4 * len(panels))
    values = pd.concat([rows["speedup"] for _, rows in panels])
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(values.min(), 0.95), vmax=max(values.max(), 1.05))
    image = None
    captions = []
    for r, (mode, rows) in enumerate(panels):
        amps = [a for a in ("off", "bf16", "fp16") if a in set(rows["amp"])]
        compiles = [c for c in ("off", "default", "reduce-overhead", "max-autotune") if c in set(rows["compile"])]
        first = rows.iloc[0]
        captions.append(f"{mode}: {first['baseline_case_id']}")
        for c, cl in enumerate(cl_values):
            ax = axs[r, c]
            facet = rows[rows["channels_last"].map(bool) == cl]
            if facet.empty:  # this layout was swept for the other mode only: no empty axes
                ax.remove()
                continue
            grid = np.full((len(amps), len(compiles)), np.nan)
            for _, row in facet.iterrows():
                grid[amps.index(row["amp"]), compiles.index(row["compile"])] = row["speedup"]
            image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", norm=norm, aspect="auto")
            for i in range(len(amps)):
                for j in range(len(compiles)):
                    value = grid[i, j]
                    text = "not run" if math.isnan(value) else f"{value:.2f}×"
                    # Black on light cells, white on dark ones: readable on every cell of the scale.
                    color = "black" if math.isnan(value) else _text_color(image.cmap(norm(value)))
                    ax.text(j, i, text, ha="center", va="center", fontsize="small", color=color, fontweight="bold")
            ax.set_xticks(range(len(compiles)), [f"compile {c}" for c in compiles], fontsize="small")
            ax.set_yticks(range(len(amps)), [f"amp {a}" for a in amps], fontsize="small")
            ax.set_title(f"{mode}, {'channels_last' if cl else 'NCHW'}", fontsize="medium")
    fig.colorbar(image, ax=[ax for ax in axs.ravel() if ax.figure is not None], label="speedup over fp32 eager (same run)")
    return fig, ("Speedup in median throughput over the seed's fp32 eager step (amp off, compile off, NCHW) "
                 "of the same workload in the same run; 'not run' marks combinations absent from the run. "
                 "Baselines: " + "; ".join(captions) + ".")


# Relative luminance (ITU-R BT.601 weights) above which black text reads better than white.
# 0.5 is the midpoint of the 0-1 scale: RdYlGn's dark red and dark green ends fall below it,
# its yellow middle above.
TEXT_LUMINANCE_SWITCH = 0.5


def _text_color(rgba: Sequence[float]) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > TEXT_LUMINANCE_SWITCH else "white"


def draw_step_time_distributions(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    samples = samples_frame(runs)
    if samples.empty:
        return None
    multi_run = samples["run_label"].nunique() > 1
    samples = samples.assign(label=(samples["run_label"] + " " if multi_run else "") + samples["case_id"].map(str))
    modes = [m for m in samples["mode"].dropna().unique()] or [None]
    panels = []
    cut = False
    for mode in modes:
        rows = samples if mode is None else samples[samples["mode"] == mode]
        medians = rows.groupby("label", sort=False)["step_time_s"].median().sort_values()
        cut |= len(medians) > MAX_BARS
        labels = list(medians.index[:MAX_BARS])
        panels.append((mode, [rows.loc[rows["label"] == lab, "step_time_s"].to_numpy() * 1e3 for lab in labels], labels))
    height = max(3.0, 0.28 * sum(len(p[2]) for p in panels) + 1.2 * len(panels))
    fig, axs = _new(len(panels), 1, width=9.5, height=height)
    for ax, (mode, data, labels) in zip(axs[:, 0], panels):
        ax.boxplot(data, orientation="horizontal", tick_labels=[_short(l) for l in labels], showfliers=True)
        lo = min(d.min() for d in data)
        hi = max(d.max() for d in data)
        if lo > 0 and hi / lo > 20:  # a log axis keeps small and large cases readable together
            ax.set_xscale("log")
        ax.set_xlabel("time per step, ms (every timed round)")
        ax.set_title(str(mode) if mode else "all cases")
        ax.tick_params(axis="y", labelsize="x-small")
        ax.grid(True, axis="x", alpha=0.3)
    return fig, ("Distribution of every timed round per case (box: quartiles, whiskers: 1.5 IQR, points: outliers)."
                 + (f" Only the {MAX_BARS} fastest cases of each mode are drawn." if cut else ""))


MFU_REASON_CHARS = 60  # an annotation beside a bar; the caption holds the whole reason


def _mfu_reason(row: pd.Series) -> str:
    """The reason the case's run saved for an MFU above 1 (its MFU warning), or that it saved none."""
    for warning in str(row.get("warnings") or "").split("; "):
        if warning.startswith("MFU") and ": " in warning:
            return warning.split(": ", 1)[1]
    return "no reason saved with the case: check the peak it was divided by"


def _short_reason(reason: str) -> str:
    return reason if len(reason) <= MFU_REASON_CHARS else reason[: MFU_REASON_CHARS - 1].rsplit(" ", 1)[0] + " …"


def draw_mfu(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    steps = step_cases(frame)
    if "mfu" not in steps:
        return None
    rows = steps[steps["mfu"].notna()].sort_values("mfu", ascending=False)
    if rows.empty:
        return None
    total = len(rows)
    rows = rows.head(MAX_BARS).iloc[::-1]
    multi_run = frame["run_label"].nunique() > 1
    labels = [_short((f"{r['run_label']} " if multi_run else "") + str(r["case_id"])) for _, r in rows.iterrows()]
    fig, axs = _new(1, 1, width=9.5, height=max(2.5, 0.3 * len(rows) + 1.2))
    ax = axs[0, 0]
    colors = ["tab:blue" if m == "train" else "tab:orange" for m in rows["mode"]]
    ax.barh(range(len(rows)), rows["mfu"] * 100, color=colors)
    ax.set_yticks(range(len(rows)), labels, fontsize="x-small")
    ax.set_xlabel("MFU, % of the hardware's peak (blue: train, orange: inference)")
    ax.axvline(100, color="black", linewidth=1, linestyle="--")  # the peak itself: nothing should pass it
    above = [(i, float(r["mfu"]), _mfu_reason(r)) for i, (_, r) in enumerate(rows.iterrows()) if r["mfu"] > 1]
    for i, m, reason in above:
        ax.annotate(f"{m * 100:.0f}%, above the peak: {_short_reason(reason)}", (m * 100, i), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize="x-small")
    if above:
        ax.set_xlim(0, max(m for _, m, _ in above) * 100 * 2.2)
    reasons = sorted({reason for _, _, reason in above})
    ax.grid(True, axis="x", alpha=0.3)
    sources = sorted({str(s) for s in rows.get("mfu_peak_source", pd.Series(dtype=str)).dropna()})
    peaks = sorted({float(p) for p in rows.get("mfu_peak_tflops", pd.Series(dtype=float)).dropna()})
    return fig, ("Model FLOPs utilisation: achieved TFLOP/s (FLOPs per image from alexnet/arch.py, equal to "
                 "torch.utils.flop_counter's count, x median images/s) over the hardware's peak for the case's dtype "
                 f"({', '.join(f'{p * 1e3:.0f} GFLOP/s' for p in peaks) or 'unknown'}; the dashed line is 100%). "
                 f"The peak: {'; '.join(sources) or 'unknown'}."
                 + (f" {len(above)} case(s) above 100%, each marked with the reason its run saved: "
                    + "; ".join(reasons) + "." if above else "")
                 + (f" Top {MAX_BARS} of {total} cases." if total > MAX_BARS else ""))


def draw_layers(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    cases = []
    for run in runs:
        for bench in run.benchmarks:
            extra = bench.get("extra_info") or {}
            layers = [row for row in extra.get("layers") or [] if isinstance(row, dict)]
            if layers:
                cases.append((run.label, extra.get("case_id", bench.get("name")), (extra.get("config") or {}).get("mode"), layers))
    if not cases:
        return None
    total = len(cases)
    cases.sort(key=lambda c: c[2] != "train")  # train first: it has both halves of the bar
    cases = cases[:MAX_LAYER_CASES]
    n_rows = max(len(c[3]) for c in cases)
    fig, axs = _new(1, len(cases), width=4.8 * len(cases) + 1, height=max(4.0, 0.26 * n_rows + 1.5))
    for ax, (label, case_id, mode, layers) in zip(axs[0], cases):
        layers = layers[::-1]  # barh draws bottom-up; the network reads top-down
        names = [_short(r.get("layer", r.get("index", "?"))) for r in layers]
        # Remainder rows (loss, zero_grad, optimizer, ...) are time outside the net's layers:
        # one grey bar, not a forward/backward split that would misname an optimizer step.
        rest = np.array([r.get("kind") == "remainder" or r.get("group") == "remainder" for r in layers])
        fwd = np.array([float(r.get("fwd_ms") or 0.0) for r in layers])
        bwd = np.array([float(r.get("bwd_ms") or 0.0) for r in layers])
        ax.barh(names, np.where(rest, 0.0, fwd), color="tab:blue", label="forward")
        if (bwd * ~rest).any():
            ax.barh(names, np.where(rest, 0.0, bwd), left=np.where(rest, 0.0, fwd), color="tab:red", label="backward")
        if rest.any():
            ax.barh(names, np.where(rest, fwd + bwd, 0.0), color="tab:gray", label="outside the layers")
        ax.set_xlabel("ms per step")
        ax.set_title(_short(case_id), fontsize="small")
        ax.tick_params(axis="y", labelsize="x-small")
        ax.legend(fontsize="small")
        ax.grid(True, axis="x", alpha=0.3)
    return fig, ("Per-layer forward and backward time per step from torch.profiler (extra_info.layers), "
                 "in network order from the top; grey rows are time outside the layers (loss, optimizer, ...)." + (f" {len(cases)} of {total} profiled cases are drawn." if total > len(cases) else ""))


def draw_data_wait(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    if "kind" not in frame or "data_wait_fraction" not in frame:
        return None
    rows = frame[(frame["kind"] == "loop") & frame["data_wait_fraction"].notna()]
    if rows.empty:
        return None
    rows = rows.head(MAX_BARS)
    # case_id does not name the input pipeline, and loop cases differ by exactly that.
    blank = pd.Series("", index=rows.index)
    pipeline = rows.get("pipeline", blank).fillna("")
    workers = rows.get("workers", blank).fillna("")
    labels = [_short(f"{c} ({p}, {w} workers)" if p != "" else str(c))
              for c, p, w in zip(rows["case_id"], pipeline, workers)]
    wait = rows["data_wait_fraction"].astype(float).clip(0, 1).to_numpy() * 100
    fig, axs = _new(1, 1, width=9.0, height=max(2.5, 0.35 * len(rows) + 1.2))
    ax = axs[0, 0]
    ax.barh(labels, wait, color="tab:gray", label="waiting for data")
    ax.barh(labels, 100 - wait, left=wait, color="tab:green", label="compute")
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of training-loop time")
    ax.tick_params(axis="y", labelsize="x-small")
    ax.legend(fontsize="small")
    return fig, "Share of training-loop time spent waiting for the next batch versus computing (loop cases)."


# Plain labels, with units, for the telemetry series bench saves (bench/instruments/telemetry.py).
TIMELINE_LABELS = {
    "gpu_util": "GPU busy, %",
    "mem_util": "GPU memory bus busy, %",
    "power_w": "GPU power, W",
    "sm_clock_mhz": "SM clock, MHz",
    "mem_clock_mhz": "memory clock, MHz",
    "temperature_c": "GPU temperature, °C",
    "cpu_percent": "worker CPU, % of one core",
    "system_cpu_percent": "machine CPU, % of all cores",
    "rss_bytes": "worker resident memory, MiB",
}
# Units from a key's suffix, for a series without a label above.
_UNIT_SUFFIXES = (("_bytes", "MiB"), ("_percent", "%"), ("_util", "%"), ("_w", "W"), ("_mhz", "MHz"), ("_c", "°C"))


def _timeline_label(key: str) -> str:
    if key in TIMELINE_LABELS:
        return TIMELINE_LABELS[key]
    for suffix, unit in _UNIT_SUFFIXES:
        if key.endswith(suffix):
            return f"{key[: -len(suffix)].replace('_', ' ')}, {unit}"
    return key.replace("_", " ")


def _timeline_keys(series: Sequence[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for sample in series:
        for key, value in sample.items():
            if key != "t" and isinstance(value, (int, float)) and not isinstance(value, bool):
                keys.setdefault(key, None)
    ordered = [k for k in TIMELINE_ORDER if k in keys] + [k for k in keys if k not in TIMELINE_ORDER]
    return ordered[:MAX_TIMELINE_KEYS]


def draw_telemetry(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    cases = []
    for run in runs:
        for bench in run.benchmarks:
            extra = bench.get("extra_info") or {}
            tel = extra.get("telemetry") or {}
            series = [s for s in tel.get("series") or [] if isinstance(s, dict) and isinstance(s.get("t"), (int, float))]
            if len(series) >= 2:
                cases.append((tel.get("kind"), extra.get("case_id", bench.get("name")), series))
    if not cases:
        return None
    # NVML timelines (GPU utilisation, power, clocks) are the interesting ones when a run has them.
    kind = "nvml" if any(c[0] == "nvml" for c in cases) else cases[0][0]
    cases = [c for c in cases if c[0] == kind]
    total = len(cases)
    cases = cases[:MAX_TIMELINE_CASES]
    keys = _timeline_keys([s for c in cases for s in c[2]])
    if not keys:
        return None
    fig, axs = _new(len(keys), 1, width=9.0, height=2.0 * len(keys) + 1.0)
    for ax, key in zip(axs[:, 0], keys):
        in_mib = key.endswith("_bytes")
        for _, case_id, series in cases:
            points = [(s["t"], s[key]) for s in series if isinstance(s.get(key), (int, float))]
            if points:
                t, v = zip(*points)
                ax.plot(t, np.array(v, dtype=float) / (MIB if in_mib else 1), label=_short(case_id))
        ax.set_ylabel(_timeline_label(key), fontsize="small")
        ax.grid(True, alpha=0.3)
    axs[-1, 0].set_xlabel("time since the case's sampling started, s")
    axs[0, 0].legend(fontsize="x-small")
    return fig, (f"{kind} telemetry sampled during each case (one line per case, each from its own start)."
                 + (f" {len(cases)} of {total} cases are drawn." if total > len(cases) else ""))


def draw_scaling(frame: pd.DataFrame, axes: Sequence[str], runs: Sequence[Run]) -> tuple[Figure, str] | None:
    """Data-parallel scaling (`alexnet-bench ddp` runs): total images/s against world size.

    Drawn only when world size varies between cases that are otherwise the same. The dashed
    line is ideal weak scaling (the 1-process figure times N); each point is labelled with
    its measured scaling efficiency.
    """
    if "world_size" not in frame or "images_per_s" not in frame or frame["world_size"].nunique(dropna=True) < 2:
        return None
    rows = frame[frame["world_size"].notna() & frame["images_per_s"].notna()]
    others = [a for a in _varying(rows, axes, exclude=("world_size", "dist_backend")) if a != "run_label"]
    keys = ["run_label", *others]
    fig, axs = _new(1, 1, width=8.0, height=4.5)
    ax = axs[0, 0]
    drawn = 0
    for key, group in rows.groupby(keys, dropna=False, sort=False):
        group = group.sort_values("world_size")
        ws = group["world_size"].astype(int).to_numpy()
        ips = group["images_per_s"].astype(float).to_numpy()
        if len(set(ws)) < 2 or 1 not in set(ws):
            continue
        base = float(ips[ws == 1][0])
        label = _short(" ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))))
        line = ax.plot(ws, ips, "-o", label=label)[0]
        ax.plot(ws, base * ws, "--", color=line.get_color(), alpha=0.5)
        for w, v in zip(ws, ips):
            if w != 1:
                ax.annotate(f"{100 * v / (base * w):.0f}%", (w, v), textcoords="offset points", xytext=(4, -12),
                            fontsize="small")
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("processes (world size)")
    ax.set_ylabel("total images/s (median)")
    ax.set_xticks(sorted(rows["world_size"].astype(int).unique()))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    return fig, ("Weak scaling with DistributedDataParallel: total throughput per world size (solid), ideal "
                 "scaling from the 1-process baseline of the same invocation (dashed), and the measured "
                 "efficiency at each point.")


# slug -> (title, drawer); the order is the order in the report.
FIGURES: dict[str, tuple[str, Callable[..., tuple[Figure, str] | None]]] = {
    "speedup_heatmap": ("Speedup: compile × AMP × channels_last", draw_speedup_heatmap),
    "throughput_vs_batch": ("Throughput vs batch size", draw_throughput_vs_batch),
    "throughput_vs_resolution": ("Throughput vs resolution", draw_throughput_vs_resolution),
    "memory_vs_batch": ("Memory vs batch size", draw_memory_vs_batch),
    "mfu": ("Model FLOPs utilisation", draw_mfu),
    "step_time_distributions": ("Step-time distributions", draw_step_time_distributions),
    "layers": ("Per-layer forward and backward time", draw_layers),
    "data_wait": ("Data wait vs compute (training loop)", draw_data_wait),
    "scaling": ("Data-parallel scaling (DDP)", draw_scaling),
    "telemetry": ("Telemetry timelines", draw_telemetry),
}


def draw_all(runs: Sequence[Run], frame: pd.DataFrame, axes: Sequence[str], *, out_dir: Path) -> list[ReportFigure]:
    """Draw every figure the data supports into ``out_dir`` as PNG; return them in report order."""
    saved = []
    # Names from saved runs are plain text in figures, never mathtext ("$" in a name must not parse).
    with matplotlib.rc_context({"text.parse_math": False, "font.size": 9}):
        for slug, (title, drawer) in FIGURES.items():
            drawn = drawer(frame, axes, runs)
            if drawn is None:
                continue
            fig, caption = drawn
            file = f"{slug}.png"
            fig.savefig(Path(out_dir) / file, format="png", dpi=DPI)
            saved.append(ReportFigure(file=file, title=title, caption=caption))
    return saved
