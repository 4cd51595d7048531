"""``alexnet-bench gpu-check``: the first-run self-check of a GPU machine, in about 4 minutes.

Device time on the lent GPU machines is scarce (15 minutes for everything, start-up included),
so this runs the checks that only a GPU can answer, as a user would run the suite, and prints
one pass/fail line per item, with the figure behind it. The items, in the order of what only a
GPU can prove (a budget cut drops the last ones first):

========================  ========================================================================
item                      passes when
========================  ========================================================================
``cudagraphs``            ``compile reduce-overhead`` replays CUDA graphs: its case's
                          ``compile_counters["inductor"]["cudagraph_skips"]`` is 0 (a missing key is
                          "unknown": the run's output decides), no "skipping cudagraphs" in the
                          output, and its step is at most eager's at the same launch-bound shape
``cold-compile``          the same compiled config in a second worker compiles within 20% of the
                          first (caches do not leak between workers; both with a warm compile pool)
``mfu``                   MFU below 1 for the TF32 and bf16 cases (fp32 is printed, not judged:
                          Winograd/FFT convolutions can pass 1)
``timer``                 the suite's blocked rounds agree with ``torch.utils.benchmark.Timer``
                          within 5% (per step, interleaved pairs, a launch-bound case)
``telemetry``             the suite's own 5 s window of back-to-back steps: energy counter above 0,
                          window at least 3 s, power source recorded, mean power at most the limit
``memory``                the seed's train step (d2l, batch 128, 224x224, fp32) peaks within +-30%
                          of the analytic estimate (`bench.instruments.memory_model`)
``deterministic``         a deterministic CUDA train case runs (``deterministic=True``)
``cudnn-benchmark``       ``cudnn.benchmark`` off and on both run, each in its own worker; both step
                          times are printed
``profiler``              ``alexnet-bench profile --device cuda`` covers 0.9-1.0 of the step, with
                          device time in every conv and linear layer, forward and backward
``ddp-nccl``              ``alexnet-bench ddp --nproc 1 --device cuda`` runs under nccl
``nvml-power``            NVML's energy counter advances over a burst of bf16 GEMMs, and the mean
                          power lies above idle and at most the enforced limit (+5%)
========================  ========================================================================

Every item that needs suite cases reads them from **one** suite run (``pytest bench/ --cases
FILE``: one pytest process, one zygote, one probe and calibration; each case in a fresh worker),
made when the first such item comes up, with the cases in item order. Its time limit is the sum
of those items' limits, capped by what is left of ``--budget``; past it the run gets SIGINT,
saves the cases it measured, and is killed after a grace period. A case the budget left
unmeasured makes its item ``NOT RUN (budget)``; one its own limit cut makes it fail with
"timeout". The other items run in fresh processes of their own, each within its limit.

Exit status (docs/cli.md): 0 all pass, 2 bad input or no CUDA GPU (one line), 3 an item
failed (the work failed: never 1, which means a regression), 4 nothing failed but the budget
left items not run. The GPU is detected without initialising CUDA in this
process (``torch.cuda.is_available()`` under ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, which asks
NVML: torch docs of ``torch.cuda.is_available``).

Untested on GPU: no GPU was available to this work; the thresholds' mechanics, the process
handling and the parsing of saved runs are tested on the CPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.instruments.memory_model import train_memory_estimate
from bench.cli.errors import EXIT_FAILED as EXIT_FAILED_WORK
from bench.workers.proc import describe_exit, run_limited

NAME = "gpu-check"
HELP = "first-run self-check of a CUDA machine: one pass/fail line per GPU figure and path (about 4 min)"

__all__ = ["NAME", "HELP", "CASES", "ITEMS", "Item", "Outcome", "Context", "SuiteRun", "add_arguments", "run",
           "run_items"]

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BUDGET_S = 300.0
SUMMARY_FILE = "gpu-check.json"
NVML_CHECK_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"

# Thresholds: fixed requirements of this check, not tuned on a GPU (docs/bench.md, gpu-check).
CUDAGRAPH_MAX_RATIO = 1.0  # reduce-overhead's step / eager's, same launch-bound shape
COLD_COMPILE_TOLERANCE = 0.20  # |second / first - 1| of compile_time_s
PROFILE_COVERAGE = (0.9, 1.0)
MEMORY_TOLERANCE = 0.30  # |measured / estimate - 1|
TIMER_TOLERANCE = 0.05  # |suite per step / Timer per step - 1|, median of interleaved pairs
TELEMETRY_MIN_WINDOW_S = 3.0
# NVML enforces the limit on a power average; the energy counter's reads at the two ends of a
# few-second window can each be one update period off, so the mean may sit a little above.
POWER_LIMIT_TOLERANCE = 0.05
SUITE_GRACE_S = 20.0  # after SIGINT, how long the suite run may take to save what it measured

# The one suite run's cases (``pytest bench/ --cases``: bench/suite/caselist.py), in the order
# the items need them, so a budget cut drops the last. What a row leaves out is the seed's
# (d2l, train, batch 128, 224x224, fp32, eager, cudnn.benchmark off).
# Batch 8 at 96x96: a train step is about 8 x 5.56 GFLOP x (96/224)^2 = 8 GFLOP, some 0.1 ms of
# an H100's fp32 arithmetic, against about 60 kernels (forward, backward, SGD) launched at a few
# microseconds each: launch-bound, which is where CUDA graphs must pay and where blocked timing
# matters. The compiled cases skip the correctness check: a compiled train case's check compiles
# a second, forward-only graph (its forward under eval() and inference_mode fails dynamo's guards
# on the training flag and grad mode), GPU time this check's budget cannot spare.
B8 = {"mode": "train", "batch_size": 8, "resolution": "96x96", "device": "cuda"}
SEED = {"device": "cuda"}
CASES: dict[str, dict[str, Any]] = {
    "reduce-overhead": {"config": {**B8, "compile": "reduce-overhead"}, "correctness": False},
    "reduce-overhead-again": {"config": {**B8, "compile": "reduce-overhead"}, "label": "again", "correctness": False},
    "eager-b8": {"config": B8, "timer_check": True},
    "fp32": {"config": SEED},  # the seed's step: also the memory item's and cudnn-benchmark's "off"
    "tf32": {"config": {**SEED, "tf32": True}},
    "bf16": {"config": {**SEED, "amp": "bf16"}, "telemetry_seconds": 5.0},
    "bf16-tf32": {"config": {**SEED, "amp": "bf16", "tf32": True}},
    "deterministic": {"config": {**SEED, "deterministic": True}},
    "cudnn-benchmark": {"config": {**SEED, "cudnn_benchmark": True}},
}
# The suite run's options around the cases: the tiny preset's rounds (10), 3 warm-up rounds
# (and the suite's 2 s minimum on CUDA), no NVML window after each case's rounds unless its row
# asks for one (5 s a CUDA case by default; only the telemetry item reads it).
SUITE_ARGS = ["--preset", "tiny", "--warmup-rounds", "3", "--telemetry-seconds", "0"]


def case_id(key: str) -> str:
    """The saved case id of ``CASES[key]`` (the suite's own: `bench.suite.caselist.CaseRow`)."""
    from bench.suite.caselist import load_rows

    [row] = load_rows([CASES[key]], where="gpu-check")
    return row.case_id


class CheckFailed(Exception):
    """An item's check could not be made or did not hold; the message is the figure line."""


class ItemTimeout(Exception):
    """The item ran past its time limit; what it was running has been killed."""


class NotRunBudget(Exception):
    """The budget ran out before the item's cases were measured: not a failure of the GPU."""


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
    cases: tuple[str, ...] = ()  # keys of CASES it reads from the one suite run (none: it starts its own process)


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
    """One ``pytest bench/`` run: its exit status, output and saved run (None if none was saved).

    ``cut``: None, or why it was stopped before its last case ("budget": ``--budget`` ran out;
    "timeout": its own limit, the sum of its items' limits)."""

    returncode: int
    output: str
    doc: dict[str, Any] | None
    log: Path
    cut: str | None = None
    seconds: float = 0.0

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

    def __init__(self, *, root: Path, item: str, deadline: float, shared: dict[str, Any]) -> None:
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

    def suite_output(self) -> str:
        run = self._shared.get("suite")
        return run.output if run is not None else ""

    def suite_machine_info(self) -> dict[str, Any]:
        run = self._shared.get("suite")
        return ((run.doc if run is not None else None) or {}).get("machine_info") or {}

    def case(self, key: str) -> dict[str, Any]:
        """The saved case of ``CASES[key]`` from the one suite run; `NotRunBudget` when the budget
        stopped the run before it, `ItemTimeout` when the run's own limit did, else `need_case`'s
        `CheckFailed` saying why it is missing."""
        run: SuiteRun | None = self._shared.get("suite")
        if run is None:
            raise CheckFailed("the suite run was not made (no item that needs it came first)")
        cid = case_id(key)
        found = find_case_id(run.doc, cid) if run.doc is not None else None
        if found is not None:
            return found
        if run.cut == "budget":
            raise NotRunBudget(f"the budget stopped the suite run before case {cid}")
        if run.cut == "timeout":
            raise ItemTimeout(f"the suite run reached its limit before case {cid}; killed it and its processes")
        return need_case_id(run, cid)


def make_suite_run(root: Path, keys: Sequence[str], *, limit_s: float, by_budget: bool, device: str = "cuda",
                   extra_args: Sequence[str] = (), cases: dict[str, dict[str, Any]] | None = None) -> SuiteRun:
    """The one ``python -m pytest bench/ --cases FILE`` run of ``CASES[keys]`` (in that order),
    saved under ``<root>/runs``, its output in ``<root>/suite.log``.

    Past ``limit_s`` (less a grace period) it gets SIGINT, as a user's Ctrl-C: pytest stops,
    pytest-benchmark saves the cases measured so far, the suite's coordinator closes its zygote
    and workers; whatever is left after the grace is killed with its process group. ``device``
    replaces every row's device; ``cases`` replaces `CASES` (the CPU tests run small rows).
    """
    root.mkdir(parents=True, exist_ok=True)
    cases = CASES if cases is None else cases
    rows = [{**cases[k], "config": {**cases[k]["config"], "device": device}} for k in keys]
    case_file = root / "cases.json"
    case_file.write_text(json.dumps({"cases": rows}, indent=1))
    storage = root / "runs"
    name = "gpu-check"
    cmd = [sys.executable, "-m", "pytest", str(REPO / "bench"), "-p", "no:cacheprovider", "-q", "--cases",
           str(case_file), *SUITE_ARGS, *extra_args, f"--benchmark-save={name}", f"--benchmark-storage=file://{storage}"]
    log = root / "suite.log"
    grace = min(SUITE_GRACE_S, limit_s / 4)
    t0 = time.monotonic()
    with open(log, "wb") as out:
        out.write(("$ " + " ".join(str(c) for c in cmd) + "\n").encode())
        out.flush()
        done = run_limited(cmd, timeout_s=max(limit_s - grace, 0.1), stdout=out, stderr=subprocess.STDOUT,
                           env=_child_env(), cwd=REPO, grace_s=grace, grace_signal=signal.SIGINT)
    saved = sorted(storage.glob(f"*/*_{name}.json"))
    doc = json.loads(saved[-1].read_text()) if saved else None
    cut = ("budget" if by_budget else "timeout") if done.timed_out else None
    return SuiteRun(done.returncode, log.read_text(errors="replace"), doc, log, cut, time.monotonic() - t0)


# --- reading saved runs ---------------------------------------------------------------------


def find_case_id(doc: dict[str, Any] | None, cid: str) -> dict[str, Any] | None:
    """The saved case whose ``extra_info.case_id`` is ``cid``."""
    for b in (doc or {}).get("benchmarks", []):
        if (b.get("extra_info") or {}).get("case_id") == cid:
            return b
    return None


def need_case_id(run: SuiteRun, cid: str) -> dict[str, Any]:
    """`find_case_id`, or `CheckFailed` saying why the case is not there (skip, failure, error)."""
    if run.doc is None:
        raise CheckFailed(f"no run was saved for {cid}: {run.failure_line()}")
    case = find_case_id(run.doc, cid)
    if case is not None:
        return case
    section = run.doc.get("alexnet") or {}
    for s in section.get("skipped") or []:
        if s.get("case_id") == cid:
            raise CheckFailed(f"case {cid} was skipped: {s.get('reason')}")
    for f in section.get("failed") or []:
        if f.get("case_id") == cid:
            raise CheckFailed(f"case {cid} failed: {f.get('reason')}")
    raise CheckFailed(f"no saved case {cid}: {run.failure_line()}")


def _extra(case: dict[str, Any]) -> dict[str, Any]:
    return case.get("extra_info") or {}


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f} ms"


# --- the items: gather (processes) and judge (pure, tested on the CPU) ------------------------


def check_deterministic(ctx: Context) -> Outcome:
    return judge_deterministic(ctx.case("deterministic"))


def judge_deterministic(case: dict[str, Any]) -> Outcome:
    e = _extra(case)
    switches = e.get("backend_switches") or {}
    ok = switches.get("deterministic_algorithms") is True and switches.get("cudnn.deterministic") is True
    return Outcome(ok, f"{e.get('case_id')} ran: {_ms(e.get('step_time_s'))}/step; deterministic_algorithms="
                       f"{switches.get('deterministic_algorithms')}, cudnn.deterministic={switches.get('cudnn.deterministic')}",
                   {"step_time_s": e.get("step_time_s")})


def check_cudnn_benchmark(ctx: Context) -> Outcome:
    return judge_cudnn_benchmark(ctx.case("fp32"), ctx.case("cudnn-benchmark"))


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
    return judge_cudagraphs(ctx.case("reduce-overhead"), ctx.case("eager-b8"), ctx.suite_output())


def judge_cudagraphs(ro: dict[str, Any], eager: dict[str, Any], output: str) -> Outcome:
    e = _extra(ro)
    # The inductor counter that log_cudagraph_skip_and_bump_counter bumps with every skip
    # (torch/_inductor/cudagraph_utils.py); it also logs "skipping cudagraphs due to ...".
    counters = e.get("compile_counters")
    skips = ((counters or {}).get("inductor") or {}).get("cudagraph_skips", 0) if counters is not None else None
    logged = [ln.strip() for ln in output.splitlines() if "skipping cudagraphs" in ln]
    logged += ["(in the saved case) skipping cudagraphs"] if "skipping cudagraphs" in json.dumps(e) else []
    t_ro, t_eager = e.get("step_time_s"), _extra(eager).get("step_time_s")
    ratio = t_ro / t_eager if t_ro and t_eager else None
    problems = []
    if skips:
        problems.append(f"{skips} cudagraph skip(s)")
    if logged:
        problems.append(f"log: {logged[0][:160]}")
    if ratio is None:
        problems.append("a step time is missing")
    elif ratio > CUDAGRAPH_MAX_RATIO:
        problems.append(f"reduce-overhead {ratio:.2f}x eager's step (limit {CUDAGRAPH_MAX_RATIO}x)")
    skip_text = "unknown (no compile_counters saved; the output shows no skip)" if skips is None else str(skips)
    figure = (f"reduce-overhead {_ms(t_ro)} vs eager {_ms(t_eager)} per step"
              + (f" ({ratio:.2f}x, limit {CUDAGRAPH_MAX_RATIO}x)" if ratio else "") + f"; cudagraph_skips {skip_text}")
    if problems:
        figure += "; " + "; ".join(problems)
    return Outcome(not problems, figure, {"cudagraph_skips": skips, "ratio": ratio, "skip_lines": logged[:5]})


def check_cold_compile(ctx: Context) -> Outcome:
    return judge_cold_compile(ctx.case("reduce-overhead"), ctx.case("reduce-overhead-again"))


def judge_cold_compile(first: dict[str, Any], second: dict[str, Any]) -> Outcome:
    """Two cold compiles of one config, each in a fresh worker with empty caches and a warm compile
    pool (`bench.workloads.measure.warm_compile_pool`): like with like."""
    a, b = _extra(first).get("compile_time_s"), _extra(second).get("compile_time_s")
    if not a or not b or a <= 0 or b <= 0:
        return Outcome(False, f"compile_time_s missing or not positive: first {a}, second {b}")
    ratio = b / a
    problems = []
    if abs(ratio - 1) > COLD_COMPILE_TOLERANCE:
        problems.append("the second compiled faster: a cache leaked between workers?" if ratio < 1
                        else "the second compiled slower")
    pids = [(_extra(c).get("isolation") or {}).get("worker_pid") for c in (first, second)]
    if None not in pids and pids[0] == pids[1]:
        problems.append(f"both in worker {pids[0]}: not two cold compiles")
    pools = [(_extra(c).get("compile_pool") or {}) for c in (first, second)]
    cold_pool = [f"{'first' if i == 0 else 'second'} ({p.get('reason') or 'not recorded'})"
                 for i, p in enumerate(pools) if not p.get("warmed")]
    if cold_pool:
        problems.append("compile pool not warmed before the cold step: " + ", ".join(cold_pool))
    pool_s = "/".join(f"{p['seconds']:.1f}" for p in pools if p.get("seconds") is not None)
    figure = (f"compile_time_s {a:.1f} s, then {b:.1f} s in a second worker (ratio {ratio:.2f}, limit 1 +- "
              f"{COLD_COMPILE_TOLERANCE:.0%})" + (f"; pools warmed first in {pool_s} s" if pool_s else ""))
    if problems:
        figure += "; " + "; ".join(problems)
    return Outcome(not problems, figure, {"first_s": a, "second_s": b, "ratio": ratio, "worker_pids": pids})


def _mfu_label(config: dict[str, Any]) -> str:
    if config.get("amp") == "bf16":
        return "bf16" + (" (tf32 on)" if config.get("tf32") else "")
    return "tf32" if config.get("tf32") else "fp32"


def check_mfu(ctx: Context) -> Outcome:
    return judge_mfu([ctx.case(k) for k in ("fp32", "tf32", "bf16", "bf16-tf32")])


def check_timer(ctx: Context) -> Outcome:
    return judge_timer(ctx.case("eager-b8"))


def judge_timer(case: dict[str, Any]) -> Outcome:
    """The suite's blocked rounds (k steps, one sync, / k) against torch.utils.benchmark.Timer's
    blocked_autorange of the same step, interleaved in pairs in the case's worker
    (`bench.workloads.measure.CaseSession.timer_check`)."""
    e = _extra(case)
    tc = e.get("timer_check")
    if not tc or tc.get("ratio_median") is None:
        return Outcome(False, f"no timer_check saved for {e.get('case_id')}")
    r = tc["ratio_median"]
    ok = abs(r - 1) <= TIMER_TOLERANCE
    return Outcome(ok, f"suite {_ms(tc.get('suite_step_s'))} vs Timer {_ms(tc.get('timer_step_s'))} per step "
                       f"({tc.get('steps_per_round')} steps per round; median of {tc.get('pairs')} pairs {r:.3f}, "
                       f"limit 1 +- {TIMER_TOLERANCE:.0%})", {"ratio_median": r, "steps_per_round": tc.get("steps_per_round")})


def check_telemetry(ctx: Context) -> Outcome:
    return judge_telemetry(ctx.case("bf16"), ctx.suite_machine_info().get("gpu_power_limit_w"))


def judge_telemetry(case: dict[str, Any], limit_w: float | None) -> Outcome:
    """The suite's own window of back-to-back steps after the timed rounds (``telemetry_window``),
    read through NVML's energy counter (`bench.instruments.telemetry`)."""
    e = _extra(case)
    t = e.get("telemetry") or {}
    summary = t.get("summary") or {}
    window = (e.get("telemetry_window") or {}).get("seconds")
    energy, mean_w = summary.get("energy_j"), summary.get("power_mean_w")
    problems = []
    if t.get("kind") != "nvml":
        problems.append(f"telemetry is {t.get('kind')!r}, not NVML: {t.get('reason')}")
    if not energy or energy <= 0:
        problems.append(f"energy {energy} J: the counter did not advance")
    if window is None or window < TELEMETRY_MIN_WINDOW_S:
        problems.append(f"window {window} s, shorter than {TELEMETRY_MIN_WINDOW_S:g} s")
    if not summary.get("power_mean_source") or not summary.get("power_sample_source"):
        problems.append("the power source is not recorded")
    if mean_w is not None and limit_w and mean_w > limit_w * (1 + POWER_LIMIT_TOLERANCE):
        problems.append(f"mean power {mean_w:.0f} W above the enforced limit {limit_w:.0f} W (+{POWER_LIMIT_TOLERANCE:.0%})")
    figure = (f"{e.get('case_id')}: {window or 0:.1f} s window, energy {energy or 0:.0f} J"
              + (f", {summary['energy_j_per_image']:.3f} J/image" if summary.get("energy_j_per_image") else "")
              + (f", mean {mean_w:.0f} W ({summary.get('power_mean_source')})" if mean_w is not None else "")
              + (f", limit {limit_w:.0f} W" if limit_w else "") + f"; samples from {summary.get('power_sample_source')}")
    if problems:
        figure += "; " + "; ".join(problems)
    return Outcome(not problems, figure, {"energy_j": energy, "window_s": window, "power_mean_w": mean_w})


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
    return judge_memory(ctx.case("fp32"), train_memory_estimate(batch_size=128, resolution=(224, 224)))


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


# In the order of what only a GPU can prove: a budget cut drops the last ones first.
ITEMS: list[Item] = [
    Item("cudagraphs", check_cudagraphs, 100,
         "compile reduce-overhead: 0 cudagraph skips, step <= eager's (b8, 96x96: launch-bound)",
         ("reduce-overhead", "eager-b8")),
    Item("cold-compile", check_cold_compile, 90,
         "the same reduce-overhead config in a second worker: compile_time_s within 20%, pools warmed",
         ("reduce-overhead", "reduce-overhead-again")),
    Item("mfu", check_mfu, 40, "MFU < 1 for TF32 and bf16 (b128, 224x224); fp32 printed, not judged",
         ("fp32", "tf32", "bf16", "bf16-tf32")),
    Item("timer", check_timer, 20, "blocked rounds vs torch.utils.benchmark.Timer per step within 5% (b8, 96x96)",
         ("eager-b8",)),
    Item("telemetry", check_telemetry, 20,
         "the suite's 5 s NVML window (bf16 case): energy > 0, window >= 3 s, power source, mean <= limit",
         ("bf16",)),
    Item("memory", check_memory, 15,
         "peak memory of the seed's train step (d2l, b128, 224x224, fp32) within 30% of the analytic estimate",
         ("fp32",)),
    Item("deterministic", check_deterministic, 20, "a deterministic CUDA train case runs (b128, 224x224)",
         ("deterministic",)),
    Item("cudnn-benchmark", check_cudnn_benchmark, 20,
         "cudnn.benchmark off and on, each case in its own worker; both step times printed (b128, 224x224)",
         ("fp32", "cudnn-benchmark")),
    Item("profiler", check_profiler, 60,
         "alexnet-bench profile --device cuda: coverage 0.9-1.0, device time in every conv and linear layer"),
    Item("ddp-nccl", check_ddp, 60, "alexnet-bench ddp --nproc 1 --device cuda runs under nccl"),
    Item("nvml-power", check_power, 40, "NVML energy counter advances; mean power above idle, at most the limit"),
]


# --- the time plan (--plan) -----------------------------------------------------------------
# Seconds on one H200 with torch 2.11, from a model of what each item starts. The figures are
# estimates (this CPU machine's measurements where a CPU can show them, the review's 30-60 s
# for a cold compile) until the first real run corrects them (docs/bench.md, "gpu-check").
PLAN_MODEL_S: dict[str, float] = {
    "pytest": 2.0,  # the `pytest bench/` process up to its first case (this CPU machine: 1.0)
    "zygote": 4.0,  # the zygote's torch import, CUDA libraries included (CPU machine: 1.3)
    "probe+calibration": 3.0,  # two workers, each making a CUDA context; the 8192^3 fp32 GEMM
    "case": 3.0,  # fork, CUDA context, build, correctness check, exit (CPU machine: 0.2-0.4 without CUDA)
    "warmup": 2.0,  # the suite's CUDA warm-up lasts at least 2 s (bench.suite.runner.DEFAULT_CUDA_WARMUP_S)
    "rounds": 1.0,  # 10 rounds of k steps at these sizes: well under 0.1 s each on an H200
    "compile pool": 4.0,  # inductor's compile pool started and answering before a CUDA cold compile: a python
    # process importing torch, as the zygote (bench.workloads.measure.warm_compile_pool)
    "compile default": 45.0,  # a cold inductor compile (the review: 30-60 s on an H200, torch 2.11)
    # The same kernels as default; the CUDA-graph recording happens in the warm-up's first calls
    # (cudagraph trees warm up once, then record: torch/_inductor/cudagraph_trees.py), not in the
    # cold step, and takes milliseconds for these graphs.
    "compile reduce-overhead": 45.0,
    "timer check": 2.0,  # 10 pairs of a 0.05 s Timer.blocked_autorange and one round
    "process": 6.0,  # a CLI process that imports torch and makes a CUDA context
}
# The items that start a process of their own: (what, seconds on top of "process").
PROCESS_PLANS: dict[str, tuple[str, float]] = {
    "profiler": ("alexnet-bench profile --device cuda", 10.0),
    "ddp-nccl": ("torchrun, its rank, the 1-process baseline", 2 * PLAN_MODEL_S["process"] + 2.0),
    "nvml-power": ("python -m bench.instruments.power", 5.0),
}
PLAN_TARGET_S = 240.0


def case_plan_s(key: str) -> tuple[float, str]:
    """Estimated seconds of one case of the suite run, and how."""
    m, row = PLAN_MODEL_S, CASES[key]
    seconds = m["case"] + m["warmup"] + m["rounds"]
    parts = [f"{key} {seconds:.0f}"]
    mode = row["config"].get("compile", "off")
    if mode != "off":
        seconds += m["compile pool"] + m[f"compile {mode}"]
        parts.append(f"+ pool {m['compile pool']:.0f} + cold compile {m[f'compile {mode}']:.0f}")
    if row.get("telemetry_seconds"):
        seconds += row["telemetry_seconds"]
        parts.append(f"+ window {row['telemetry_seconds']:.0f}")
    if row.get("timer_check"):
        seconds += m["timer check"]
        parts.append(f"+ Timer {m['timer check']:.0f}")
    return seconds, " ".join(parts)


def plan(items: Sequence[Item]) -> list[tuple[str, float, str]]:
    """(item, estimated seconds, how) for ``items`` in order. The one suite run's start is paid by
    the first item that needs it, each case by the first item that reads it."""
    m = PLAN_MODEL_S
    paid: set[str] = set()
    started = False
    rows = []
    for item in items:
        if not item.cases:
            what, extra = PROCESS_PLANS[item.name]
            rows.append((item.name, m["process"] + extra, f"{what} {m['process'] + extra:.0f}"))
            continue
        total, parts = 0.0, []
        if not started:
            started = True
            fixed = m["pytest"] + m["zygote"] + m["probe+calibration"]
            total += fixed
            parts.append(f"the suite run's start {fixed:.0f}")
        for key in item.cases:
            if key in paid:
                parts.append(f"{key} shared")
                continue
            paid.add(key)
            seconds, how = case_plan_s(key)
            total += seconds
            parts.append(how)
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
    print(f"total {total:.0f} s estimated on an H200 with torch 2.11 ({verdict}). The model: "
          + ", ".join(f"{k} {v:g} s" for k, v in PLAN_MODEL_S.items()), file=out)
    return total


# --- running the items ----------------------------------------------------------------------


def _suite_keys(items: Sequence[Item]) -> list[str]:
    """The suite run's cases: every item's, in item order, each once."""
    return list(dict.fromkeys(k for item in items for k in item.cases))


def run_items(items: Sequence[Item], *, root: Path, budget_s: float = DEFAULT_BUDGET_S,
              out: Any = None, suite_device: str = "cuda") -> list[ItemResult]:
    """Run ``items`` in order, each within min(its timeout, what is left of the budget); print
    each one's line as soon as it is done. The first item that needs suite cases makes the one
    suite run for all of them (`make_suite_run`), within the sum of their limits."""
    out = out or sys.stdout
    shared: dict[str, Any] = {}
    end = time.monotonic() + budget_s
    results = []
    suite_items = [i for i in items if i.cases]
    for item in items:
        t0 = time.monotonic()
        if item.cases and "suite" not in shared and end - t0 > 0:
            want = sum(i.timeout_s for i in suite_items)
            limit = min(want, end - t0)
            run = make_suite_run(root / "suite", _suite_keys(suite_items), limit_s=limit, by_budget=limit < want,
                                 device=suite_device)
            shared["suite"] = run
            n = len((run.doc or {}).get("benchmarks") or [])
            print(f"suite run: {n} of {len(_suite_keys(suite_items))} cases saved in {run.seconds:.0f} s "
                  f"(limit {limit:.0f} s" + (f"; stopped: {run.cut}" if run.cut else "") + f"); log {run.log}",
                  file=out, flush=True)
            t0 = time.monotonic()
        limit = min(item.timeout_s, end - t0)
        by_budget = limit < item.timeout_s
        ctx = Context(root=root, item=item.name, deadline=t0 + limit, shared=shared)
        details: dict[str, Any] = {}
        if limit <= 0 and not (item.cases and "suite" in shared):  # not a failure of the GPU: say so, distinctly
            r = ItemResult(item.name, "not_run", "NOT RUN (budget): the gpu-check budget was spent before it started",
                           0.0, item.timeout_s, {})
            results.append(r)
            print(f"NOT RUN (budget)  {item.name:<16}", file=out, flush=True)
            continue
        try:
            oc = item.check(ctx)
            status, figure, details = ("pass" if oc.passed else "fail"), oc.figure, oc.details
        except NotRunBudget as exc:
            status, figure = "not_run", f"NOT RUN (budget): {exc}"
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
        label = "PASS" if r.passed else "NOT RUN (budget)" if status == "not_run" else "FAIL"
        print(f"{label}  {item.name:<16} {figure}  [{r.seconds:.0f} s]", file=out, flush=True)
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


# Exit status: 0 every item passed; 3 an item failed (or timed out, or errored): the work
# failed, as in every command (bench.cli.errors.EXIT_FAILED); 2 usage, no GPU, or a CUDA runtime
# that does not start; 4 nothing failed, but the budget left items not run.
EXIT_FAILED = EXIT_FAILED_WORK
EXIT_NOT_RUN = 4
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
