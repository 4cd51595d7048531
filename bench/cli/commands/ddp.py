"""``alexnet-bench ddp``: data-parallel scaling of a training step, with torchrun and DDP.

In one invocation it runs the N-process run under ``python -m torch.distributed.run
--nproc-per-node N`` and then the 1-process baseline (a plain process, no process group),
both with the worker in `bench.ddp.rank` and the same thread count per process. It prints per-rank
and total images/s, the scaling efficiency against the baseline and the all-reduce share of
the step, and saves both cases as one pytest-benchmark run (docs/saved-run-format.md).

A rank that fails makes the command exit 3 (failed; 1 is only ever a regression) with the
failing rank's error; a run that does not finish within ``--timeout`` is stopped (torchrun
first, then any worker left) and the command exits 3. torchrun and DDP do all the launching and communicating: nothing here
replaces them. This module parses, prints and saves; the launches and their stopping are
`bench.ddp.launch`'s.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.cli.commands.options import add_config_options, config_from_args
from bench.cli.errors import EXIT_FAILED
from alexnet.config import RunConfig

NAME = "ddp"
HELP = "data-parallel scaling with torchrun + DistributedDataParallel (nccl on GPU, gloo on CPU)"

__all__ = ["NAME", "HELP", "add_arguments", "run", "save_run"]

DEFAULT_STEPS = 20
DEFAULT_WARMUP = 2
DEFAULT_TIMEOUT_S = 600.0
# pytest-benchmark wants >= 10 rounds for its statistics to mean much (saved-run-format.md).
MIN_ROUNDS = 10
# IQR/median above this gets a warning instead of a falsely precise figure (the suite's
# runrecord.samples.NOISY_REL_IQR).
NOISY_IQR = 0.10
_SAVE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# --- arguments ------------------------------------------------------------------------------


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data parallel")
    g.add_argument("--nproc", type=int, required=True, help="processes (ranks) on this machine: torchrun --nproc-per-node N")
    g.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"timed steps per run (default {DEFAULT_STEPS})")
    g.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help=f"untimed steps first (default {DEFAULT_WARMUP})")
    g.add_argument(
        "--threads", type=int, default=None,
        help="torch threads per process, the same in the baseline and every rank (default: CPUs // nproc)",
    )
    g.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds each launch may take, and the process-group timeout (default {DEFAULT_TIMEOUT_S:g})")
    g.add_argument("--save", default="ddp", help="saved run name: STORAGE/<machine_id>/NNNN_<NAME>.json (default ddp)")
    g.add_argument("--storage", default=".benchmarks", help="run storage folder, or file://DIR (default .benchmarks)")
    add_config_options(p)


def _validate(args: argparse.Namespace) -> tuple[RunConfig, RunConfig, int]:
    """The baseline config, the N-process config, and threads per process; ValueError if bad."""
    from alexnet.runtime import unsupported_reason

    if args.nproc < 1:
        raise ValueError(f"--nproc {args.nproc} is not valid; it must be an integer >= 1")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps} is not valid; it must be an integer >= 1")
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} is not valid; it must be an integer >= 0")
    if not args.timeout > 0:
        raise ValueError(f"--timeout {args.timeout:g} is not valid; it must be > 0 seconds")
    if not _SAVE_NAME_RE.match(args.save):
        raise ValueError(f"--save {args.save!r} is not valid; use letters, digits, '_', '.' and '-'")
    storage = Path(args.storage.removeprefix("file://"))
    if storage.exists() and not storage.is_dir():
        raise ValueError(f"--storage {args.storage!r} is not valid; it is a file, not a folder")
    threads = args.threads if args.threads is not None else max(1, _available_cpus() // args.nproc)
    if threads < 1:
        raise ValueError(f"--threads {threads} is not valid; it must be an integer >= 1")
    base = config_from_args(args, world_size=1, dist_backend="none")
    if base.mode != "train":
        raise ValueError(f"mode {base.mode!r} is not valid for ddp; it measures data-parallel training: use --mode train")
    reason = unsupported_reason(base, allow_emulated_bf16=True)
    if reason:
        raise ValueError(reason)
    if base.is_cuda:
        import torch

        first = torch.device(base.device).index or 0
        if first + args.nproc > torch.cuda.device_count():
            raise ValueError(
                f"--nproc {args.nproc} is not valid on {base.device}: one GPU per rank, and {torch.cuda.device_count()} are visible"
            )
    backend = "nccl" if base.is_cuda else "gloo"
    return base, base.replace(world_size=args.nproc, dist_backend=backend), threads


# --- figures --------------------------------------------------------------------------------


def _warnings(fig: dict[str, Any], *, steps: int) -> list[str]:
    w = []
    if steps < MIN_ROUNDS:
        w.append(f"only {steps} timed steps (fewer than {MIN_ROUNDS}): the median and IQR are rough")
    if fig["step_time_iqr_s"] / fig["step_time_s"] > NOISY_IQR:
        w.append(f"IQR/median of the step time is {fig['step_time_iqr_s'] / fig['step_time_s']:.0%} (above {NOISY_IQR:.0%})")
    if fig["world_size"] > 1 and not fig["params_identical"]:
        w.append("parameters differ between ranks after the timed steps")
    return w


# --- the saved run --------------------------------------------------------------------------


def _suite_machine_info(threads: int) -> dict[str, Any]:
    """The run's machine_info: pytest-benchmark's, the saved-run-format.md additions (bench.instruments.envinfo),
    threads as the ranks had them."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    from bench.instruments.envinfo import machine_info
    from runrecord.schema import suite_machine_info

    # torch_num_threads per process, as the worker set it (this parent's count differs).
    return suite_machine_info(pytest_benchmark_generate_machine_info(), machine_info(), torch_num_threads=threads)


def _entry(
    result: dict[str, Any], fig: dict[str, Any], *, baseline_ips: float, flops: int, steps: int, warmup: int,
    calibration: dict[str, Any] | None, gpu_name: str | None,
) -> dict[str, Any]:
    from bench.instruments.mfu import mfu_for
    from runrecord.samples import benchmark_stats
    from runrecord.schema import Case, Isolation

    cfg = RunConfig.from_flat(result["config"])
    case = cfg.case_id()
    world = fig["world_size"]
    efficiency = fig["images_per_s"] / (world * baseline_ips)
    achieved = flops * fig["images_per_s"] / 1e12
    # MFU per process: each rank has one device's (or `threads` cores') peak, so divide by N.
    mfu, peak, source = mfu_for(cfg, achieved_tflops=achieved / world, gpu_name=gpu_name, cpu_calibration=calibration)
    if source is not None:
        source += f"; per process ({world} process(es), each with this peak)"
    extra = {
        "config": result["config"],
        "case_id": case,
        "kind": "step",
        "images_per_s": fig["images_per_s"],
        "images_per_s_iqr": fig["images_per_s_iqr"],
        "step_time_s": fig["step_time_s"],
        "step_time_iqr_s": fig["step_time_iqr_s"],
        "rounds": steps,
        "warmup_rounds": warmup,
        "flops_per_image": flops,
        "achieved_tflops": achieved,
        "mfu": mfu, "mfu_peak_tflops": peak, "mfu_peak_source": source,
        "peak_memory_bytes": fig["peak_memory_bytes"],
        "peak_memory_reserved_bytes": None,
        "memory_kind": fig["memory_kind"],
        "compile_time_s": None,  # compilation, if any, happens in the untimed warm-up steps
        "correctness": None,
        "warnings": _warnings(fig, steps=steps),
        "telemetry": result.get("telemetry"),
        # Each launch is processes of its own: the N ranks under torchrun, the baseline a plain python.
        "isolation": Isolation(mode="process", launch="torchrun" if cfg.dist_backend != "none" else "python").to_json(),
        # data parallel
        "world_size": world,
        "dist_backend": cfg.dist_backend,
        "baseline_images_per_s": baseline_ips,
        "scaling_efficiency": efficiency,
        "speedup": fig["images_per_s"] / baseline_ips,
        "allreduce_fraction": fig["allreduce_fraction"],
        "allreduce_s_per_step": fig["allreduce_s_per_step"],
        "per_rank_images_per_s": fig["per_rank_images_per_s"],
        "per_rank_step_time_s": fig["per_rank_step_time_s"],
        "per_rank_allreduce_fraction": fig["per_rank_allreduce_fraction"],
        "threads_per_rank": fig["threads_per_rank"][0],
        "params_identical": fig["params_identical"],
        # SHA-256 of the weights before the first step (rank 0) and on each rank after the last.
        "param_digest_before": fig["param_digest_before"],
        "per_rank_param_digest": fig["per_rank_param_digest"],
        "backend_switches": result.get("backend_switches"),
        "data": "synthetic",
    }
    return Case(
        group="ddp",
        name=f"ddp[{case}]",
        fullname=f"alexnet-bench ddp::{case}",
        params={"case": case},
        param=case,
        extra_info=extra,
        options={"timer": "perf_counter", "rounds": steps, "warmup_rounds": warmup, "iterations": 1},
        stats=benchmark_stats(fig["step_s"]),
    ).to_json()


def save_run(
    benchmarks: list[dict[str, Any]], *, storage: str, name: str, threads: int, calibration: dict[str, Any] | None = None
) -> Path:
    """Save the run through the run record's store: ``storage/<machine_id>/NNNN_<name>.json``, never overwriting.

    ``rounds`` and ``warmup_rounds`` are the entries' (every entry has the command's --steps and
    --warmup); ``failed`` is empty, as a failing rank fails the command before anything is saved.
    """
    from pytest_benchmark import __version__ as pb_version

    from runrecord.gitinfo import commit_info
    from runrecord.schema import SCHEMA_VERSION, Case, RunRecord, Section
    from runrecord.store import RunStore

    cases = [Case.from_json(b, "ddp run", i) for i, b in enumerate(benchmarks)]
    rounds = {c.options.get("rounds") for c in cases}
    warmups = {c.options.get("warmup_rounds") for c in cases}
    section = Section(
        schema_version=SCHEMA_VERSION, preset="ddp",
        rounds=rounds.pop() if len(rounds) == 1 else None,
        warmup_rounds=warmups.pop() if len(warmups) == 1 else None,
        skipped=[], failed=[],
        isolation="process",  # every launch in processes of its own (torchrun's ranks, the plain baseline)
        calibration=calibration,
        calibrations={calibration.get("device", "cpu"): calibration} if calibration else {},
    )
    record = RunRecord(
        machine_info=_suite_machine_info(threads), benchmarks=cases, commit_info=commit_info(),
        datetime=datetime.now(timezone.utc).isoformat(), version=pb_version, alexnet=section,
    )
    return RunStore(storage).save(record, name)


# --- the command ----------------------------------------------------------------------------


def _print_report(base_fig: dict[str, Any], fig: dict[str, Any], entry: dict[str, Any], *, cfg: RunConfig, threads: int, steps: int, warmup: int) -> None:
    e = entry["extra_info"]
    n = fig["world_size"]
    print(f"ddp {cfg.case_id()}: {n} process(es) ({cfg.dist_backend}) against 1, {threads} thread(s) each, "
          f"{steps} timed steps after {warmup} warm-up, per-rank batch {cfg.batch_size} (weak scaling, synthetic data)")
    print(f"{'':24}{'images/s':>10}{'step ms':>10}{'all-reduce share':>18}")
    print(f"{'baseline, 1 process':24}{base_fig['images_per_s']:>10.1f}{base_fig['step_time_s'] * 1e3:>10.1f}{'-':>18}")
    for r in range(n):
        share = fig["per_rank_allreduce_fraction"][r]
        print(f"{f'rank {r}':24}{fig['per_rank_images_per_s'][r]:>10.1f}{fig['per_rank_step_time_s'][r] * 1e3:>10.1f}{share:>18.1%}")
    print(f"{f'total, {n} processes':24}{fig['images_per_s']:>10.1f}{fig['step_time_s'] * 1e3:>10.1f}{fig['allreduce_fraction']:>18.1%}")
    print(f"scaling efficiency: {e['scaling_efficiency']:.1%} "
          f"(total {fig['images_per_s']:.1f} / ({n} x baseline {base_fig['images_per_s']:.1f}) images/s)")
    print(f"all-reduce share: {fig['allreduce_fraction']:.1%} of the step had a gradient all-reduce in flight "
          f"(median {fig['allreduce_s_per_step'] * 1e3:.1f} ms per step; it overlaps the backward pass)")
    print(f"parameters identical on all ranks after the last step: {'yes' if fig['params_identical'] else 'NO'}")
    for w in e["warnings"]:
        print(f"warning: {w}")


def _calibrate(cfg: RunConfig, *, threads: int) -> tuple[dict[str, Any] | None, str | None]:
    """The run's fp32 GEMM calibration, timed here after the launches with one rank's threads."""
    import torch

    from bench.instruments.envinfo import gpu_info
    from bench.instruments.mfu import calibrate

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        calibration = calibrate(cfg.device)
    finally:
        torch.set_num_threads(saved)
    return calibration, gpu_info().get("gpu_name") if cfg.is_cuda else None


def run(args: argparse.Namespace) -> int:
    base_cfg, cfg, threads = _validate(args)
    steps, warmup, timeout = args.steps, args.warmup, args.timeout
    from alexnet.arch import flops_per_image

    from bench.ddp.launch import RunFailed, plan, run_launch

    with tempfile.TemporaryDirectory(prefix="alexnet-ddp-") as tmp:
        results = {}
        for launch in plan(base_cfg, cfg):
            print(f"running {launch.what} ...", flush=True)
            t0 = time.perf_counter()
            try:
                results[launch.key] = run_launch(launch, steps=steps, warmup=warmup, threads=threads, timeout_s=timeout,
                                                 workdir=Path(tmp))
            except RunFailed as exc:
                if exc.log_tail:
                    print(f"--- last lines of {launch.what}'s output ---\n{exc.log_tail}\n---", file=sys.stderr)
                print(f"alexnet-bench ddp: error: {exc}", file=sys.stderr)
                return EXIT_FAILED
            print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)

    from bench.ddp.rank import summarise

    base_fig, fig = summarise(results["baseline"]), summarise(results["ddp"])
    flops = flops_per_image(cfg.variant, cfg.resolution, train=True)
    calibration, gpu_name = _calibrate(cfg, threads=threads)
    common = dict(baseline_ips=base_fig["images_per_s"], flops=flops, steps=steps, warmup=warmup,
                  calibration=calibration, gpu_name=gpu_name)
    base_entry = _entry(results["baseline"], base_fig, **common)
    entry = _entry(results["ddp"], fig, **common)
    _print_report(base_fig, fig, entry, cfg=cfg, threads=threads, steps=steps, warmup=warmup)
    path = save_run([base_entry, entry], storage=args.storage, name=args.save, threads=threads, calibration=calibration)
    print(f"saved: {path}")
    if cfg.world_size > 1 and not fig["params_identical"]:
        print("alexnet-bench ddp: error: parameters differ between ranks after the timed steps", file=sys.stderr)
        return EXIT_FAILED
    return 0
