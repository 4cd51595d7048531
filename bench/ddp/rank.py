"""The per-rank worker of the data-parallel benchmark, run under torchrun.

``alexnet-bench ddp`` starts this module twice: once as a single plain process (the
baseline: no process group, no DDP) and once under
``python -m torch.distributed.run --nproc-per-node N -m bench.ddp.rank ...``. A user can run
the second form (or a multi-node torchrun) directly; see docs/ddp.md.

What one rank does:
- joins the process group torchrun describes in its environment (RANK, WORLD_SIZE,
  MASTER_ADDR, ...): nccl on GPUs (one GPU per local rank), gloo on CPU;
- builds the same `StepRunner` the benchmarks use, around a DistributedDataParallel model;
- weak scaling: every rank steps on its own batch of ``cfg.batch_size`` images (a different
  synthetic batch per rank, so unsynchronised gradients would make the ranks diverge);
- times each step between two synchronisations, and times every gradient all-reduce with a
  DDP communication hook (below);
- samples its own device's telemetry (`bench.instruments.telemetry.Sampler`): on a GPU over a
  window of at least 5 s of back-to-back steps after the timed ones (the same step count on
  every rank, from rank 0's timing), so NVML's energy counter has seconds of steady work, as
  the suite's cases do; on a CPU (its process, psutil) over its timed steps;
- gathers its timings, telemetry and a digest of its parameters to rank 0, which writes one
  JSON file. The run's energy per image is the sum of the ranks' energies over the sum of the
  ranks' images (`combine_telemetry`).

Which GPU: rank ``k`` uses ``cuda:<first + LOCAL_RANK>`` and its sampler asks NVML for the
device with that device's UUID (as torch reports it), so torch and NVML agree whatever the
numbering; ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is also set (unless the user chose) before torch
can initialise CUDA, so the indices agree too. The GPU path is untested on GPU.

The all-reduce hook does exactly what DDP does by default (``default_hooks.allreduce_hook``:
sum the bucket over ranks, divide by world size) and records when each bucket's all-reduce
was launched and when its future completed. The "all-reduce share" of a step is the wall
time during which at least one bucket was in flight, divided by the step time. It overlaps
with the backward pass, so it is not all added to the step; it is the time the network and
the collective were busy.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

# Before torch can initialise CUDA, so torch's device N is NVML's device N (docs/measurement-notes.md, "NVML").
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

import torch  # noqa: E402

from alexnet.config import RunConfig
from alexnet.runtime import StepRunner, backend_switches, seed_everything, synchronize

__all__ = [
    "FAIL_RANK_ENV",
    "AllreduceTimer",
    "busy_time",
    "combine_telemetry",
    "param_digest",
    "run_worker",
    "summarise",
    "format_summary",
    "main",
]

# Fault injection for the tests (and for anyone checking the failure path): the rank named
# here raises before its first step, as a crashing rank would.
FAIL_RANK_ENV = "ALEXNET_DDP_FAIL_RANK"
# The energy window on a GPU, as a suite case's (bench.suite.runner.DEFAULT_CUDA_TELEMETRY_S;
# docs/measurement-notes.md, "NVML"): NVML averages power over about a second, and the energy
# counter needs several seconds of steady work for a J/image figure worth keeping.
DDP_ENERGY_WINDOW_S = 5.0


def busy_time(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: time at least one was in flight."""
    total = 0.0
    cur_start = cur_end = None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


@dataclass
class AllreduceTimer:
    """State of the timing communication hook: one (start, end) pair per bucket all-reduce.

    On CPU the clock is ``time.perf_counter`` read when the hook launches the all-reduce and
    when its future's callback runs (gloo completes the future when the data has arrived).
    On CUDA a callback runs when the work is *enqueued*, so the clock is a pair of CUDA
    events instead: the start on the backward stream, the end on the stream the future's
    value is ready on; they are read after the step's synchronisation. (Untested on GPU.)
    """

    cuda: bool
    process_group: Any = None
    _pending: list[tuple[Any, Any]] = field(default_factory=list)

    # No annotations on purpose: DDP's register_comm_hook checks them against the real
    # classes, and `from __future__ import annotations` would make them strings.
    def hook(self, state, bucket):  # type: ignore[no-untyped-def]
        """Called by DDP as ``hook(state, bucket)`` for each gradient bucket; returns its future."""
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        start = self._now()
        slot: list[Any] = [start, None]
        self._pending.append(slot)  # type: ignore[arg-type]
        fut = default_hooks.allreduce_hook(self.process_group, bucket)

        def _done(f: "torch.futures.Future[torch.Tensor]") -> torch.Tensor:
            slot[1] = self._now()
            return f.value()

        return fut.then(_done)

    def _now(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def clear(self) -> None:
        self._pending.clear()

    def take(self, step_start: Any) -> list[tuple[float, float]]:
        """The intervals of the step just finished, in seconds since ``step_start``.

        Call after the step's synchronisation, so every future (and CUDA event) is done.
        """
        out = []
        for start, end in self._pending:
            if end is None:  # cannot happen after DDP's backward finished; keep it visible
                raise RuntimeError("an all-reduce future had not completed when the step ended")
            if self.cuda:
                out.append((step_start.elapsed_time(start) / 1e3, step_start.elapsed_time(end) / 1e3))
            else:
                out.append((start - step_start, end - step_start))
        self._pending.clear()
        return out


def param_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order: equal digests mean bitwise-equal weights."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _peak_memory(cfg: RunConfig, device: str) -> tuple[int, str]:
    if cfg.is_cuda:
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    # ru_maxrss is KiB on Linux (bytes on macOS): the process's peak resident set.
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale, "cpu_peak_rss"


def _telemetry(device: str):
    """This rank's `bench.instruments.telemetry.Sampler` for its own device (its GPU, or its process on CPU)."""
    from bench.instruments.telemetry import Sampler

    return Sampler(device)


# How each rank's telemetry summary figure combines into the run's. Every rank samples its own
# GPU (or its own process), so energies, powers and CPU shares add up; utilisation and the
# machine-wide CPU share are averaged; peaks and the window take the maximum.
_COMBINE: dict[str, str] = {
    "energy_j": "sum",
    "power_mean_w": "sum",
    "cpu_percent_mean": "sum",
    "gpu_util_mean": "mean",
    "mem_util_mean": "mean",
    "sm_clock_mean_mhz": "mean",
    "system_cpu_percent_mean": "mean",
    "temperature_max_c": "max",
    "rss_peak_bytes": "max",
    "process_memory_used_bytes": "max",
    "window_s": "max",
    "throttle_reasons": "union",
}


def combine_telemetry(ranks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run's ``telemetry`` dict from every rank's (``rank["telemetry"]``, ``rank["images"]``).

    ``energy_j_per_image`` = the sum of the ranks' energies / the sum of their images; it and
    every summed figure are None unless every rank measured it. ``per_rank`` keeps each rank's
    own telemetry; ``series`` is rank 0's, for the report's timeline.
    """
    tels = [r["telemetry"] for r in ranks]
    images = sum(int(r["images"]) for r in ranks)
    per_rank = [{"rank": r["rank"], "device": r["device"], "host": r["host"], "images": r["images"], **r["telemetry"]}
                for r in ranks]
    ok = [t for t in tels if t["kind"] != "unavailable"]
    notes = [f"rank {r['rank']}: telemetry unavailable ({t['reason']})" for r, t in zip(ranks, tels)
             if t["kind"] == "unavailable"]
    if not ok:
        reasons = sorted({t["reason"] for t in tels})
        return {"kind": "unavailable", "reason": "; ".join(reasons), "interval_s": tels[0].get("interval_s"),
                "window_s": None, "summary": {}, "series": [], "unavailable": {}, "notes": notes, "per_rank": per_rank}
    summary: dict[str, Any] = {"ranks": len(ranks), "images": images}
    for key, how in _COMBINE.items():
        if key not in ok[0]["summary"]:
            continue  # NVML figures on CPU, psutil figures on GPU
        values = [t["summary"].get(key) for t in ok]
        if len(values) < len(tels) and how == "sum":
            summary[key] = None  # a rank without it: a sum would be short
        elif how == "union":
            summary[key] = list(dict.fromkeys(v for vs in values if vs for v in vs)) if values else None
        elif not values or any(v is None for v in values):
            summary[key] = None
        elif how == "sum":
            summary[key] = sum(values)
        elif how == "mean":
            summary[key] = sum(values) / len(values)
        else:
            summary[key] = max(values)
    if "energy_j" in summary:
        energy = summary["energy_j"]
        summary["energy_j_per_image"] = None if energy is None or images <= 0 else energy / images
        summary["energy_source"] = None if energy is None else "counter (sum over ranks)"
    return {
        "kind": ok[0]["kind"],
        "reason": None,
        "interval_s": ok[0].get("interval_s"),
        "window_s": summary["window_s"],
        "summary": summary,
        "series": tels[0].get("series", []),
        "unavailable": {f"rank{r['rank']}.{k}": v for r, t in zip(ranks, tels) for k, v in (t.get("unavailable") or {}).items()},
        "notes": notes + [f"rank {r['rank']}: {n}" for r, t in zip(ranks, tels) for n in (t.get("notes") or [])],
        "per_rank": per_rank,
    }


def run_worker(cfg: RunConfig, *, steps: int, warmup: int, threads: int | None, timeout_s: float,
               window_s: float | None = None) -> dict[str, Any] | None:
    """Run this rank's benchmark; return the gathered result on rank 0, None on other ranks.

    ``window_s``: the energy window after the timed steps (`energy_window_s`: 5 s on CUDA, none
    on a CPU); 0 samples the timed steps instead.

    ``cfg.world_size == 1`` with ``dist_backend == "none"`` is the baseline: no process
    group and a plain model. Otherwise the process group comes from torchrun's environment.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps {steps} / warmup {warmup} are not valid; steps must be >= 1 and warmup >= 0")
    if cfg.mode != "train":
        raise ValueError(f"mode {cfg.mode!r} is not valid for a data-parallel run; use mode 'train'")
    if threads is not None:  # alexnet-bench ddp passes the same count to the baseline and every rank
        torch.set_num_threads(threads)
    distributed = cfg.dist_backend != "none"
    rank, local_rank, world = 0, 0, 1
    if distributed:
        import torch.distributed as dist

        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        world = int(os.environ["WORLD_SIZE"])
        if world != cfg.world_size:
            raise ValueError(f"torchrun started {world} processes but the config says world_size {cfg.world_size}")
    device = cfg.device
    if cfg.is_cuda:
        # One GPU per local rank; "cuda:K" in the config offsets the first one.
        base = torch.device(cfg.device).index or 0
        device = f"cuda:{base + local_rank}"
        torch.cuda.set_device(device)
    if distributed:
        # The timeout makes a rank whose peer died raise instead of waiting forever.
        dist.init_process_group(backend=cfg.dist_backend, timeout=timedelta(seconds=timeout_s))
    try:
        return _measure(cfg, device=device, rank=rank, world=world, steps=steps, warmup=warmup, distributed=distributed,
                        window_s=window_s)
    finally:
        if distributed:
            dist.destroy_process_group()


def energy_window_s(cfg: RunConfig) -> float:
    """Seconds of back-to-back steps after the timed ones, for NVML's energy counter: as the
    suite's cases (`DDP_ENERGY_WINDOW_S`); 0 on a CPU, where the timed steps are the window."""
    return DDP_ENERGY_WINDOW_S if cfg.is_cuda else 0.0


def _energy_window(runner: Any, x: torch.Tensor, y: torch.Tensor, *, device: str, seconds: float,
                   step_s: list[float], distributed: bool) -> tuple[dict[str, Any], int, int]:
    """Back-to-back steps for at least ``seconds`` inside this rank's sampler; (telemetry, images, steps).

    Every rank must take the same number of steps (each one all-reduces its gradients with the
    others'), so the count comes from rank 0's median timed step and is broadcast, never decided
    by each rank's own clock."""
    steps = [max(1, math.ceil(seconds / max(_median(step_s), 1e-6)))]
    if distributed:
        import torch.distributed as dist

        dist.broadcast_object_list(steps, src=0)
        dist.barrier()
    n = int(steps[0])
    synchronize(device)
    with _telemetry(device) as sampler:
        for i in range(n):
            runner.step(x, y)
            if i % 8 == 7:
                synchronize(device)  # keep the queue short, so the window's end is its work's end
        synchronize(device)
    images = runner.cfg.batch_size * n
    return sampler.result(images=images), images, n


def _measure(cfg: RunConfig, *, device: str, rank: int, world: int, steps: int, warmup: int, distributed: bool,
             window_s: float | None = None) -> dict[str, Any] | None:
    from alexnet.model import build_model

    seed_everything(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    rank_cfg = cfg.replace(device=device)
    timer = None
    with backend_switches(rank_cfg) as switches:
        model = build_model(cfg.variant, init=cfg.init, resolution=cfg.resolution).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[device] if rank_cfg.is_cuda else None)
            timer = AllreduceTimer(cuda=rank_cfg.is_cuda)
            model.register_comm_hook(timer, timer.hook)
        runner = StepRunner.build(rank_cfg, model=model)
        digest_before = param_digest(runner.eager_model)
        # Weak scaling: each rank its own batch of cfg.batch_size images (synthetic, random).
        x, y = runner.random_batch(seed=cfg.seed + 1 + rank)

        if os.environ.get(FAIL_RANK_ENV) == str(rank):
            raise RuntimeError(f"rank {rank} failed on purpose ({FAIL_RANK_ENV}={rank})")

        t0 = time.perf_counter()
        for _ in range(warmup):  # DDP rebuilds its buckets after the first step; compile happens here
            runner.step(x, y)
        synchronize(device)
        warmup_s = time.perf_counter() - t0
        if cfg.is_cuda:
            # The peak of the timed steps, as the suite's cases report it: not the warm-up's
            # (first-step bucket rebuild, cuDNN autotuning workspaces). Untested on GPU.
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            runner.step(x, y)  # one untimed step re-grows the pool empty_cache() returned
            synchronize(device)
        if timer is not None:
            timer.clear()  # drop the warm-up's all-reduces (and that step's)
        if distributed:
            import torch.distributed as dist

            dist.barrier()  # start the timed steps together

        step_s: list[float] = []
        allreduce_s: list[float] = []
        window = energy_window_s(rank_cfg) if window_s is None else window_s
        # On a CPU (no window) every rank samples its process over its own timed steps.
        sampler = _telemetry(device) if window <= 0 else contextlib.nullcontext()
        with sampler:
            for _ in range(steps):
                synchronize(device)
                start = _clock(rank_cfg)
                t = time.perf_counter()
                runner.step(x, y)
                synchronize(device)  # GPU work done before the clock is read
                step_s.append(time.perf_counter() - t)
                if timer is not None:
                    allreduce_s.append(busy_time(timer.take(start)))
        peak, memory_kind = _peak_memory(rank_cfg, device)
        if window > 0:
            telemetry, images, window_steps = _energy_window(runner, x, y, device=device, seconds=window,
                                                             step_s=step_s, distributed=distributed)
        else:
            telemetry, images, window_steps = sampler.result(images=cfg.batch_size * steps), cfg.batch_size * steps, None
        mine = {
            "rank": rank,
            "host": platform.node(),
            "device": device,
            "threads": torch.get_num_threads(),
            "step_s": step_s,
            "allreduce_s": allreduce_s if distributed else None,
            "warmup_s": warmup_s,
            "param_digest_before": digest_before,
            "param_digest_after": param_digest(runner.eager_model),
            "peak_memory_bytes": peak,
            "memory_kind": memory_kind,
            "images": images,  # this rank's in its telemetry window, for energy per image
            "telemetry": telemetry,
            "telemetry_window": {"seconds": window, "steps": window_steps} if window > 0 else
            {"what": "the timed steps", "steps": steps},
        }
    ranks = [mine]
    if distributed:
        import torch.distributed as dist

        ranks = [None] * world if rank == 0 else None
        dist.gather_object(mine, ranks, dst=0)
    if rank != 0:
        return None
    telemetry = combine_telemetry(ranks)
    return {
        "config": cfg.flat(),
        "steps": steps,
        "warmup": warmup,
        "backend_switches": switches,
        "ranks": ranks,
        "telemetry": telemetry,
    }


def _clock(cfg: RunConfig) -> Any:
    """A step's reference point in the all-reduce timer's units (CUDA event or seconds)."""
    if cfg.is_cuda:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev
    return time.perf_counter()


def _median(xs: Sequence[float]) -> float:
    from runrecord.samples import summarize

    return summarize(xs).median


def _iqr(xs: Sequence[float]) -> float:
    from runrecord.samples import summarize

    return summarize(xs).iqr


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Figures of one launch from the worker's gathered result.

    A data-parallel step ends on every rank only when the slowest rank's gradients have been
    reduced, so step i takes the *maximum* over ranks of their step i; the total images/s is
    ``world_size * batch`` over the median of that. Per-rank images/s use each rank's own steps.
    """
    cfg = result["config"]
    batch, ranks = cfg["batch_size"], result["ranks"]
    world = len(ranks)
    steps = [max(r["step_s"][i] for r in ranks) for i in range(len(ranks[0]["step_s"]))]
    images = batch * world
    per_step_ips = [images / s for s in steps]
    out: dict[str, Any] = {
        "world_size": world,
        "step_s": steps,
        "images_per_s": images / _median(steps),
        "images_per_s_iqr": _iqr(per_step_ips),
        "step_time_s": _median(steps),
        "step_time_iqr_s": _iqr(steps),
        "per_rank_images_per_s": [batch / _median(r["step_s"]) for r in ranks],
        "per_rank_step_time_s": [_median(r["step_s"]) for r in ranks],
        "threads_per_rank": [r["threads"] for r in ranks],
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in ranks),
        "memory_kind": ranks[0]["memory_kind"],
        "params_identical": len({r["param_digest_after"] for r in ranks}) == 1,
        "params_changed": all(r["param_digest_after"] != r["param_digest_before"] for r in ranks),
        "param_digest_before": ranks[0]["param_digest_before"],
        "per_rank_param_digest": [r["param_digest_after"] for r in ranks],
        "allreduce_fraction": None,
        "per_rank_allreduce_fraction": None,
        "allreduce_s_per_step": None,
    }
    if ranks[0]["allreduce_s"] is not None:
        # Share of each rank's timed wall time with at least one bucket's all-reduce in flight.
        fractions = [sum(r["allreduce_s"]) / sum(r["step_s"]) for r in ranks]
        out["per_rank_allreduce_fraction"] = fractions
        out["allreduce_fraction"] = sum(fractions) / world
        out["allreduce_s_per_step"] = _median([x for r in ranks for x in r["allreduce_s"]])
    return out


def format_summary(fig: dict[str, Any], *, batch_size: int) -> list[str]:
    """Per-rank and total images/s and the all-reduce share, as printed by rank 0."""
    lines = []
    fractions = fig["per_rank_allreduce_fraction"] or [None] * fig["world_size"]
    for r, (ips, step, share) in enumerate(zip(fig["per_rank_images_per_s"], fig["per_rank_step_time_s"], fractions)):
        share_txt = "-" if share is None else f"{share:.1%}"
        lines.append(f"rank {r}: {ips:.1f} images/s, median step {step * 1e3:.1f} ms, all-reduce share {share_txt}")
    total_share = "-" if fig["allreduce_fraction"] is None else f"{fig['allreduce_fraction']:.1%}"
    lines.append(
        f"total, {fig['world_size']} process(es) at {batch_size} images each per step: {fig['images_per_s']:.1f} images/s, "
        f"median step {fig['step_time_s'] * 1e3:.1f} ms, all-reduce share {total_share}, "
        f"parameters identical on all ranks: {'yes' if fig['params_identical'] else 'NO'}"
    )
    return lines


# The run-configuration flags a rank takes when started by hand (docs/ddp.md): `RunConfig`'s step
# fields, as ``alexnet-bench`` spells them. Its own parser, so a rank imports nothing of the CLI.
_CONFIG_VALUES = (("mode", str), ("variant", str), ("batch_size", int), ("resolution", str), ("device", str),
                  ("amp", str), ("compile", str))
_CONFIG_SWITCHES = ("channels_last", "cudnn_benchmark", "deterministic", "tf32")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    import dataclasses

    from alexnet.config import AMP_MODES, COMPILE_MODES, MODES, VARIANTS

    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    choices = {"mode": MODES, "variant": VARIANTS, "amp": AMP_MODES, "compile": COMPILE_MODES}
    g = p.add_argument_group("run configuration (without --config; validated by RunConfig)")
    for name, kind in _CONFIG_VALUES:
        default = defaults[name]
        shown = "x".join(map(str, default)) if isinstance(default, tuple) else default
        what = " | ".join(choices[name]) + ", " if name in choices else ""
        g.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"{what}default {shown}")
    for name in _CONFIG_SWITCHES:
        g.add_argument("--" + name.replace("_", "-"), action="store_true", default=None, help=f"RunConfig.{name} = True")


def _config_from_flags(args: argparse.Namespace) -> RunConfig:
    given = {name: getattr(args, name) for name, _ in _CONFIG_VALUES if getattr(args, name) is not None}
    given.update({name: True for name in _CONFIG_SWITCHES if getattr(args, name)})
    return RunConfig(**given)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ddp.rank",
        description="One rank of the data-parallel benchmark; start it with torchrun (see docs/ddp.md). "
        "World size and rank come from torchrun's environment; the backend is nccl on GPUs, gloo on CPU.",
    )
    p.add_argument("--config", default=None, help="RunConfig.flat() as JSON (what alexnet-bench ddp passes); "
                   "overrides the run-configuration flags")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per rank (default: torch's, i.e. OMP_NUM_THREADS, which torchrun sets to 1 when N > 1)")
    p.add_argument("--timeout", type=float, default=600.0, help="process-group timeout in seconds (default 600)")
    p.add_argument("--energy-window", type=float, default=None, metavar="S",
                   help=f"seconds of back-to-back steps after the timed ones for the energy counter "
                        f"(default {DDP_ENERGY_WINDOW_S:g} on CUDA; on a CPU none: the timed steps are sampled)")
    p.add_argument("--result", default=None, help="JSON file rank 0 writes with every rank's raw timings")
    p.add_argument("--error-dir", default=None, help="folder where a failing rank writes rank<R>.error (one line)")
    _add_config_flags(p)
    return p.parse_args(argv)


def _config(args: argparse.Namespace) -> RunConfig:
    if args.config is not None:
        return RunConfig.from_flat(json.loads(args.config))
    cfg = _config_from_flags(args)
    if "WORLD_SIZE" not in os.environ:  # a plain process: the 1-process baseline
        return cfg
    return cfg.replace(world_size=int(os.environ["WORLD_SIZE"]), dist_backend="nccl" if cfg.is_cuda else "gloo")


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    args = _parse(argv)

    @record  # torchrun's own failure summary then shows this rank's traceback
    def _run() -> int:
        try:
            cfg = _config(args)
            result = run_worker(cfg, steps=args.steps, warmup=args.warmup, threads=args.threads, timeout_s=args.timeout,
                                window_s=args.energy_window)
        except BaseException as exc:
            if args.error_dir:
                rank = os.environ.get("RANK", "0")
                line = f"{type(exc).__name__}: {exc}".splitlines()[0]
                Path(args.error_dir, f"rank{rank}.error").write_text(line + "\n")
            raise
        if result is not None:  # rank 0
            if args.result:
                Path(args.result).write_text(json.dumps(result, indent=1))
            for line in format_summary(summarise(result), batch_size=cfg.batch_size):
                print(line, flush=True)
        return 0

    return _run()


if __name__ == "__main__":
    sys.exit(main())
