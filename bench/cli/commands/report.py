"""``alexnet-bench report [RUN ...] --out DIR``: an HTML page with PNG figures from saved runs.

``--out`` follows the one output-folder policy (`bench.cli.outdir`, docs/cli.md): the report is
built in a temporary sibling of DIR and renamed into place only once it is complete, so a
failure (bad run file, a bug while drawing) never leaves a half-written report that looks
finished; an earlier report there is replaced, a folder holding anything else is refused. Bad
input (no runs, unreadable or corrupt JSON, a file that is not a pytest-benchmark run) exits 2
with one line before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.outdir import POLICY, check_out_dir, write_out_dir

NAME = "report"
HELP = "write DIR/index.html with figures and tables from saved benchmark runs (default: the latest run)"

DEFAULT_OUT = "reports-out"  # ignored by git (.gitignore)
DEFAULT_STORAGE = ".benchmarks"
REPORT_TITLE = "AlexNet benchmark report"  # reports.html's page title (no import: fast --help)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run file path, run id (0003 or 3) or save name; none: the latest run in --storage. "
                        "Two runs add a comparison section (first = baseline)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"report folder (default {DEFAULT_OUT}): {POLICY}")
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="DIR",
                   help=f"pytest-benchmark storage to search for run ids (default {DEFAULT_STORAGE}; file://DIR also works)")
    p.add_argument("--csv", action="store_true", help="also write every case as DIR/cases.csv")


def is_legacy_report(out: Path, entries: list[str]) -> bool:
    """A report written before the output marker: its own index.html, PNGs and cases.csv, nothing else."""
    from reports.html import CSV_NAME, INDEX

    if INDEX not in entries or any(not (e in (INDEX, CSV_NAME) or e.endswith(".png")) for e in entries):
        return False
    head = (out / INDEX).read_text(encoding="utf-8", errors="replace")[:2000]
    return f"<title>{REPORT_TITLE}</title>" in head


def run(args: argparse.Namespace) -> int:
    from reports.html import build_report
    from reports.load import load_runs

    out = Path(args.out).expanduser().absolute()
    # Inputs, then the output folder, both before anything is written (RunLoadError is a ValueError: exit 2).
    runs = load_runs(args.runs, storage=Path(args.storage))
    check_out_dir(out, NAME, "report", legacy=is_legacy_report)

    pngs: list[str] = []

    def build(tmp: Path) -> Path:
        index = build_report(runs, out_dir=tmp, csv=args.csv)
        pngs.extend(sorted(p.name for p in tmp.glob("*.png")))
        return index

    index = out / write_out_dir(out, NAME, build).name
    cases = sum(len(r.benchmarks) for r in runs)
    print(f"{cases} cases from {', '.join(str(r.path) for r in runs)}; {len(pngs)} figures")
    print(index)
    return 0
