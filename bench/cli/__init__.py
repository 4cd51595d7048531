"""The ``alexnet-bench`` command line (also ``python -m bench``).

The conventions (docs/cli.md), kept here once for every command:

- exit status: 0 done (no regression), 1 a regression and nothing else, 2 bad input, 3 the work
  itself failed, 130 / 143 interrupted (SIGINT / SIGTERM), each error one line on stderr that
  names the command;
- no abbreviated options (``--res`` is refused, with "did you mean --resolution?"), a suggestion
  for a mistyped command or option, ``--version`` on every command.

Bad input exits with status 2 and one line on stderr that names the bad value and the
valid ones, with no traceback: argparse errors and the ``ValueError`` raised by
`alexnet.config.RunConfig` validation both end up in `_fail`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import os
import signal
import sys
import threading
import traceback
from typing import Sequence

# re-exported: bench.cli.UsageError stays importable
from bench.cli.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CommandFailed,
    UsageError,
)

__all__ = ["COMMANDS", "EXIT_USAGE", "main", "UsageError", "version_line"]

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
    "sweep",
]

_INVALID_CHOICE_RE = re.compile(r"invalid choice: '([^']*)'")


def version_line() -> str:
    """``alexnet-bench VERSION`` of the installed distribution (``unknown`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"alexnet-bench {version('alexnet-bench')}"
    except PackageNotFoundError:
        return "alexnet-bench (version unknown: not installed; pip install -e .)"


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """``; did you mean X?`` for the candidates ``word`` starts, or that are close to it; else ``""``."""
    prefixed = [c for c in candidates if c.startswith(word) and len(word) > 2]
    close = prefixed or difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False  # --res is not --resolution: an option is named in full
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, no usage block
        m = _INVALID_CHOICE_RE.search(message)
        sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if m and sub is not None and message.startswith("argument COMMAND"):
            word = m.group(1)
            message = (f"no command {word!r}{did_you_mean(word, list(sub.choices))} "
                       f"(invalid choice; commands: {', '.join(sub.choices)})")
        _fail(f"{self.prog}: error: {message}")

    def option_names(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]


def _fail(line: str) -> None:
    print(line.splitlines()[0] if line else "error", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="alexnet-bench",
        description="Benchmark, profile and train AlexNet (d2l.ai chapter and torchvision variants). "
                    "Exit status: 0 done, 1 a regression, 2 bad input, 3 failed, 130/143 interrupted (docs/cli.md).",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"bench.cli.commands.{name.replace('-', '_')}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        p.add_argument("--version", action="version", version=version_line())
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup (``finally``) runs, as on Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _unrecognized(parser: argparse.ArgumentParser, command: str | None, extras: list[str]) -> None:
    """One line from the subcommand's own parser: the unknown arguments, and what they may have meant."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    target = sub.choices.get(command, parser) if sub is not None and command else parser
    hint = ""
    for word in extras:
        if word.startswith("--"):
            hint = did_you_mean(word.split("=", 1)[0], target.option_names())
            if hint:
                break
    target.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    from bench.cli.noise import silence_third_party_noise

    silence_third_party_noise()
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unrecognized(parser, getattr(args, "command", None), extras)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    prog = f"alexnet-bench {args.command}"
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return int(args._run(args) or 0)
    except (ValueError, UsageError) as exc:
        _fail(f"{prog}: error: {exc}")
    except CommandFailed as exc:
        print(f"{prog}: error: {str(exc).splitlines()[0] if str(exc) else 'failed'}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # the reader went away (`| head`): not an error of the command; no traceback
        # Python's documented recipe (signal module docs, "Note on SIGPIPE"): point stdout at
        # devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt as exc:  # a command may say what it kept: KeyboardInterrupt("...")
        print(f"{prog}: interrupted" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated as exc:
        print(f"{prog}: terminated" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as exc:  # a bug: its traceback, then one line; never 1, which means a regression
        traceback.print_exc()
        print(f"{prog}: error: internal error {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_FAILED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return EXIT_USAGE  # unreachable; _fail exits
