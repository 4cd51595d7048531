"""The ``alexnet-bench`` command line (also ``python -m bench``).

Bad input exits with status 2 and one line on stderr that names the bad value and the
valid ones, with no traceback: argparse errors and the ``ValueError`` raised by
`alexnet.config.RunConfig` validation both end up in `_fail`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from bench.cli.errors import EXIT_USAGE, UsageError  # re-exported: bench.cli.UsageError stays importable

__all__ = ["COMMANDS", "EXIT_USAGE", "main", "UsageError"]

# Subcommand modules under bench.cli.commands, in --help order.
COMMANDS = [
    "summary",
    "train",
    "profile",
    "compare",
    "ab",
    "report",
    "history",
    "ddp",
    "run",
    "max-batch",
    "gpu-check",
]

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        _fail(f"{self.prog}: error: {message}")


def _fail(line: str) -> None:
    print(line.splitlines()[0] if line else "error", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="alexnet-bench",
        description="Benchmark, profile and train AlexNet (d2l.ai chapter and torchvision variants).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"bench.cli.commands.{name.replace('-', '_')}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except (ValueError, UsageError) as exc:
        _fail(f"alexnet-bench {args.command}: error: {exc}")
    return EXIT_USAGE  # unreachable; _fail exits
