"""``alexnet-bench ab BASE_REF HEAD_REF``: duet sessions of two git refs (or two environments), then a verdict.

By default each selected step case runs as ``--repeats`` duet sessions (`bench.duet.session`): a
fresh base worker and a fresh head worker, rounds alternated A B B A ..., so both sides see the
same machine at every moment; the session is the unit of the test (docs/compare.md, "Duet").
Each duet worker pins glibc's malloc thresholds before building (``--malloc pinned``,
`bench.instruments.allocator`) and runs ``--rewarm`` untimed steps before each timed round: together they
cut this VM's A/A session spread from sd 0.085 to 0.027.
Only the measured subject (`alexnet.subject`: model, step, config handling) comes from each
ref's worktree; the timing, the pace kernel and the worker protocol are this tool's, on both
sides. ``--base-python`` / ``--head-python`` run a side under another interpreter, e.g. a venv
with another torch: "did upgrading PyTorch slow AlexNet down?".

The process-level flow (A, B, A, B ..., each a fresh ``python -m pytest bench/`` in that ref's
worktree, with that ref's own instrument) is used, with a note saying so, for a ref that
predates the duet's entry point (no ``alexnet/subject.py``), and for training-loop cases.

Each case runs up to ``--repeats`` sessions and stops at the first look (4, 6, 8, 10, 12, 15, 20, 25,
30 sessions) that decides (`reports.compare.sequential`: O'Brien-Fleming boundaries, an
``unchanged`` stop when the 90% interval lies within the threshold); ``--fixed`` runs them
all. Each side keeps its own compile cache across a case's sessions after the first, which
compiles cold on both sides.

All runs are saved under ``--storage`` (default .benchmarks/ab) through pytest-benchmark's own
storage, which never overwrites an earlier run; the note at the end names them by the
invocation's tag, so ``alexnet-bench compare --paired --sessions ab-<time>`` re-judges them.

Exit status as ``compare``: 0 no regression, 1 regression, 2 bad input; 3 a benchmark run or a
duet session that failed (docs/cli.md).
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cli.errors import CommandFailed, UsageError
from bench.cli.commands.compare import add_judging_options, check_outputs, emit, judging_kwargs

NAME = "ab"
HELP = "run two git refs (or two interpreters) side by side in duet sessions and compare them; exit 1 on a regression"

# Sessions per case (at most: the sequential rule stops earlier), rounds per side per session and
# the estimator, chosen from measurement on the project's 2-core CPU VM (docs/compare.md, "Duet"):
# with these and the duet threshold (reports.compare.DUET_THRESHOLD) a true x1.05 is flagged at
# least 9 times in 10, a true x1.02 at most 1 in 10, and no A/A comparison.
DEFAULT_REPEATS = 30
DEFAULT_ROUNDS = 10
DEFAULT_ESTIMATOR = "adjacent"
# Each side's launcher (zygote) forks this many sessions' workers, then both are restarted. A
# restart costs both sides a torch (and torch._dynamo) import at once: a session with one took
# 14-16 s against 8 s for the quick bf16 train case (docs/compare.md, "What it costs"); 4 until
# 2026-12-03.
SESSIONS_PER_LAUNCHER = 8
# Untimed steps after a worker's cold step, before its first round (each timed round has its own
# re-warming step too, below); 2 until 2026-12-03.
DEFAULT_WARMUP = 1
# Untimed steps right before each timed round (bench.instruments.timing.timed_rounds), and glibc's malloc
# thresholds pinned in every duet worker (bench.instruments.allocator): the two fixes of the per-worker
# effect measured in docs/compare.md, "Duet".
DEFAULT_REWARM = 1
MALLOC_CHOICES = ("pinned", "default")
DEFAULT_MALLOC = "pinned"
MIN_ROUNDS = 4
SESSION_TIMEOUT_S = 900.0
DEFAULT_STORAGE = Path(".benchmarks") / "ab"
LOG_TAIL_LINES = 15
# Environment fields a side under --base-python/--head-python may change on purpose.
INTENDED_WITH_PYTHON = ("torch", "cuda", "cudnn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base_ref", metavar="BASE_REF", help="git ref of the baseline (e.g. origin/main, HEAD~1)")
    p.add_argument("head_ref", metavar="HEAD_REF", help="git ref of the candidate (e.g. HEAD)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help=f"sessions per case: each a fresh pair of workers (default {DEFAULT_REPEATS}; >= 2); "
                        "in the process-level flow, runs per ref")
    p.add_argument("--fixed", action="store_true",
                   help="run all --repeats sessions of every case and judge them with one t-test (no sequential "
                        "stops; for studies that need every session, docs/compare.md)")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help=f"timed rounds per side per session (default {DEFAULT_ROUNDS}; >= {MIN_ROUNDS})")
    p.add_argument("--rewarm", type=int, default=DEFAULT_REWARM,
                   help=f"untimed steps right before each timed round (default {DEFAULT_REWARM}; >= 0)")
    p.add_argument("--malloc", default=DEFAULT_MALLOC,
                   help=f"glibc malloc thresholds in the duet workers: pinned or default (default {DEFAULT_MALLOC})")
    p.add_argument("--estimator", default=DEFAULT_ESTIMATOR,
                   help=f"how a session becomes one ratio: raw, paced or adjacent (default {DEFAULT_ESTIMATOR})")
    p.add_argument("--preset", default="quick", help="bench preset the cases come from (default quick)")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression selecting the cases")
    p.add_argument("--pytest-args", default="", metavar="ARGS",
                   help="more pytest arguments for selecting cases (axis overrides), one quoted string")
    p.add_argument("--base-python", metavar="PATH", help="interpreter for the base side's workers (default: this one)")
    p.add_argument("--head-python", metavar="PATH", help="interpreter for the head side's workers (default: this one)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random session orders (default: random)")
    p.add_argument("--repo", type=Path, default=Path("."), help="the git repository (default: the current dir)")
    p.add_argument(
        "--storage", type=Path, default=DEFAULT_STORAGE, help=f"where the runs are saved (default {DEFAULT_STORAGE})"
    )
    add_judging_options(p)


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise UsageError(f"git {' '.join(args)}: {msg}")
    return proc.stdout.strip()


def _resolve(repo: Path, ref: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise UsageError(f"git ref {ref!r} is not a commit in {repo}")
    return proc.stdout.strip()


def _python(path: str | None, side: str) -> str:
    if path is None:
        return sys.executable
    p = Path(path).expanduser()
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise UsageError(f"--{side}-python {path!r} is not an executable interpreter")
    return str(p)


def _saved(storage: Path) -> set[Path]:
    return set(storage.glob("*/*.json")) if storage.is_dir() else set()


def _bench_run(
    worktree: Path, *, name: str, storage: Path, preset: str, extra: list[str], log: Path, python: str
) -> Path:
    """One fresh pytest process in ``worktree`` (the ref's own instrument); returns the run file it saved."""
    before = _saved(storage)
    cmd = [
        python, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q",
        f"--benchmark-save={name}", f"--benchmark-storage=file://{storage}", "--preset", preset, *extra,
    ]
    # PYTHONPATH: the worktree's own packages, not the ones this command runs from.
    env = {**os.environ, "PYTHONPATH": str(worktree)}
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, cwd=worktree, env=env, stdout=fh, stderr=subprocess.STDOUT)
    new = sorted(_saved(storage) - before)
    if proc.returncode != 0 or len(new) != 1:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print("\n".join(tail), file=sys.stderr)
        what = f"exit status {proc.returncode}" if proc.returncode != 0 else f"{len(new)} run files saved, expected 1"
        raise CommandFailed(f"benchmark run {name} failed ({what}): {shlex.join(cmd)} in {worktree}")
    return new[0]


def _process_flow(trees: dict[str, Path], *, refs: dict[str, str], shas: dict[str, str], pythons: dict[str, str],
                  repeats: int, storage: Path, preset: str, extra: list[str], stamp: str, tmp: Path,
                  what: str) -> dict[str, list[Path]]:
    """A, B, A, B ...: ``repeats`` fresh pytest runs per ref, interleaved so that pair i shares the machine."""
    runs: dict[str, list[Path]] = {"base": [], "head": []}
    total = 2 * repeats
    t_start = time.monotonic()
    for i in range(repeats):
        for side in ("base", "head"):
            k = 2 * i + (side == "head") + 1
            t0 = time.monotonic()
            name = f"ab-{stamp}-{side}-{shas[side][:8]}-{what}-{i + 1}"
            path = _bench_run(trees[side], name=name, storage=storage, preset=preset, extra=extra,
                              log=tmp / f"{name}.log", python=pythons[side])
            runs[side].append(path)
            print(f"[{k}/{total}] {side} {refs[side]} ({shas[side][:8]}): {time.monotonic() - t0:.0f} s -> {path.name}",
                  file=sys.stderr, flush=True)
    print(f"ab: {total} process-level runs in {(time.monotonic() - t_start) / 60:.1f} min", file=sys.stderr)
    return runs


def _env_check(sides: dict, args: argparse.Namespace, pythons_differ: bool) -> tuple[list[str], list[str]]:
    """The environment fields that differ between the sides: (allowed names, lines to print)."""
    from reports.compare import ENV_FIELDS

    allowed = set(args.allow_env_diff) | (set(INTENDED_WITH_PYTHON) if pythons_differ else set())
    lines, refused, names = [], [], []
    for name, key in ENV_FIELDS.items():
        b = sides["base"].probe["machine_info"].get(key)
        h = sides["head"].probe["machine_info"].get(key)
        if key == "cpu_model":
            b = b or (sides["base"].probe["machine_info"].get("cpu") or {}).get("brand_raw")
            h = h or (sides["head"].probe["machine_info"].get("cpu") or {}).get("brand_raw")
        if str(b) != str(h):
            line = f"{key}: base {b}, head {h}"
            (lines if name in allowed else refused).append(line)
            if name in allowed:
                names.append(name)
    if refused and not args.allow_env_mismatch:
        raise UsageError("environments differ: " + "; ".join(refused)
                         + " (only torch, cuda and cudnn may differ between --base-python and --head-python; "
                           "pass --allow-env-mismatch to compare anyway)")
    return names, lines


def run(args: argparse.Namespace) -> int:
    from reports.compare import DUET_ESTIMATORS, compare_runs
    from reports.load import load_run

    if args.repeats < 2:
        raise UsageError(f"--repeats {args.repeats} is not valid; it must be >= 2 (default {DEFAULT_REPEATS})")
    if args.rounds < MIN_ROUNDS:
        raise UsageError(f"--rounds {args.rounds} is not valid; it must be >= {MIN_ROUNDS} (default {DEFAULT_ROUNDS})")
    if args.rewarm < 0:
        raise UsageError(f"--rewarm {args.rewarm} is not valid; it must be >= 0 (default {DEFAULT_REWARM})")
    if args.malloc not in MALLOC_CHOICES:
        raise UsageError(f"--malloc {args.malloc!r} is not valid; choose from {', '.join(MALLOC_CHOICES)}")
    if args.estimator not in DUET_ESTIMATORS:
        raise UsageError(f"--estimator {args.estimator!r} is not valid; choose from {', '.join(DUET_ESTIMATORS)}")
    check_outputs(args)
    pythons = {"base": _python(args.base_python, "base"), "head": _python(args.head_python, "head")}
    repo = Path(_git(args.repo, "rev-parse", "--show-toplevel"))
    shas = {"base": _resolve(repo, args.base_ref), "head": _resolve(repo, args.head_ref)}
    refs = {"base": args.base_ref, "head": args.head_ref}
    storage = args.storage.resolve()
    storage.mkdir(parents=True, exist_ok=True)
    extra_args = shlex.split(args.pytest_args)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="alexnet-ab-"))
    trees: dict[str, Path] = {}
    base_runs: list[Path] = []
    head_runs: list[Path] = []
    notes: list[str] = []
    intended: list[str] = []
    try:
        for side in ("base", "head"):
            trees[side] = tmp / side
            _git(repo, "worktree", "add", "--detach", "--quiet", str(trees[side]), shas[side])
            if not (trees[side] / "bench").is_dir():
                raise UsageError(f"{side} ref {refs[side]!r} ({shas[side][:8]}) has no bench/ directory: nothing to run")
        missing = [s for s in ("base", "head") if not (trees[s] / "alexnet" / "subject.py").is_file()]
        pytest_k = ["-k", args.keyword] if args.keyword else []
        if missing:
            which = " and ".join(f"{s} ref {refs[s]!r} ({shas[s][:8]})" for s in missing)
            note = (f"{which} predates the duet's subject entry point (alexnet/subject.py): both refs ran in the "
                    f"process-level flow, {args.repeats} fresh pytest runs per ref interleaved A, B, A, B, each "
                    "with its own ref's instrument")
            print(f"ab: {note}", file=sys.stderr, flush=True)
            notes.append(note)
            runs = _process_flow(trees, refs=refs, shas=shas, pythons=pythons, repeats=args.repeats, storage=storage,
                                 preset=args.preset, extra=pytest_k + extra_args, stamp=stamp, tmp=tmp, what="run")
            base_runs, head_runs = runs["base"], runs["head"]
        else:
            base_runs, head_runs, notes, intended = _duet_flow(args, trees=trees, refs=refs, shas=shas,
                                                               pythons=pythons, storage=storage, stamp=stamp,
                                                               rng=rng, tmp=tmp, extra_args=extra_args)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    baseline = [load_run(p) for p in base_runs]
    candidate = [load_run(p) for p in head_runs]
    kwargs = judging_kwargs(args)
    kwargs["allow_env_diff"] = sorted(set(kwargs.get("allow_env_diff") or ()) | set(intended))
    comparison = compare_runs(baseline, candidate, paired=True, **kwargs)
    comparison.notes[:0] = notes
    comparison.notes.append(
        f"re-judge these {len(base_runs)} run pairs with: alexnet-bench compare --paired --sessions ab-{stamp}"
        + f" --storage {shlex.quote(str(storage))}"
        + (f" --allow-env-diff {','.join(kwargs['allow_env_diff'])}" if kwargs["allow_env_diff"] else "")
    )
    return emit(comparison, args)


# NVML's compute modes (nvmlComputeMode_t) that refuse a second process on the device.
_ONE_PROCESS_MODES = {2: "PROHIBITED", 3: "EXCLUSIVE_PROCESS"}


def compute_mode_refusal(machine_info: dict[str, Any], cases: list[dict[str, Any]]) -> str | None:
    """Why a duet cannot run its CUDA cases on this GPU, or None: a duet keeps both sides' workers
    alive on the device at once, which EXCLUSIVE_PROCESS (and PROHIBITED) compute modes refuse."""
    mode = machine_info.get("gpu_compute_mode")
    on_gpu = any(str((c.get("config") or {}).get("device", "")).startswith("cuda") for c in cases)
    if not on_gpu or mode not in _ONE_PROCESS_MODES:
        return None
    return (f"the GPU's compute mode is {_ONE_PROCESS_MODES[mode]}: a duet needs both sides' workers on it at once; "
            "set it to DEFAULT (nvidia-smi -c DEFAULT) or run the cases on the CPU")


def _duet_flow(args: argparse.Namespace, *, trees: dict[str, Path], refs: dict[str, str], shas: dict[str, str],
               pythons: dict[str, str], storage: Path, stamp: str, rng: random.Random, tmp: Path,
               extra_args: list[str]) -> tuple[list[Path], list[Path], list[str], list[str]]:
    """Duet sessions for the step cases; the process-level flow for training-loop cases."""
    import math

    from bench.duet.session import (CompileCaches, DuetSide, Launchers, collect_cases, probe_sides, run_session,
                                    running_estimate, save_side_run, shim_dir, side_commit_info)
    from reports.compare import DUET_THRESHOLD, duet_session_log_ratio
    from reports.compare.sequential import decide, design, looks

    import bench

    tool_root = Path(bench.__file__).resolve().parent.parent
    try:
        cases = collect_cases(tool_root, preset=args.preset, keyword=args.keyword, pytest_args=extra_args,
                              python=sys.executable)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not cases:
        raise UsageError(f"no case of preset {args.preset!r} matches -k {args.keyword!r}")
    shim = shim_dir(tmp)
    sides = {s: DuetSide(name=s, ref=refs[s], sha=shas[s], worktree=trees[s], python=pythons[s], shim=shim)
             for s in ("base", "head")}
    probe_sides(sides, tmp)
    for side in sides.values():
        side.commit_info = side_commit_info(side.worktree)
    refusal = compute_mode_refusal(sides["head"].probe["machine_info"], cases)
    if refusal:
        raise UsageError(refusal)
    intended, lines = _env_check(sides, args, pythons["base"] != pythons["head"])
    for line in lines:
        print(f"intended difference: {line}", flush=True)
    for name, side in sides.items():
        mi = side.probe["machine_info"]
        print(f"{name}: {side.ref} ({side.sha[:8]}), python {side.python}, torch {mi.get('torch_version')}, "
              f"CUDA {mi.get('cuda_version')}, cuDNN {mi.get('cudnn_version')}", file=sys.stderr, flush=True)
    notes: list[str] = []
    base_runs: list[Path] = []
    head_runs: list[Path] = []
    # The dumped kind strings (bench.suite.plugin), as types, once.
    from bench.workloads.workload import LoopWorkload, StepWorkload, workload_for

    step_cases = [c for c in cases if workload_for(c["kind"]) is StepWorkload]
    loop_cases = [c for c in cases if workload_for(c["kind"]) is LoopWorkload]
    t_all = time.monotonic()
    launchers = Launchers(sides, tmp, sessions_per_launcher=SESSIONS_PER_LAUNCHER)
    # The sequential rule (reports.compare.sequential): look after 4, 6, 8, 10, 12, 15, 20, ... sessions, stop when it knows.
    counts = looks(args.repeats)
    plan = None if args.fixed else design(args.repeats, alpha=args.alpha)
    threshold = args.threshold if args.threshold is not None else DUET_THRESHOLD
    ran: list[int] = []
    for k, case in enumerate(step_cases, 1):
        ratios: list[float] = []
        t_case = time.monotonic()
        label = f"[case {k}/{len(step_cases)} {case['case_id']}]"
        caches = CompileCaches(tmp, case["case_id"])
        stop = None
        try:
            for i in range(1, args.repeats + 1):
                try:
                    session = run_session(launchers, case["config"], index=i, rounds=args.rounds,
                                          warmup=DEFAULT_WARMUP, rng=rng, timeout_s=SESSION_TIMEOUT_S,
                                          rewarm=args.rewarm, malloc=args.malloc, compile_caches=caches)
                except Exception as exc:  # noqa: BLE001 - one line, exit 3, what was saved stays saved
                    launchers.close()
                    raise CommandFailed(f"duet session {i} of {case['case_id']} failed: {exc}") from None
                for side, runs in (("base", base_runs), ("head", head_runs)):
                    runs.append(save_side_run(storage=storage, name=f"ab-{stamp}-{side}-{shas[side][:8]}-c{k}-{i}",
                                              side=sides[side], config=case["config"], case_id=case["case_id"],
                                              session=session, estimator=args.estimator, stamp=stamp,
                                              sequential=plan))
                d = duet_session_log_ratio(session.samples["base"], session.samples["head"],
                                           estimator=args.estimator, base_pace=session.pace["base"],
                                           head_pace=session.pace["head"])
                ratios.append(d)
                print(f"{label} session {i}/{args.repeats}: x{math.exp(d):.3f} in {session.wall_s:.0f} s"
                      f"{' (cold compile caches)' if i == 1 else ''}; running estimate {running_estimate(ratios)}",
                      file=sys.stderr, flush=True)
                stop = None if args.fixed else decide(ratios, counts, alpha=args.alpha, threshold=threshold)
                if stop is not None and stop.verdict is not None:
                    break
        finally:
            caches.close()
        ran.append(len(ratios))
        why = f"look {len(ratios)}: {stop.verdict}" if stop is not None and stop.verdict else "no look decided"
        print(f"{label} {len(ratios)} sessions in {(time.monotonic() - t_case) / 60:.1f} min ({why})",
              file=sys.stderr, flush=True)
    launchers.close()
    if step_cases:
        how = ("fixed-count duets: " if args.fixed else "sequential duets: up to ") + f"{args.repeats} sessions"
        looked = "" if args.fixed else f"looks at {'/'.join(map(str, counts))}; "
        notes.append(f"{len(step_cases)} step case(s) ran as {how} "
                     f"({looked}ran {', '.join(map(str, ran))}) x {args.rounds} "
                     f"rounds per side ({args.rewarm} untimed step(s) before each, malloc {args.malloc}), "
                     f"{args.estimator} estimator; compile caches fresh in each case's first session, then reused "
                     f"per side; in {(time.monotonic() - t_all) / 60:.1f} min")
    if loop_cases:
        note = (f"{len(loop_cases)} training-loop case(s) ran in the process-level flow ({args.repeats} fresh pytest "
                "runs per ref, interleaved): a loop case's input pipeline is not part of the duet's subject entry point")
        print(f"ab: {note}", file=sys.stderr, flush=True)
        notes.append(note)
        ids = " or ".join(c["case_id"] for c in loop_cases)
        runs = _process_flow(trees, refs=refs, shas=shas, pythons=pythons, repeats=args.repeats, storage=storage,
                             preset=args.preset, extra=["-k", f"test_loop and ({ids})", *extra_args], stamp=stamp,
                             tmp=tmp, what="loop")
        base_runs += runs["base"]
        head_runs += runs["head"]
    return base_runs, head_runs, notes, intended
