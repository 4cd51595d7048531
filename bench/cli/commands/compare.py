"""``alexnet-bench compare BASELINE CANDIDATE``: a verdict per case and an exit status for CI.

Exit status: 0 no regression, 1 at least one regression, 2 bad input (one line): a missing
or corrupt run file, no cases in common, runs saved without raw samples, an environment
mismatch without --allow-env-mismatch. The statistics live in `reports.compare`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli.errors import UsageError, append_step_summary, check_new_file, write_output

if TYPE_CHECKING:
    from reports.compare import Comparison

NAME = "compare"
HELP = "compare a candidate's saved runs against a baseline's; exit 1 on a regression"

EXIT_REGRESSION = 1


def fraction(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05 (argparse type).

    A bare number of 1 or more (``5``) is refused with how to write it, not read as a percent:
    a regression gate that guesses the scale would read ``0.5`` and ``5`` on two different scales,
    and a guess that goes wrong passes what it should fail without a word.
    """
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction; write a percent or a fraction, "
                                         "e.g. 5% or 0.05") from None
    if not raw.endswith("%") and 1 <= value < 100:
        raise argparse.ArgumentTypeError(f"{text!r} is ambiguous; write {raw}% for {raw} percent "
                                         f"(or the fraction {value / 100:g})")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; it must be between 0% and 100%, e.g. 5% or 0.05")
    return value


ENV_FIELD_NAMES = ("gpu", "driver", "torch", "cuda", "cudnn", "cpu")  # reports.compare.ENV_FIELDS (no import: fast --help)


def env_fields(text: str) -> tuple[str, ...]:
    """``torch,cuda,cudnn`` -> the names, validated (argparse type)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in ENV_FIELD_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; name fields from {', '.join(ENV_FIELD_NAMES)}")
    return names


def add_judging_options(p: argparse.ArgumentParser) -> None:
    """Options shared with ``ab``: how to judge, and where to write the outputs."""
    g = p.add_argument_group("judging")
    g.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    g.add_argument("--threshold", type=fraction, default=None,
                   help="smallest slowdown that counts, e.g. 5%% (default: 3.5%% for duet sessions, 5%% otherwise; "
                        "docs/compare.md)")
    g.add_argument(
        "--memory-threshold", type=fraction, default=0.10, help="peak-memory growth that counts (default 10%%)"
    )
    g.add_argument(
        "--allow-env-mismatch",
        action="store_true",
        help="compare even if GPU, driver, torch, CUDA, cuDNN or CPU differ (the differences head every output)",
    )
    g.add_argument(
        "--allow-env-diff",
        type=env_fields,
        default=(),
        metavar="FIELDS",
        help="environment fields that may differ, comma-separated, e.g. torch,cuda,cudnn (of gpu, driver, torch, cuda, "
             "cudnn, cpu); they head every output, and any other difference still refuses",
    )
    g.add_argument(
        "--drift-sd",
        type=float,
        default=None,
        help="single-run comparisons: run-to-run drift (sd of the log ratio) to judge against "
             "(default: the drift measured on this project's CPU VM, paced or raw; docs/compare.md)",
    )
    g.add_argument(
        "--no-pace",
        dest="pace",
        action="store_false",
        help="judge raw round times, not rounds divided by the pace GEMM timed around each (default: paced when saved)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--markdown", metavar="FILE", type=Path, help="write the markdown table (also appended to $GITHUB_STEP_SUMMARY when set)")
    o.add_argument("--json", metavar="FILE", type=Path, help="write the comparison as JSON")


def judging_kwargs(args: argparse.Namespace) -> dict:
    """The `reports.compare.compare_runs` keywords the judging options set."""
    kw = dict(
        alpha=args.alpha,
        threshold=args.threshold,
        memory_threshold=args.memory_threshold,
        allow_env_mismatch=args.allow_env_mismatch,
        allow_env_diff=args.allow_env_diff,
        pace=args.pace,
    )
    if args.drift_sd is not None:
        kw["drift_sd"] = args.drift_sd
    return kw


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse up front to overwrite an earlier result (before any minutes are spent)."""
    check_new_file(args.markdown, "--markdown")
    check_new_file(args.json, "--json")


def emit(comparison: "Comparison", args: argparse.Namespace) -> int:
    """Print the table, write the requested files, return the exit status."""
    print(comparison.to_text(), end="")
    md = comparison.to_markdown()
    if args.markdown is not None:
        write_output(args.markdown, md, "--markdown")
        print(f"markdown: {args.markdown}")
    if args.json is not None:
        write_output(args.json, comparison.to_json(), "--json")
        print(f"json: {args.json}")
    append_step_summary(md)
    return EXIT_REGRESSION if comparison.has_regression else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs", nargs="*", metavar="RUN", help="BASELINE CANDIDATE: two run files or run ids (e.g. 0003 0004)"
    )
    p.add_argument("--baseline", nargs="+", metavar="RUN", help="one or more baseline runs (instead of the positionals)")
    p.add_argument("--candidate", nargs="+", metavar="RUN", help="one or more candidate runs")
    p.add_argument(
        "--paired",
        action="store_true",
        help="baseline[i] and candidate[i] ran next to each other (interleaved, as `ab` does): test the pairs",
    )
    p.add_argument("--sessions", metavar="DIR|TAG",
                   help="the run pairs one `ab` saved, by their folder or by its tag (ab-<time>, as its closing note "
                        "names them; looked up under --storage); implies --paired")
    p.add_argument("--storage", type=Path, default=Path(".benchmarks"), help="where run ids are looked up (default .benchmarks)")
    p.add_argument("--allow-partial", action="store_true",
                   help="judge runs that a signal cut short (alexnet.interrupted) on the cases they have; "
                        "refused otherwise")
    add_judging_options(p)


def refuse_partial(runs: list, allow: bool) -> None:
    """`UsageError` (one line) for an interrupted run, unless ``allow``: a partial run judged as a
    whole would read a case it never ran as gone."""
    if allow:
        return
    for run in runs:
        cut = run.interrupted
        if cut:
            raise UsageError(f"run {run.label} was interrupted by {cut.get('signal')} ({len(cut.get('not_run') or [])} "
                             f"of {cut.get('collected')} cases not run); judge the cases it has with --allow-partial")


def run(args: argparse.Namespace) -> int:
    from reports.compare import compare_runs
    from reports.load import load_runs

    if args.sessions:
        if args.runs or args.baseline or args.candidate:
            raise UsageError("give either --sessions DIR|TAG or runs (BASELINE CANDIDATE, --baseline/--candidate), not both")
        from reports.compare.sessions import session_pairs

        check_outputs(args)
        base_paths, cand_paths = session_pairs(args.sessions, storage=args.storage)
        baseline = load_runs([str(p) for p in base_paths], storage=args.storage)
        candidate = load_runs([str(p) for p in cand_paths], storage=args.storage)
        refuse_partial([*baseline, *candidate], args.allow_partial)
        comparison = compare_runs(baseline, candidate, paired=True, **judging_kwargs(args))
        return emit(comparison, args)
    if args.baseline or args.candidate:
        if args.runs or not (args.baseline and args.candidate):
            raise UsageError("give either BASELINE CANDIDATE or both --baseline RUN... and --candidate RUN..., not a mix")
        base_specs, cand_specs = args.baseline, args.candidate
    elif len(args.runs) == 2:
        base_specs, cand_specs = [args.runs[0]], [args.runs[1]]
    else:
        raise UsageError(f"expected 2 runs (BASELINE CANDIDATE), got {len(args.runs)}; or use --baseline/--candidate")
    check_outputs(args)
    baseline = load_runs(base_specs, storage=args.storage)
    candidate = load_runs(cand_specs, storage=args.storage)
    refuse_partial([*baseline, *candidate], args.allow_partial)
    comparison = compare_runs(baseline, candidate, paired=args.paired, **judging_kwargs(args))
    return emit(comparison, args)
