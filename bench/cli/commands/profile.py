"""``alexnet-bench profile``: per-layer forward/backward time of one config's step.

Prints the table in network order with its total and coverage, and writes into ``--out``:
``layers.csv`` (one row per layer, then the remainder rows), ``trace.json`` (Chrome trace,
opens in Perfetto or chrome://tracing), ``layers.png`` (forward and backward stacked per
layer) and ``profile.json`` (the same rows plus step figures and the telemetry of the run).

The telemetry sampler (and so the energy per image on a GPU) covers the profiled steps only:
it starts right before the first recorded step and stops right after the last one, so the
build, the warm-up, the FLOP count, the unprofiled steps and the trace export are outside
it. Those steps run under the profiler, so their energy includes its overhead, and a few
steps are far shorter than the several seconds NVML's energy counter resolves well; the
output says both. For a J/image figure to rely on, use the benchmark suite's telemetry
window.

``--out`` follows the one output-folder policy (`bench.cli.outdir`, docs/cli.md): the files are
built in a temporary sibling and renamed into place when complete; an earlier profile there is
replaced, a folder holding anything else is refused before any work.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli.commands.options import add_config_options, config_from_args, option_defaults
from bench.cli.outdir import POLICY, check_out_dir, write_out_dir

if TYPE_CHECKING:  # the profiler imports torch; keep `--help` fast
    from bench.instruments.profiling import LayerProfile

NAME = "profile"
HELP = "per-layer forward/backward time, FLOPs and memory of one step (torch.profiler), plus device telemetry"

# Small enough to profile in seconds on a 2-core CPU; every config flag can change it.
PROFILE_DEFAULTS = option_defaults(device="cpu", batch_size=16, resolution=(128, 128))
OUTPUT_FILES = ("layers.csv", "trace.json", "layers.png", "profile.json")
CSV_COLUMNS = ("index", "layer", "kind", "group", "out_shape", "params", "flops", "fwd_flops", "bwd_flops",
               "fwd_ms", "bwd_ms", "total_ms", "act_bytes", "gflops_per_s")

__all__ = ["NAME", "HELP", "add_arguments", "run", "write_csv", "plot_layers"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_options(p, defaults=PROFILE_DEFAULTS)
    g = p.add_argument_group("profiling")
    g.add_argument("--out", default=None, metavar="DIR",
                   help=f"folder for {', '.join(OUTPUT_FILES)} (default: print the table only): {POLICY}")
    g.add_argument("--warmup", type=int, default=2, help="unprofiled warm-up steps before anything is timed (default 2)")
    g.add_argument("--steps", type=int, default=3, help="profiled steps; twice as many unprofiled ones are timed for the overhead (default 3)")
    g.add_argument("--interval", type=float, default=0.1,
                   help="telemetry sampling interval in seconds (NVML on CUDA, psutil on CPU; default 0.1)")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="raise")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_COLUMNS})


def plot_layers(prof: LayerProfile, path: Path) -> None:
    """Horizontal bars, one per row in network order, forward and backward stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = prof.rows
    labels = [f"{r['layer']} ({r['kind']})" if r["group"] == "layer" else r["layer"] for r in rows]
    fwd = [r["fwd_ms"] for r in rows]
    bwd = [r["bwd_ms"] for r in rows]
    ys = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.6))
    # Remainder rows are drawn paler: they are not layers and do not count toward coverage.
    alpha = [1.0 if r["group"] == "layer" else 0.45 for r in rows]
    for y, f, b, a in zip(ys, fwd, bwd, alpha):
        ax.barh(y, f, color="tab:blue", alpha=a, label="forward" if y == 0 else None)
        ax.barh(y, b, left=f, color="tab:orange", alpha=a, label="backward" if y == 0 else None)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()  # network order, top to bottom
    unit = "CPU wall" if prof.time_kind == "cpu_wall" else "CUDA kernel"
    ax.set_xlabel(f"ms per step ({unit} time, mean of {prof.steps} profiled step(s))")
    ax.set_title(f"{prof.cfg.case_id()}\nlayers cover {100 * prof.coverage:.1f}% of a {prof.step_ms:.1f} ms profiled step",
                 fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _telemetry_lines(tel: dict, *, steps: int, images: int) -> list[str]:
    s = tel["summary"]
    if tel["kind"] == "unavailable":
        return [f"telemetry: not available ({tel['reason']})"]
    window = (f"over the {steps} profiled step(s) only ({images} images, {tel['window_s']:.2f} s, "
              "profiler overhead included)")
    if tel["kind"] == "psutil":
        # psutil's process share counts 100% per core; both figures here are shares of the machine.
        cores = s["cpu_count"] or 1
        lines = [f"telemetry (psutil, every {tel['interval_s']} s) {window}: CPU use of the machine ({cores} cores): "
                 f"this process {min(s['cpu_percent_mean'] / cores, 100):.0f}%, all processes {s['system_cpu_percent_mean']:.0f}%; "
                 f"peak RSS {s['rss_peak_bytes'] / 2**20:.0f} MiB"]
    else:
        def fmt(v: float | None, spec: str) -> str:
            return "n/a" if v is None else format(v, spec)

        lines = [f"telemetry (NVML, every {tel['interval_s']} s) {window}: GPU busy {fmt(s['gpu_util_mean'], '.0f')}% "
                 f"(share of time a kernel ran; not SM occupancy), mean power {fmt(s['power_mean_w'], '.0f')} W "
                 f"({s['power_mean_source'] or 'n/a'}), energy {fmt(s['energy_j_per_image'], '.4f')} J/image "
                 f"(energy counter), SM clock {fmt(s['sm_clock_mean_mhz'], '.0f')} MHz, "
                 f"max {fmt(s['temperature_max_c'], '.0f')} C, throttle: {', '.join(s['throttle_reasons']) or 'none'}"]
        lines += [f"telemetry: {field} unavailable: {why}" for field, why in tel.get("unavailable", {}).items()]
    lines += [f"telemetry note: {n}" for n in tel.get("notes", [])]
    return lines


def run(args: argparse.Namespace) -> int:
    from bench.instruments.profiling import profile_layers
    from alexnet.runtime import cpu_has_bf16, unsupported_reason
    from bench.instruments.telemetry import Sampler

    cfg = config_from_args(args)
    sampler = Sampler(cfg.device, interval_s=args.interval)  # validates --interval
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} is not valid; it must be an integer >= 0")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps} is not valid; it must be an integer >= 1")
    # Asking for --amp bf16 here is asking explicitly, so emulated bf16 runs (with a warning).
    reason = unsupported_reason(cfg, allow_emulated_bf16=True)
    if reason:
        raise ValueError(f"config {cfg.case_id()} cannot run here: {reason}")
    out = Path(args.out).expanduser().absolute() if args.out else None
    if out is not None:
        check_out_dir(out, NAME, "profile")
    if cfg.amp == "bf16" and not cfg.is_cuda and not cpu_has_bf16():
        print("warning: bf16 on this CPU is emulated (no AVX512-BF16/AMX) and runs far slower than fp32")

    print(f"profiling {cfg.case_id()}: {args.warmup} warm-up, {args.steps} profiled and 2 x {args.steps} unprofiled steps")

    def measure(folder: Path | None) -> None:
        # The sampler covers the recorded steps only (see the module docstring).
        prof = profile_layers(cfg, warmup=args.warmup, steps=args.steps,
                              trace_path=folder / "trace.json" if folder is not None else None, around_profiled=sampler)
        images = args.steps * cfg.batch_size
        telemetry = sampler.result(images=images)
        print(prof.format_table())
        for line in _telemetry_lines(telemetry, steps=args.steps, images=images):
            print(line)
        if folder is not None:
            write_csv(prof.rows, folder / "layers.csv")
            plot_layers(prof, folder / "layers.png")
            with open(folder / "profile.json", "w") as f:
                json.dump({**prof.to_dict(), "telemetry": telemetry}, f, indent=1)

    if out is None:
        measure(None)
    else:
        write_out_dir(out, NAME, measure)
        print(f"wrote {', '.join(str(out / n) for n in OUTPUT_FILES)}")
    return 0
