"""``alexnet-bench gpu-check``: the first-run self-check of a GPU machine, in about 5 minutes.

Device time on the lent GPU machines is scarce (15 minutes for everything, start-up
included), so this runs the checks that only a GPU can answer, each as a user would run the
suite, and prints one pass/fail line per item, with the figure behind it, as soon as that item
is done:

========================  ========================================================================
item                      passes when
========================  ========================================================================
``deterministic``         a deterministic CUDA train case runs (``--deterministic on``)
``cudnn-benchmark``       ``cudnn.benchmark`` off and on both run (one suite run, a worker per case);
                          both step times are printed
``cudagraphs``            ``compile reduce-overhead`` replays CUDA graphs: its case's
                          ``compile_counters["inductor"]["cudagraph_skips"]`` is 0 (a missing key is
                          "unknown": the run's output decides), no "skipping cudagraphs" in the
                          output, and its step is at most 1.05x default compile's
``cold-compile``          the same compiled case in a second, separate suite run compiles within 20%
                          of the first run's ``compile_time_s`` (caches do not leak between runs)
``mfu``                   MFU below 1 for the TF32 and bf16 cases (fp32 is printed, not judged:
                          Winograd/FFT convolutions can pass 1)
``profiler``              ``alexnet-bench profile --device cuda`` covers 0.9-1.0 of the step, with
                          device time in every conv and linear layer, forward and backward
``nvml-power``            NVML's energy counter advances over a burst of bf16 GEMMs, and the mean
                          power lies above idle and at most the enforced limit (+5%)
``memory``                the seed's train step (d2l, batch 128, 224x224, fp32) peaks within +-30%
                          of the analytic estimate (`bench.instruments.memory_model`)
``ddp-nccl``              ``alexnet-bench ddp --nproc 1 --device cuda`` runs under nccl
========================  ========================================================================

Every item runs in fresh processes of its own (suite runs, ``python -m bench profile|ddp``, a
probe), started in a session of their own; an item has its own time limit, and when it runs
out, every process the item started (its process group, and descendants that left it, such as
torchrun's workers) is killed and the item fails with "timeout". ``--budget`` (default 300 s)
caps the whole check. A suite run that two items need (the TF32/bf16 run serves ``mfu`` and
``memory``; the default/reduce-overhead run serves ``cudagraphs`` and ``cold-compile``) is made
once per invocation.

Exit status: 0 all pass, 1 any fails, 2 bad input or no CUDA GPU (one line). The GPU is
detected without initialising CUDA in this process (``torch.cuda.is_available()`` under
``PYTORCH_NVML_BASED_CUDA_CHECK=1``, which asks NVML: torch docs of ``torch.cuda.is_available``).

Untested on GPU: no GPU was available to this work; the thresholds' mechanics, the process
handling and the parsing of saved runs are tested on the CPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.instruments.memory_model import train_memory_estimate
from bench.workers.proc import describe_exit, run_limited

NAME = "gpu-check"
HELP = "first-run self-check of a CUDA machine: one pass/fail line per GPU figure and path (about 5 min)"

__all__ = ["NAME", "HELP", "ITEMS", "Item", "Outcome", "Context", "SuiteRun", "add_arguments", "run", "run_items"]

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BUDGET_S = 300.0
SUMMARY_FILE = "gpu-check.json"
NVML_CHECK_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"

# Thresholds: fixed requirements of this check, not tuned on a GPU (docs/bench.md, gpu-check).
CUDAGRAPH_MAX_RATIO = 1.05  # reduce-overhead's step / default compile's step
COLD_COMPILE_TOLERANCE = 0.20  # |second / first - 1| of compile_time_s
PROFILE_COVERAGE = (0.9, 1.0)
MEMORY_TOLERANCE = 0.30  # |measured / estimate - 1|
# NVML enforces the limit on a power average; the energy counter's reads at the two ends of a
# few-second window can each be one update period off, so the mean may sit a little above.
POWER_LIMIT_TOLERANCE = 0.05

# Suite runs (overrides of the tiny preset, on CUDA, one case per combination).
# Batch 8 at 96x96: a train step is about 8 x 5.56 GFLOP x (96/224)^2 = 8 GFLOP, some 0.1 ms of
# an H100's fp32 arithmetic, against about 60 kernels (forward, backward, SGD) launched at a few
# microseconds each: launch-bound, which is where CUDA graphs must pay. A bigger step would
# hide the launch overhead and let the 1.05x check pass even if graphs did nothing.
# --no-correctness: a compiled train case's check compiles a second, forward-only graph (its
# forward under eval() and inference_mode fails dynamo's guards on the training flag and grad
# mode), GPU time this check's budget cannot spare; the suite's own runs keep the check.
COMPILE_RUN = ["--modes", "train", "--batch-sizes", "8", "--resolutions", "96", "--warmup-rounds", "3",
               "--no-correctness"]
# The seed's shape (d2l, batch 128, 224x224): its fp32 case is also the memory item's.
MFU_RUN = ["--modes", "train", "--batch-sizes", "128", "--resolutions", "224", "--tf32", "off,on", "--amp", "off,bf16"]


class CheckFailed(Exception):
    """An item's check could not be made or did not hold; the message is the figure line."""


class ItemTimeout(Exception):
    """The item ran past its time limit; what it was running has been killed."""


@dataclass
class Outcome:
    passed: bool
    figure: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    name: str
    check: Callable[["Context"], Outcome]
    timeout_s: float
    what: str


@dataclass
class ItemResult:
    name: str
    status: str  # "pass" | "fail" | "timeout" | "error" | "not_run" (the budget was spent before it started)
    figure: str
    seconds: float
    timeout_s: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    """One finished command of an item: its exit status, its output and where that is kept."""

    returncode: int
    output: str
    log: Path


@dataclass
class SuiteRun:
    """One ``pytest bench/`` run: its exit status, output and saved run (None if none was saved)."""

    returncode: int
    output: str
    doc: dict[str, Any] | None
    log: Path

    def failure_line(self) -> str:
        return failure_line(self.output, self.returncode, self.log)


def failure_line(output: str, returncode: int, log: Path) -> str:
    """The most telling line of a failed run's output: pytest's error, skip reason or last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    how = describe_exit(returncode)
    for prefix in ("E ", "SKIPPED", "FAILED", "ERROR"):
        hits = [ln for ln in lines if ln.startswith(prefix)]
        if hits:
            return f"{hits[-1][:240]} ({how}; log {log})"
    return f"{(lines[-1] if lines else 'no output')[:240]} ({how}; log {log})"


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


class Context:
    """What an item gets: its own folder, a deadline, and processes that die with the item."""

    def __init__(self, *, root: Path, item: str, deadline: float, shared: dict[tuple, SuiteRun]) -> None:
        self.root = root
        self.dir = root / item
        self.deadline = deadline
        self._shared = shared

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, cmd: Sequence[str], *, log: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Proc:
        """Run ``cmd`` to completion within the item's deadline (output to ``<dir>/<log>.log``).

        The process starts in a session of its own; on timeout it and everything it started
        (its process group, and descendants that left it) are killed and `ItemTimeout` is
        raised (`bench.workers.proc.run_limited`).
        """
        remaining = self.remaining()
        if remaining <= 0:
            raise ItemTimeout(f"no time left to start {log}")
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{log}.log"
        with open(path, "wb") as out:
            out.write(("$ " + " ".join(str(c) for c in cmd) + "\n").encode())
            out.flush()
            done = run_limited(cmd, timeout_s=remaining, stdout=out, stderr=subprocess.STDOUT, env=_child_env(env),
                               cwd=cwd or REPO)
        if done.timed_out:
            raise ItemTimeout(f"{log} still running at the item's limit; killed it and its processes")
        return Proc(done.returncode, path.read_text(errors="replace"), path)

    def suite(self, key: str, args: Sequence[str], *, device: str = "cuda",
              env: dict[str, str] | None = None) -> SuiteRun:
        """``python -m pytest bench/ --preset tiny --devices DEVICE --channels-last off
        --telemetry-seconds 0 ARGS``, saved under ``<root>/runs/<key>``; a finished run with the
        same key and arguments is reused."""
        memo = (key, tuple(args), device, tuple(sorted((env or {}).items())))
        if memo in self._shared:
            return self._shared[memo]
        storage = self.root / "runs" / key
        n = 1
        while storage.exists():  # an earlier try of this run was cut short: keep it, start anew
            n += 1
            storage = self.root / "runs" / f"{key}-{n}"
        name = f"gpu-check-{key}"
        # --telemetry-seconds 0: no extra NVML window after each case's rounds (5 s a CUDA case by
        # default); nothing here reads that telemetry, and the power item has its own probe.
        cmd = [sys.executable, "-m", "pytest", str(REPO / "bench"), "-p", "no:cacheprovider", "-q",
               "--preset", "tiny", "--devices", device, "--channels-last", "off", "--telemetry-seconds", "0", *args,
               f"--benchmark-save={name}", f"--benchmark-storage=file://{storage}"]
        proc = self.run(cmd, log=f"suite-{key}", env=env)
        saved = sorted(storage.glob(f"*/*_{name}.json"))
        doc = json.loads(saved[-1].read_text()) if saved else None
        result = SuiteRun(proc.returncode, proc.output, doc, proc.log)
        self._shared[memo] = result
        return result


# --- reading saved runs ---------------------------------------------------------------------


def _matches(config: dict[str, Any], fields: dict[str, Any]) -> bool:
    return all(config.get(k) == v for k, v in fields.items())


def find_case(doc: dict[str, Any], **fields: Any) -> dict[str, Any] | None:
    """The saved case whose ``extra_info.config`` has all ``fields`` (e.g. ``compile="default"``)."""
    for b in doc.get("benchmarks", []):
        if _matches((b.get("extra_info") or {}).get("config") or {}, fields):
            return b
    return None


def need_case(run: SuiteRun, **fields: Any) -> dict[str, Any]:
    """`find_case`, or `CheckFailed` saying why the case is not there (skip reason, error)."""
    what = ", ".join(f"{k}={v}" for k, v in fields.items())
    if run.doc is None:
        raise CheckFailed(f"no run was saved for {what}: {run.failure_line()}")
    case = find_case(run.doc, **fields)
    if case is not None:
        return case
    for s in (run.doc.get("alexnet") or {}).get("skipped") or []:
        if _matches(s.get("config") or {}, fields):
            raise CheckFailed(f"case {s.get('case_id')} was skipped: {s.get('reason')}")
    raise CheckFailed(f"no saved case with {what}: {run.failure_line()}")


def _extra(case: dict[str, Any]) -> dict[str, Any]:
    return case.get("extra_info") or {}


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f} ms"


# --- the items: gather (processes) and judge (pure, tested on the CPU) ------------------------


def check_deterministic(ctx: Context) -> Outcome:
    run = ctx.suite("deterministic", ["--modes", "train", "--batch-sizes", "32", "--resolutions", "224",
                                      "--deterministic", "on"])
    return judge_deterministic(need_case(run, deterministic=True))


def judge_deterministic(case: dict[str, Any]) -> Outcome:
    e = _extra(case)
    switches = e.get("backend_switches") or {}
    ok = switches.get("deterministic_algorithms") is True and switches.get("cudnn.deterministic") is True
    return Outcome(ok, f"{e.get('case_id')} ran: {_ms(e.get('step_time_s'))}/step; deterministic_algorithms="
                       f"{switches.get('deterministic_algorithms')}, cudnn.deterministic={switches.get('cudnn.deterministic')}",
                   {"step_time_s": e.get("step_time_s")})


def check_cudnn_benchmark(ctx: Context) -> Outcome:
    run = ctx.suite("cudnn-benchmark", ["--modes", "train", "--batch-sizes", "64", "--resolutions", "224",
                                        "--cudnn-benchmark", "off,on"])
    return judge_cudnn_benchmark(need_case(run, cudnn_benchmark=False), need_case(run, cudnn_benchmark=True))


def judge_cudnn_benchmark(off: dict[str, Any], on: dict[str, Any]) -> Outcome:
    t_off, t_on = _extra(off).get("step_time_s"), _extra(on).get("step_time_s")
    if not t_off or not t_on:
        return Outcome(False, f"a step time is missing: off {t_off}, on {t_on}")
    # cuDNN's plan cache is per process and ignores the benchmark flag (aten/src/ATen/native/cudnn/Conv_v8.cpp;
    # docs/measurement-notes.md, "GPU behaviours that bite"): the two
    # settings are only told apart in processes of their own (the suite's isolation record).
    pids = [(_extra(c).get("isolation") or {}).get("worker_pid") for c in (off, on)]
    modes = [(_extra(c).get("isolation") or {}).get("mode") for c in (off, on)]
    if None in pids:
        workers, ok = "worker processes not recorded", True
    elif pids[0] == pids[1] or modes != ["process", "process"]:
        workers, ok = f"NOT in separate worker processes (pids {pids[0]}, {pids[1]}; isolation {modes})", False
    else:
        workers, ok = f"workers {pids[0]} and {pids[1]}", True
    return Outcome(ok, f"cudnn.benchmark off {_ms(t_off)}, on {_ms(t_on)} per step (on/off {t_on / t_off:.3f}); "
                       f"{workers}", {"off_step_time_s": t_off, "on_step_time_s": t_on, "worker_pids": pids})


def check_cudagraphs(ctx: Context) -> Outcome:
    run = ctx.suite("compile", [*COMPILE_RUN, "--compile", "default,reduce-overhead"])
    return judge_cudagraphs(need_case(run, compile="reduce-overhead"), need_case(run, compile="default"), run.output)


def judge_cudagraphs(ro: dict[str, Any], default: dict[str, Any], output: str) -> Outcome:
    e = _extra(ro)
    # The inductor counter that log_cudagraph_skip_and_bump_counter bumps with every skip
    # (torch/_inductor/cudagraph_utils.py); it also logs "skipping cudagraphs due to ...".
    counters = e.get("compile_counters")
    skips = ((counters or {}).get("inductor") or {}).get("cudagraph_skips", 0) if counters is not None else None
    logged = [ln.strip() for ln in output.splitlines() if "skipping cudagraphs" in ln]
    logged += ["(in the saved case) skipping cudagraphs"] if "skipping cudagraphs" in json.dumps(e) else []
    t_ro, t_def = e.get("step_time_s"), _extra(default).get("step_time_s")
    ratio = t_ro / t_def if t_ro and t_def else None
    problems = []
    if skips:
        problems.append(f"{skips} cudagraph skip(s)")
    if logged:
        problems.append(f"log: {logged[0][:160]}")
    if ratio is None:
        problems.append("a step time is missing")
    elif ratio > CUDAGRAPH_MAX_RATIO:
        problems.append(f"reduce-overhead {ratio:.2f}x default compile's step (limit {CUDAGRAPH_MAX_RATIO}x)")
    skip_text = "unknown (no compile_counters saved; the output shows no skip)" if skips is None else str(skips)
    figure = (f"reduce-overhead {_ms(t_ro)} vs default {_ms(t_def)} per step"
              + (f" ({ratio:.2f}x, limit {CUDAGRAPH_MAX_RATIO}x)" if ratio else "") + f"; cudagraph_skips {skip_text}")
    if problems:
        figure += "; " + "; ".join(problems)
    return Outcome(not problems, figure, {"cudagraph_skips": skips, "ratio": ratio, "skip_lines": logged[:5]})


def check_cold_compile(ctx: Context) -> Outcome:
    first = ctx.suite("compile", [*COMPILE_RUN, "--compile", "default,reduce-overhead"])  # cudagraphs' run
    second = ctx.suite("compile-again", [*COMPILE_RUN, "--compile", "default"])
    return judge_cold_compile(need_case(first, compile="default"), need_case(second, compile="default"))


def judge_cold_compile(first: dict[str, Any], second: dict[str, Any]) -> Outcome:
    a, b = _extra(first).get("compile_time_s"), _extra(second).get("compile_time_s")
    if not a or not b or a <= 0 or b <= 0:
        return Outcome(False, f"compile_time_s missing or not positive: first {a}, second {b}")
    ratio = b / a
    ok = abs(ratio - 1) <= COLD_COMPILE_TOLERANCE
    why = "" if ok else ("; the second compiled faster: a cache leaked between runs?" if ratio < 1
                         else "; the second compiled slower")
    return Outcome(ok, f"compile_time_s {a:.1f} s, then {b:.1f} s in a separate run (ratio {ratio:.2f}, "
                       f"limit 1 +- {COLD_COMPILE_TOLERANCE:.0%}){why}", {"first_s": a, "second_s": b, "ratio": ratio})


def _mfu_label(config: dict[str, Any]) -> str:
    if config.get("amp") == "bf16":
        return "bf16" + (" (tf32 on)" if config.get("tf32") else "")
    return "tf32" if config.get("tf32") else "fp32"


def check_mfu(ctx: Context) -> Outcome:
    run = ctx.suite("tf32-bf16", MFU_RUN)
    cases = [need_case(run, amp="off", tf32=False), need_case(run, amp="off", tf32=True),
             need_case(run, amp="bf16", tf32=False), need_case(run, amp="bf16", tf32=True)]
    return judge_mfu(cases)


def judge_mfu(cases: list[dict[str, Any]]) -> Outcome:
    judged, shown, problems, details = [], [], [], {}
    for c in cases:
        e = _extra(c)
        label = _mfu_label(e.get("config") or {})
        mfu = e.get("mfu")
        details[label] = mfu
        if label == "fp32":
            shown.append(f"fp32 {mfu:.2f} (not judged: Winograd/FFT convolutions can pass 1)" if mfu is not None
                         else "fp32 n/a")
            continue
        if mfu is None:
            problems.append(f"{label}: no MFU ({e.get('mfu_peak_source') or 'no datasheet peak for this GPU'})")
        elif not 0 < mfu < 1:
            problems.append(f"{label}: MFU {mfu:.2f} not in (0, 1)")
        judged.append(f"{label} {mfu:.2f}" if mfu is not None else f"{label} n/a")
    figure = "MFU " + ", ".join(judged) + " (must be < 1); " + "; ".join(shown)
    if problems:
        figure += "; " + "; ".join(problems)
    return Outcome(not problems, figure, details)


def check_profiler(ctx: Context) -> Outcome:
    out = ctx.dir / "profile"
    # The seed's shape at batch 128: compute-bound on an H100, so kernel time can cover the
    # step; at tiny sizes the GPU idles between launches and coverage is honestly lower
    # (bench/instruments/profiling.py).
    proc = ctx.run([sys.executable, "-m", "bench", "profile", "--device", "cuda", "--mode", "train",
                    "--batch-size", "128", "--resolution", "224", "--out", str(out)], log="profile")
    path = out / "profile.json"
    if proc.returncode != 0 or not path.exists():
        raise CheckFailed(f"alexnet-bench profile failed: {failure_line(proc.output, proc.returncode, proc.log)}")
    return judge_profile(json.loads(path.read_text()))


def judge_profile(prof: dict[str, Any]) -> Outcome:
    cov = prof.get("coverage")
    layers = [r for r in prof.get("rows", []) if r.get("group") == "layer" and r.get("kind") in ("Conv2d", "Linear")]
    train = (prof.get("config") or {}).get("mode", "train") == "train"
    empty = [f"{r['layer']} ({'forward' if not r.get('fwd_ms') else 'backward'})" for r in layers
             if not (r.get("fwd_ms") or 0) > 0 or (train and not (r.get("bwd_ms") or 0) > 0)]
    problems = []
    if cov is None or not PROFILE_COVERAGE[0] <= cov <= PROFILE_COVERAGE[1]:
        problems.append(f"coverage {cov} outside {PROFILE_COVERAGE[0]}-{PROFILE_COVERAGE[1]}")
    if not layers:
        problems.append("no conv or linear rows")
    if empty:
        problems.append("no device time in " + ", ".join(empty))
    times = [r.get("fwd_ms") or 0 for r in layers] + ([r.get("bwd_ms") or 0 for r in layers] if train else [])
    least = min(times) if times else None
    figure = (f"coverage {cov:.3f} ({prof.get('time_kind')})" if cov is not None else "coverage n/a") + \
        f"; {len(layers)} conv/linear layers" + (f", least device time {least:.3f} ms" if least is not None else "")
    if problems:
        figure += "; " + "; ".join(problems)
    return Outcome(not problems, figure, {"coverage": cov, "layers_without_time": empty})


def check_power(ctx: Context) -> Outcome:
    proc = ctx.run([sys.executable, "-m", "bench.instruments.power"], log="power-probe")
    lines = [ln for ln in proc.output.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise CheckFailed(f"the NVML probe failed: {failure_line(proc.output, proc.returncode, proc.log)}")
    return judge_power(json.loads(lines[-1]))


def judge_power(p: dict[str, Any]) -> Outcome:
    energy_j = (p["energy_end_mj"] - p["energy_start_mj"]) / 1e3
    mean_w = energy_j / p["seconds"] if p["seconds"] > 0 else 0.0
    limit, idle = p["limit_w"], p["idle_w"]
    problems = []
    if energy_j <= 0:
        problems.append("the energy counter did not advance")
    if not mean_w > idle:
        problems.append(f"mean power {mean_w:.0f} W not above idle {idle:.0f} W")
    if mean_w > limit * (1 + POWER_LIMIT_TOLERANCE):
        problems.append(f"mean power {mean_w:.0f} W above the enforced limit {limit:.0f} W (+{POWER_LIMIT_TOLERANCE:.0%})")
    figure = (f"energy +{energy_j:.0f} J over {p['seconds']:.1f} s of bf16 GEMMs = {mean_w:.0f} W mean; idle {idle:.0f} W; "
              f"enforced limit {limit:.0f} W")
    if p.get("busy_w_samples"):
        figure += f"; nvmlDeviceGetPowerUsage {min(p['busy_w_samples']):.0f}-{max(p['busy_w_samples']):.0f} W"
    if problems:
        figure += "; " + "; ".join(problems)
    return Outcome(not problems, figure, {"mean_w": mean_w, "idle_w": idle, "limit_w": limit, "energy_j": energy_j})


def check_memory(ctx: Context) -> Outcome:
    run = ctx.suite("tf32-bf16", MFU_RUN)  # its fp32 case is the seed's step
    case = need_case(run, mode="train", variant="d2l", batch_size=128, resolution="224x224", amp="off", tf32=False,
                     compile="off")
    return judge_memory(case, train_memory_estimate(batch_size=128, resolution=(224, 224)))


def judge_memory(case: dict[str, Any], estimate: dict[str, int]) -> Outcome:
    e = _extra(case)
    peak = e.get("peak_memory_bytes")
    if not peak or e.get("memory_kind") not in (None, "cuda_max_allocated"):
        return Outcome(False, f"no CUDA peak memory saved (peak_memory_bytes {peak}, memory_kind {e.get('memory_kind')})")
    ratio = peak / estimate["total"]
    mib = {k: v / 2**20 for k, v in estimate.items()}
    ok = abs(ratio - 1) <= MEMORY_TOLERANCE
    return Outcome(ok, f"peak {peak / 2**20:.0f} MiB vs estimate {mib['total']:.0f} MiB (ratio {ratio:.2f}, limit 1 +- "
                       f"{MEMORY_TOLERANCE:.0%}; weights {mib['weights']:.0f} + gradients {mib['gradients']:.0f} + "
                       f"optimizer {mib['optimizer_state']:.0f} + activations {mib['activations']:.0f} + batch "
                       f"{mib['batch']:.0f} MiB)", {"peak_bytes": peak, "estimate": estimate, "ratio": ratio})


def check_ddp(ctx: Context) -> Outcome:
    storage = ctx.dir / "runs"
    limit = max(10, int(ctx.remaining()) - 5)
    proc = ctx.run([sys.executable, "-m", "bench", "ddp", "--nproc", "1", "--device", "cuda", "--steps", "10",
                    "--warmup", "2", "--timeout", str(limit), "--storage", str(storage), "--save", "gpu-check-ddp"],
                   log="ddp")
    saved = sorted(storage.glob("*/*_gpu-check-ddp.json"))
    if proc.returncode != 0 or not saved:
        raise CheckFailed(f"alexnet-bench ddp failed: {failure_line(proc.output, proc.returncode, proc.log)}")
    return judge_ddp(json.loads(saved[-1].read_text()))


def judge_ddp(doc: dict[str, Any]) -> Outcome:
    case = next((b for b in doc.get("benchmarks", []) if _extra(b).get("dist_backend") == "nccl"), None)
    if case is None:
        return Outcome(False, "no nccl case in the saved ddp run")
    e = _extra(case)
    eff = e.get("scaling_efficiency")
    figure = f"{e.get('world_size')} rank under nccl: {e.get('images_per_s') or 0:.0f} images/s, {_ms(e.get('step_time_s'))}/step"
    if eff is not None:
        figure += f", {eff:.1%} of the 1-process baseline's throughput"
    return Outcome(True, figure, {"scaling_efficiency": eff, "images_per_s": e.get("images_per_s")})


ITEMS: list[Item] = [
    Item("deterministic", check_deterministic, 90, "a deterministic CUDA train case runs (b32, 224x224)"),
    Item("cudnn-benchmark", check_cudnn_benchmark, 90,
         "cudnn.benchmark off and on, each case in its own worker; both step times printed (b64, 224x224)"),
    Item("cudagraphs", check_cudagraphs, 180,
         "compile reduce-overhead: 0 cudagraph skips, step <= 1.05x default compile's (b8, 96x96: launch-bound)"),
    Item("cold-compile", check_cold_compile, 120,
         "the default-compiled case again in a separate run: compile_time_s within 20% of the first"),
    Item("mfu", check_mfu, 100, "MFU < 1 for TF32 and bf16 (b128, 224x224); fp32 printed, not judged"),
    Item("profiler", check_profiler, 90,
         "alexnet-bench profile --device cuda: coverage 0.9-1.0, device time in every conv and linear layer"),
    Item("nvml-power", check_power, 60, "NVML energy counter advances; mean power above idle, at most the limit"),
    Item("memory", check_memory, 100,
         "peak memory of the seed's train step (d2l, b128, 224x224, fp32) within 30% of the analytic estimate"),
    Item("ddp-nccl", check_ddp, 120, "alexnet-bench ddp --nproc 1 --device cuda runs under nccl"),
]


# --- the time plan (--plan) -----------------------------------------------------------------
# Seconds on one H200 with torch 2.11, item by item, from a model of what each item starts. The
# figures are estimates (this CPU machine's measurements where a CPU can show them, the review's
# 30-60 s for a cold compile) until the first real run corrects them (docs/bench.md, "gpu-check").
PLAN_MODEL_S: dict[str, float] = {
    "pytest": 2.0,  # a `pytest bench/` process up to its first case (this CPU machine: 1.0)
    "zygote": 4.0,  # the zygote's torch import, CUDA libraries included (CPU machine: 1.3)
    "probe+calibration": 3.0,  # two workers, each making a CUDA context; the 8192^3 fp32 GEMM
    "case": 3.0,  # fork, CUDA context, build, correctness check, exit (CPU machine: 0.2-0.4 without CUDA)
    "warmup": 2.0,  # the suite's CUDA warm-up lasts at least 2 s (bench.suite.runner.DEFAULT_CUDA_WARMUP_S)
    "rounds": 1.0,  # 10 rounds of k steps at these sizes: well under 0.1 s each on an H200
    "compile default": 45.0,  # a cold inductor compile (the review: 30-60 s on an H200, torch 2.11)
    "compile reduce-overhead": 60.0,  # the same plus CUDA-graph capture
    "process": 6.0,  # a CLI process that imports torch and makes a CUDA context
}
# item -> what it starts: ("suite", run name, the compile mode of each case) or ("process", label, extra seconds).
ITEM_PLANS: dict[str, list[tuple[str, str, Any]]] = {
    "deterministic": [("suite", "deterministic", ["off"])],
    "cudnn-benchmark": [("suite", "cudnn-benchmark", ["off", "off"])],
    "cudagraphs": [("suite", "compile", ["default", "reduce-overhead"])],
    "cold-compile": [("suite", "compile", ["default", "reduce-overhead"]), ("suite", "compile-again", ["default"])],
    "mfu": [("suite", "tf32-bf16", ["off"] * 4)],
    "profiler": [("process", "alexnet-bench profile --device cuda", 10.0)],
    "nvml-power": [("process", "python -m bench.instruments.power", 5.0)],
    "memory": [("suite", "tf32-bf16", ["off"] * 4)],
    "ddp-nccl": [("process", "torchrun, its rank, the 1-process baseline", 2 * PLAN_MODEL_S["process"] + 2.0)],
}
PLAN_TARGET_S = 240.0


def plan(items: Sequence[Item]) -> list[tuple[str, float, str]]:
    """(item, estimated seconds, how) for ``items`` in order; a suite run shared by items is paid by the first."""
    m = PLAN_MODEL_S
    made: set[str] = set()
    rows = []
    for item in items:
        total, parts = 0.0, []
        for kind, name, what in ITEM_PLANS[item.name]:
            if kind == "process":
                total += m["process"] + what
                parts.append(f"{name} {m['process'] + what:.0f}")
                continue
            if name in made:
                parts.append(f"run {name} shared")
                continue
            made.add(name)
            fixed = m["pytest"] + m["zygote"] + m["probe+calibration"]
            cases = sum(m["case"] + m["warmup"] + m["rounds"] + m.get(f"compile {c}", 0.0) for c in what)
            total += fixed + cases
            compiled = [c for c in what if c != "off"]
            parts.append(f"run {name}: {fixed:.0f} start + {len(what)} case(s) {cases:.0f}"
                         + (f" (cold compiles: {', '.join(compiled)})" if compiled else ""))
        rows.append((item.name, total, "; ".join(parts)))
    return rows


def print_plan(items: Sequence[Item], out: Any = None) -> float:
    out = out or sys.stdout
    rows = plan(items)
    for name, seconds, how in rows:
        print(f"{name:<16} {seconds:>5.0f} s  {how}", file=out)
    total = sum(r[1] for r in rows)
    verdict = (f"within the {PLAN_TARGET_S:.0f} s target" if total <= PLAN_TARGET_S
               else f"OVER the {PLAN_TARGET_S:.0f} s target by {total - PLAN_TARGET_S:.0f} s")
    print(f"total {total:.0f} s estimated on an H200 with torch 2.11 ({verdict}"
          + ("" if total <= PLAN_TARGET_S else "; the cold compiles and one pytest process, zygote and calibration "
             "per suite run are most of it") + "). The model: " + ", ".join(f"{k} {v:g} s" for k, v in PLAN_MODEL_S.items()),
          file=out)
    return total


# --- running the items ----------------------------------------------------------------------


def run_items(items: Sequence[Item], *, root: Path, budget_s: float = DEFAULT_BUDGET_S,
              out: Any = None) -> list[ItemResult]:
    """Run ``items`` in order, each within min(its timeout, what is left of the budget); print
    each one's line as soon as it is done."""
    out = out or sys.stdout
    shared: dict[tuple, SuiteRun] = {}
    end = time.monotonic() + budget_s
    results = []
    for item in items:
        t0 = time.monotonic()
        limit = min(item.timeout_s, end - t0)
        by_budget = limit < item.timeout_s
        ctx = Context(root=root, item=item.name, deadline=t0 + limit, shared=shared)
        details: dict[str, Any] = {}
        if limit <= 0:  # not a failure of the GPU: say so, distinctly, and go on listing
            r = ItemResult(item.name, "not_run", "NOT RUN (budget): the gpu-check budget was spent before it started",
                           0.0, item.timeout_s, {})
            results.append(r)
            print(f"NOT RUN (budget)  {item.name:<16}", file=out, flush=True)
            continue
        try:
            oc = item.check(ctx)
            status, figure, details = ("pass" if oc.passed else "fail"), oc.figure, oc.details
        except ItemTimeout as exc:
            status = "timeout"
            figure = f"timeout after {time.monotonic() - t0:.0f} s (limit {max(limit, 0):.0f} s" + \
                     (", cut by --budget" if by_budget else "") + f"): {exc}"
        except CheckFailed as exc:
            status, figure = "fail", str(exc)
        except Exception as exc:  # a bug or an unreadable file: this item fails, the others still run
            status, figure = "error", f"{type(exc).__name__}: {exc}"
        r = ItemResult(item.name, status, figure, time.monotonic() - t0, item.timeout_s, details)
        results.append(r)
        print(f"{'PASS' if r.passed else 'FAIL'}  {item.name:<16} {figure}  [{r.seconds:.0f} s]", file=out, flush=True)
    return results


def visible_gpus() -> tuple[int, str]:
    """(CUDA devices torch can use, how that was found), without initialising CUDA here.

    With ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, ``torch.cuda.is_available()`` and
    ``device_count()`` ask NVML instead of the CUDA runtime (torch docs of
    ``torch.cuda.is_available``: it then does not poison fork, i.e. no CUDA context is made),
    and they honour ``CUDA_VISIBLE_DEVICES``; NVML failing, torch falls back to
    ``cudaGetDeviceCount``. The variable is set only around the question.
    """
    saved = os.environ.get(NVML_CHECK_ENV)
    os.environ[NVML_CHECK_ENV] = "1"
    try:
        import torch

        if not torch.backends.cuda.is_built():
            return 0, f"torch {torch.__version__} is a CPU-only build"
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    finally:
        if saved is None:
            os.environ.pop(NVML_CHECK_ENV, None)
        else:
            os.environ[NVML_CHECK_ENV] = saved
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    return n, f"torch {torch.__version__} sees {n} CUDA device(s)" + (f" (CUDA_VISIBLE_DEVICES={cvd!r})" if cvd is not None else "")


def _nvml_name() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        finally:
            pynvml.nvmlShutdown()
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the name is a nicety for the header line
        return None


# --- the command ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list", action="store_true", help="list the items with their time limits, run nothing")
    p.add_argument("--plan", action="store_true",
                   help="print each item's estimated time on an H200 from the documented model, and the total; "
                        "needs no GPU, runs nothing")
    p.add_argument("--only", default=None, metavar="NAME[,NAME]", help="run only these items (see --list)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"keep every run, log and {SUMMARY_FILE} in DIR (new or empty; never overwritten)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                   help=f"seconds for the whole check; an item gets at most what is left (default {DEFAULT_BUDGET_S:g})")


def _select(only: str | None) -> list[Item]:
    if only is None:
        return list(ITEMS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    valid = [i.name for i in ITEMS]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ValueError(f"--only {only!r} is not valid; choose from {', '.join(valid)}")
    return [i for i in ITEMS if i.name in names]


def run(args: argparse.Namespace) -> int:
    from bench.cli.errors import UsageError

    if args.plan:
        print_plan(_select(args.only))
        return 0
    if args.list:
        for item in ITEMS:
            print(f"{item.name:<16} {item.timeout_s:>4.0f} s  {item.what}")
        print(f"budget {DEFAULT_BUDGET_S:g} s in all (--budget)")
        return 0
    items = _select(args.only)
    if not args.budget > 0:
        raise ValueError(f"--budget {args.budget:g} is not valid; it must be > 0 seconds")
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"--out {out} already exists and is not an empty folder; choose a new one "
                             "(earlier results are never overwritten)")
    n, how = visible_gpus()
    if n == 0:
        raise UsageError(f"needs a CUDA GPU; none is visible here ({how})")
    broken = cuda_runtime_error()
    if broken:
        raise UsageError(f"the CUDA runtime does not start here ({broken}); no item can run")

    name = _nvml_name()
    print(f"gpu-check: {len(items)} item(s) on {name or 'the CUDA device'}, at most {args.budget:g} s; "
          f"{how}", flush=True)
    t0 = time.monotonic()
    started = datetime.now(timezone.utc).isoformat()
    root = out if out is not None else Path(tempfile.mkdtemp(prefix="alexnet-gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    results = run_items(items, root=root, budget_s=args.budget)
    failed = [r.name for r in results if not r.passed and r.status != "not_run"]
    not_run = [r.name for r in results if r.status == "not_run"]
    summary = {
        "started": started, "seconds": time.monotonic() - t0, "gpu": name, "budget_s": args.budget,
        "passed": not failed and not not_run, "not_run": not_run, "items": [asdict(r) for r in results],
    }
    with open(root / SUMMARY_FILE, "x") as f:  # "x": never overwrite
        json.dump(summary, f, indent=1, default=str)
    if out is not None:
        where = f"; runs, logs and {SUMMARY_FILE} in {out}"
    elif failed:  # the logs the failure lines point to stay
        where = f"; runs, logs and {SUMMARY_FILE} kept in {root}"
    else:
        shutil.rmtree(root, ignore_errors=True)
        where = ""
    passed = sum(r.passed for r in results)
    print(f"gpu-check: {passed} of {len(results)} passed"
          + (f" (failed: {', '.join(failed)})" if failed else "")
          + (f" (NOT RUN, budget: {', '.join(not_run)})" if not_run else "")
          + f" in {time.monotonic() - t0:.0f} s{where}", flush=True)
    return EXIT_FAILED if failed else EXIT_NOT_RUN if not_run else 0


# Exit status: 0 every item passed; 1 an item failed (or timed out, or errored); 2 usage, no
# GPU, or a CUDA runtime that does not start; 3 nothing failed, but the budget left items not run.
EXIT_FAILED = 1
EXIT_NOT_RUN = 3
CUDA_INIT_TIMEOUT_S = 120.0


def cuda_runtime_error(python: str | None = None, timeout_s: float = CUDA_INIT_TIMEOUT_S) -> str | None:
    """Why the CUDA runtime does not start, asked of a child process (``torch.cuda.init()``), or None.

    A child, so this process never initialises CUDA; before any item, so a broken driver or a
    device in a bad state costs seconds, not every item's timeout."""
    from bench.workers.proc import run_limited

    code = "import torch; torch.cuda.init(); print(torch.cuda.get_device_name(0))"
    done = run_limited([python or sys.executable, "-c", code], timeout_s=timeout_s, capture=True)
    if done.timed_out:
        return f"torch.cuda.init() took more than {timeout_s:.0f} s"
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or "").splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit status {done.returncode}"
    return None
