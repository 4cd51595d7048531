"""``alexnet-bench history [RUN_OR_DIR ...] [--out DIR]``: trends across commits, with change points.

Reads every saved run under the given files or folders (default ``.benchmarks``, leaving out
``.benchmarks/ab``), groups them into series (one case on one machine), finds change points
(a permutation-tested scan by default, ruptures' PELT with ``--detector pelt``), and writes
``DIR/index.html`` with one figure per series and the change-point table at the top
(docs/history.md). ``--out`` (default ``history-page``) follows the one
output-folder policy (`bench.cli.outdir`, docs/cli.md): the page is built in a temporary sibling
of DIR and renamed into place only when complete; an earlier history page there is replaced,
any other non-empty folder is refused. ``--json`` and ``--markdown`` files are never
overwritten.

Exit status: 0 done (files that are not readable runs are skipped, listed on stderr and on the
page); 1 with ``--fail-on-regression`` when the newest segment of a series is a regression
(interval above 1 + threshold) not accepted; 2 bad input (one line): a missing folder, no runs,
``--strict`` with skipped files, a bad option.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.cli.errors import UsageError, append_step_summary, check_new_file, write_output
from bench.cli.outdir import POLICY, check_out_dir, write_out_dir
from bench.cli.commands.compare import fraction

NAME = "history"
HELP = "trends of saved runs across commits, with change points: DIR/index.html (nightly CI: --fail-on-regression)"

DEFAULT_STORAGE = ".benchmarks"
DEFAULT_OUT = "history-page"  # ignored by git (.gitignore)
EXIT_REGRESSION = 1
EXIT_USAGE = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", metavar="RUN_OR_DIR",
                   help="saved-run files or folders searched for *.json (default: --storage, without its ab/ folder)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="DIR",
                   help=f"pytest-benchmark storage read when no RUN_OR_DIR is given (default {DEFAULT_STORAGE})")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"page folder, DIR/index.html and one PNG per series (default {DEFAULT_OUT}): {POLICY}")
    p.add_argument("--json", type=Path, metavar="FILE", help="write series and change points as JSON (never overwritten)")
    p.add_argument("--markdown", type=Path, metavar="FILE",
                   help="write the markdown summary (never overwritten; also appended to $GITHUB_STEP_SUMMARY when set)")
    p.add_argument("--threshold", type=fraction, default=0.05,
                   help="smallest change that counts, e.g. 5%% (default 5%%); smaller ones are listed as minor")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 if the newest segment of a series is a regression whose 95%% interval lies above "
                        "1 + threshold (or creep does), unless accepted")
    p.add_argument("--accept", action="append", default=[], metavar="COMMIT[:CASE]",
                   help="record an intended change in the acceptance file (repeatable); it then no longer fails")
    p.add_argument("--reason", metavar="TEXT", help="why the --accept changes are intended (saved with them)")
    p.add_argument("--accepted-file", type=Path, metavar="FILE",
                   help="the acceptance file (default: benchmarks-accepted.json at the root of --repo)")
    p.add_argument("--strict", action="store_true", help="exit 2 if any file had to be skipped")
    p.add_argument("--repo", type=Path, default=Path("."),
                   help="git repository whose first-parent history orders the commits (default: the current dir)")
    p.add_argument("--ref", default="HEAD", help="the ref whose first-parent history is followed (default HEAD)")
    p.add_argument("--no-pace", dest="pace", action="store_false",
                   help="judge raw medians, not rounds divided by the pace GEMM timed around each")
    p.add_argument("--detector", choices=("scan", "pelt"), default="scan",
                   help="change-point detector: scan (default: binary segmentation, a permutation test at 1%% "
                        "false alarms per series) or pelt (ruptures' PELT, the earlier default); docs/history.md")


def _repo_root(repo: Path) -> Path:
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else repo


def is_legacy_page(out: Path, entries: list[str]) -> bool:
    """A history page written before the output marker: its own index.html and PNGs, nothing else."""
    from reports.history_page import HISTORY_MARKER
    from reports.html import INDEX

    if INDEX not in entries or any(e != INDEX and not e.endswith(".png") for e in entries):
        return False
    return HISTORY_MARKER in (out / INDEX).read_text(encoding="utf-8", errors="replace")[:500]


def _check_outputs(args: argparse.Namespace, out: Path) -> None:
    check_new_file(args.json, "--json")
    check_new_file(args.markdown, "--markdown")
    check_out_dir(out, NAME, "history page", legacy=is_legacy_page)


def run(args: argparse.Namespace) -> int:
    from reports.history import build_history
    from reports.history_accept import ACCEPTED_FILE, add_acceptances, parse_accept, read_acceptances
    from reports.history_page import build_page, to_markdown

    out = Path(args.out).expanduser().absolute()
    _check_outputs(args, out)
    accepted_file = args.accepted_file or _repo_root(args.repo) / ACCEPTED_FILE
    if args.reason and not args.accept:
        raise UsageError("--reason goes with --accept COMMIT[:CASE]; give both or neither")
    new = [parse_accept(a, reason=args.reason) for a in args.accept]
    acceptances = read_acceptances(accepted_file) + new
    history = build_history(args.sources, storage=args.storage, repo=args.repo, ref=args.ref,
                            threshold=args.threshold, pace=args.pace, acceptances=acceptances,
                            detector=args.detector)

    if args.strict and history.skipped_files:
        raise UsageError(f"--strict: {len(history.skipped_files)} file(s) or case(s) skipped, "
                         f"first {history.skipped_files[0].path}: {history.skipped_files[0].reason}")
    for f in history.skipped_files:
        print(f"alexnet-bench history: skipped {f.path}: {f.reason}", file=sys.stderr)
    if new:
        commits = [p.commit for s in history.series for p in s.points]
        cases = sorted({s.case_id for s in history.series})
        for a in new:
            if not any(c.lower().startswith(a.commit) for c in commits):
                raise UsageError(f"--accept {a.commit}: no saved run is from a commit starting with {a.commit!r}")
            if a.case is not None and a.case not in cases:
                raise UsageError(f"--accept {a.commit}:{a.case}: no series has case {a.case!r}; cases: "
                                 + ", ".join(cases[:8]) + (" ..." if len(cases) > 8 else ""))
        add_acceptances(accepted_file, new)
        print(f"accepted: {', '.join(a.commit + (':' + a.case if a.case else '') for a in new)} -> {accepted_file}")

    index = out / write_out_dir(out, NAME, lambda tmp: build_page(history, out_dir=tmp)).name
    md = to_markdown(history)
    if args.markdown is not None:
        write_output(args.markdown, md, "--markdown")
    if args.json is not None:
        write_output(args.json, json.dumps(history.to_dict(), indent=1, default=str) + "\n", "--json")
    append_step_summary(md)

    _print_summary(history)
    if args.markdown is not None:
        print(f"markdown: {args.markdown}")
    if args.json is not None:
        print(f"json: {args.json}")
    print(index)
    failing = history.failing()
    return EXIT_REGRESSION if args.fail_on_regression and failing else 0


def _print_summary(history) -> None:
    changes = history.change_rows()
    n_points = sum(len(s.points) for s in history.series)
    print(f"{len(history.series)} series, {n_points} points from {history.n_runs} runs "
          f"({history.n_files} files, {len(history.skipped_files)} skipped); ordered by {history.order_method}")
    for note in history.notes:
        print(f"note: {note}")
    noise = [s.noise() for s in history.series if s.detection]
    if noise:
        low = min(noise, key=lambda n: n["sigma"])
        high = max(noise, key=lambda n: n["sigma"])
        n_paced = sum(s.paced for s in history.series)
        def span(lo: float, hi: float, fmt: str) -> str:
            a, b = format(lo, fmt), format(hi, fmt)
            return a if a == b else f"{a}-{b}"

        print(f"noise per run {span(low['sigma'], high['sigma'], '.1%')} ({n_paced} of {len(history.series)} "
              f"series on paced medians): steps of about "
              f"{span(low['resolves_within_5_runs'], high['resolves_within_5_runs'], '.0%')} are found within 5 runs")
    for r in changes:
        flags = (" FAILS" if r["fails"] else "") + (" (accepted)" if r["accepted"] else "")
        verdict = f"suspected {r['verdict']}" if r["suspected"] else r["verdict"]
        print(f"{verdict:<11} x{r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]{flags}  {r['case']} "
              f"on {r['machine']}: {r['previous_commit'][:8]} -> {r['commit'][:8]}"
              + (f" ({r['software_change']})" if r["software_change"] else ""))
        if r["suspected"]:
            print(f"    seen in the newest {len(r['confirming_commits'])} commit(s) only: "
                  + ", ".join(c[:8] for c in r["confirming_commits"]))
        if r["ab_command"]:
            print(f"    {'settle it' if r['suspected'] else 'confirm'}: {r['ab_command']}")
    for r in history.creep_rows():
        print(f"creep       x{r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]{' FAILS' if r['fails'] else ''}  "
              f"{r['case']} on {r['machine']}: newest segment against the {r['reference']} segment")
        print(f"    confirm: {r['ab_command']}")
    if not changes:
        print("no change points")
