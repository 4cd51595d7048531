"""``alexnet-bench ab BASE_REF HEAD_REF``: interleaved A/B runs of two git refs, then a verdict.

The noise on a shared machine lives between runs (docs/compare.md), so each ref gets N
runs, each a fresh ``python -m pytest bench/`` process, interleaved A, B, A, B ... so that
neighbouring runs share the machine's state, and the comparison tests the pairs (the run is
the unit). Both refs are checked out as detached git worktrees in a temp dir, outside the
repository's working tree, and removed at the end. All runs are saved into one storage dir
through pytest-benchmark's own numbering, which never overwrites an earlier run.

Exit status as ``compare``: 0 no regression, 1 regression, 2 bad input or a run that failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cli import UsageError
from bench.commands.compare import add_judging_options, check_outputs, emit, judging_kwargs

NAME = "ab"
HELP = "run the benchmarks of two git refs interleaved (A, B, A, B ...) and compare them; exit 1 on a regression"

# 15 runs per side, chosen from measurement on the project's 2-core CPU VM (docs/compare.md):
# paced pairs there spread with log-ratio sd ~0.095, and in 60 A/A pairs of two quick cases
# 15 pairs caught a planted x1.10 in 7 of 8 disjoint comparisons and x1.15 in 8 of 8 (6 pairs:
# 5 of 20 and 14 of 20), with 0 false alarms at any size. On a steadier machine (pair sd
# <= 0.058) `--repeats 6` resolves 10%; a paired t-test has no floor on p at any n >= 2.
DEFAULT_REPEATS = 15
DEFAULT_STORAGE = Path(".benchmarks") / "ab"
LOG_TAIL_LINES = 15


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base_ref", metavar="BASE_REF", help="git ref of the baseline (e.g. origin/main, HEAD~1)")
    p.add_argument("head_ref", metavar="HEAD_REF", help="git ref of the candidate (e.g. HEAD)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help=f"runs per ref (default {DEFAULT_REPEATS}; >= 2)")
    p.add_argument("--preset", default="quick", help="bench preset passed to pytest (default quick)")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression selecting the cases")
    p.add_argument("--pytest-args", default="", metavar="ARGS", help="more pytest arguments, one quoted string")
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


def _saved(storage: Path) -> set[Path]:
    return set(storage.glob("*/*.json")) if storage.is_dir() else set()


def _bench_run(
    worktree: Path, *, name: str, storage: Path, preset: str, extra: list[str], log: Path
) -> Path:
    """One fresh pytest process in ``worktree``; returns the run file it saved."""
    before = _saved(storage)
    cmd = [
        sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q",
        f"--benchmark-save={name}", f"--benchmark-storage=file://{storage}", "--preset", preset, *extra,
    ]
    # PYTHONPATH: the worktree's own `alexnet` package, not the one this command runs from.
    env = {**os.environ, "PYTHONPATH": str(worktree)}
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, cwd=worktree, env=env, stdout=fh, stderr=subprocess.STDOUT)
    new = sorted(_saved(storage) - before)
    if proc.returncode != 0 or len(new) != 1:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print("\n".join(tail), file=sys.stderr)
        what = f"exit status {proc.returncode}" if proc.returncode != 0 else f"{len(new)} run files saved, expected 1"
        raise UsageError(f"benchmark run {name} failed ({what}): {shlex.join(cmd)} in {worktree}")
    return new[0]


def run(args: argparse.Namespace) -> int:
    from reports.compare import compare_runs
    from reports.load import load_run

    if args.repeats < 2:
        raise UsageError(f"--repeats {args.repeats} is not valid; it must be >= 2 (default {DEFAULT_REPEATS})")
    check_outputs(args)
    repo = Path(_git(args.repo, "rev-parse", "--show-toplevel"))
    shas = {"base": _resolve(repo, args.base_ref), "head": _resolve(repo, args.head_ref)}
    refs = {"base": args.base_ref, "head": args.head_ref}
    storage = args.storage.resolve()
    storage.mkdir(parents=True, exist_ok=True)
    extra = (["-k", args.keyword] if args.keyword else []) + shlex.split(args.pytest_args)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())

    tmp = Path(tempfile.mkdtemp(prefix="alexnet-ab-"))
    trees: dict[str, Path] = {}
    runs: dict[str, list[Path]] = {"base": [], "head": []}
    try:
        for side in ("base", "head"):
            trees[side] = tmp / side
            _git(repo, "worktree", "add", "--detach", "--quiet", str(trees[side]), shas[side])
            if not (trees[side] / "bench").is_dir():
                raise UsageError(f"{side} ref {refs[side]!r} ({shas[side][:8]}) has no bench/ directory: nothing to run")
        total = 2 * args.repeats
        t_start = time.monotonic()
        for i in range(args.repeats):
            for side in ("base", "head"):  # A, B, A, B ...: run i of each side forms pair i
                k = 2 * i + (side == "head") + 1
                t0 = time.monotonic()
                name = f"ab-{stamp}-{side}-{shas[side][:8]}-{i + 1}"
                path = _bench_run(
                    trees[side], name=name, storage=storage, preset=args.preset, extra=extra, log=tmp / f"{name}.log"
                )
                runs[side].append(path)
                print(
                    f"[{k}/{total}] {side} {refs[side]} ({shas[side][:8]}): {time.monotonic() - t0:.0f} s -> {path.name}",
                    file=sys.stderr,
                    flush=True,
                )
        print(f"ab: {total} runs in {(time.monotonic() - t_start) / 60:.1f} min, saved in {storage}", file=sys.stderr)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    baseline = [load_run(p) for p in runs["base"]]
    candidate = [load_run(p) for p in runs["head"]]
    comparison = compare_runs(baseline, candidate, paired=True, **judging_kwargs(args))
    comparison.notes.append(
        "re-judge these runs with: alexnet-bench compare --paired --storage "
        f"{shlex.quote(str(storage))} --baseline {' '.join(r.run_id for r in baseline)} "
        f"--candidate {' '.join(r.run_id for r in candidate)}"
    )
    return emit(comparison, args)
