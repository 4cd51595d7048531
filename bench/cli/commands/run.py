"""``alexnet-bench run --preset P --save NAME [-- PYTEST_ARGS]``: the benchmark matrix without pytest flags.

It runs ``python -m pytest bench/ --preset P --benchmark-save=NAME
--benchmark-storage=file://DIR [PYTEST_ARGS]`` in a session of its own. Exit status as every
command's (docs/cli.md): 0, 2 for pytest's usage error (a bad axis value), 3 when a case failed
(the run is still saved), 130/143 when SIGINT/SIGTERM interrupted it: the signal is forwarded to
pytest, which saves the cases measured so far, marked interrupted, and this says where. With
``--report OUT`` it then writes the HTML report of the run it just saved.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

NAME = "run"
HELP = "run the benchmark matrix (pytest bench/) and save it; extra args after -- go to pytest"

# bench/ lives next to the alexnet package in the repository (an editable install).
BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"
DEFAULT_STORAGE = ".benchmarks"
_PYTEST_USAGE_ERROR = 4  # pytest.ExitCode.USAGE_ERROR
_PYTEST_INTERRUPTED = 2  # pytest.ExitCode.INTERRUPTED
_SAVE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _presets() -> dict:
    """bench/'s presets; bench/ is not an installed package, so its repository goes on sys.path."""
    if not (BENCH_DIR / "conftest.py").is_file():
        from bench.cli.errors import UsageError

        raise UsageError(f"no benchmark suite at {BENCH_DIR}: run from a source checkout (pip install -e .)")
    root = str(BENCH_DIR.parent)
    if root not in sys.path:
        sys.path.append(root)
    from bench.suite.presets import PRESETS

    return PRESETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    PRESETS = _presets()
    p.add_argument("--preset", default=None,
                   help=f"{' | '.join(PRESETS)} (default: standard with CUDA, else quick)")
    p.add_argument("--save", default=None, metavar="NAME",
                   help="save the run as STORAGE/<machine>/NNNN_NAME.json (default: not saved)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="DIR",
                   help=f"pytest-benchmark storage directory (default {DEFAULT_STORAGE})")
    p.add_argument("--profile-layers", action="store_true", help="also profile each case per layer (untimed)")
    p.add_argument("--report", default=None, metavar="OUT",
                   help="after a saved run, write its HTML report to OUT (alexnet-bench report)")
    p.add_argument("--dry-run", action="store_true", help="print the pytest command and exit")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER,
                   help="after --: passed to pytest, e.g. -- --batch-size 32,64 -k train")


def pytest_command(args: argparse.Namespace) -> list[str]:
    """The exact pytest command line this invocation runs."""
    PRESETS = _presets()

    if args.preset is not None and args.preset not in PRESETS:
        raise ValueError(f"preset {args.preset!r} is not valid; choose from {', '.join(PRESETS)}")
    if args.save is not None and not _SAVE_NAME_RE.match(args.save):
        raise ValueError(f"save name {args.save!r} is not valid; use letters, digits, '.', '_' and '-'")
    if args.report and not args.save:
        raise ValueError("--report needs --save NAME: the report is made from the saved run")
    cmd = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-p", "no:cacheprovider"]
    if args.preset:
        cmd += ["--preset", args.preset]
    if args.save:
        cmd += [f"--benchmark-save={args.save}", f"--benchmark-storage=file://{Path(args.storage).absolute()}"]
    if args.profile_layers:
        cmd.append("--profile-layers")
    extra = list(args.pytest_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return cmd + extra


def run(args: argparse.Namespace) -> int:
    from bench.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED

    cmd = pytest_command(args)
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    storage = Path(args.storage)
    before = set(storage.glob("*/*.json"))
    import signal

    from bench.workers.proc import run_forwarding_signals

    # SIGINT and SIGTERM go to pytest once, and this waits while it saves what it measured (the
    # suite's plugin marks the run interrupted); a second signal kills it and what it started.
    rc, signal_name = run_forwarding_signals(cmd, signals=(signal.SIGINT, signal.SIGTERM), kill_on_repeat=True)
    if rc == _PYTEST_USAGE_ERROR:
        return 2
    new = sorted(set(storage.glob("*/*.json")) - before)
    if signal_name is not None or rc == _PYTEST_INTERRUPTED:
        saved = f"the cases measured so far are saved in {new[-1]}, marked interrupted" if new else "no case was saved"
        print(f"alexnet-bench run: interrupted ({signal_name or 'pytest was interrupted'}); {saved}", file=sys.stderr)
        return EXIT_TERMINATED if signal_name == "SIGTERM" else EXIT_INTERRUPTED
    # Failed cases (a worker that died or timed out: pytest's exit 1) do not cost the others:
    # the run was saved, so it is reported, and the command exits 3 (the work failed; 1 means a
    # regression, never this).
    status = EXIT_FAILED if rc == 1 else rc
    if rc in (0, 1) and args.report and new:
        from bench.cli.commands import report

        # The report command itself, with its own options' defaults; its bad input (a ValueError
        # or UsageError) reaches bench.cli.main like this command's own: one line, exit 2.
        report_parser = argparse.ArgumentParser(prog="alexnet-bench report")
        report.add_arguments(report_parser)
        report_rc = report.run(report_parser.parse_args([str(new[-1]), "--out", args.report]))
        return status or report_rc
    return status
