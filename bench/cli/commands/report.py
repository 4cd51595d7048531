"""``alexnet-bench report [RUN ...] --out DIR``: an HTML page with PNG figures from saved runs.

The report is written into a temporary sibling of DIR and renamed into place only once it is
complete, so a failure (bad run file, a bug while drawing) never leaves a half-written report
that looks finished. Bad input (no runs, unreadable or corrupt JSON, a file that is not a
pytest-benchmark run) exits 2 with one line before anything is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from bench.cli.errors import UsageError

NAME = "report"
HELP = "write DIR/index.html with figures and tables from saved benchmark runs (default: the latest run)"

DEFAULT_OUT = "reports-out"  # ignored by git (.gitignore)
DEFAULT_STORAGE = ".benchmarks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run file path, run id (0003 or 3) or save name; none: the latest run in --storage. "
                        "Two runs add a comparison section (first = baseline)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"report directory; an earlier report there is replaced (default {DEFAULT_OUT})")
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="DIR",
                   help=f"pytest-benchmark storage to search for run ids (default {DEFAULT_STORAGE}; file://DIR also works)")
    p.add_argument("--csv", action="store_true", help="also write every case as DIR/cases.csv")


def _check_out(out: Path) -> None:
    from reports.html import INDEX

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a directory; choose a new or report directory")
    # Only an earlier report (or an empty directory) may be replaced: never a user's other files.
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX).is_file():
        raise UsageError(f"--out {str(out)!r} is not empty and holds no report; choose a new or empty directory")


def write_aside(out: Path, build) -> Path:
    """Build into a temporary sibling of ``out`` and rename it into place; ``build(tmp)`` returns the index path.

    A failed build leaves nothing behind and the earlier folder untouched (used by `history` too).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a page is meant to be read and served
        index = build(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / index.name


def run(args: argparse.Namespace) -> int:
    from reports.html import build_report
    from reports.load import load_runs

    out = Path(args.out).expanduser().absolute()
    _check_out(out)
    runs = load_runs(args.runs, storage=Path(args.storage))  # RunLoadError is a ValueError: one line, exit 2

    pngs: list[str] = []

    def build(tmp: Path) -> Path:
        index = build_report(runs, out_dir=tmp, csv=args.csv)
        pngs.extend(sorted(p.name for p in tmp.glob("*.png")))
        return index

    index = write_aside(out, build)
    cases = sum(len(r.benchmarks) for r in runs)
    print(f"{cases} cases from {', '.join(str(r.path) for r in runs)}; {len(pngs)} figures")
    print(index)
    return 0
