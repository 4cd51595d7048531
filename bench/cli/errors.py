"""The command line's exit statuses, its usage error, and its output-file checks, apart from
its entry module.

The subcommand modules (`bench.cli.commands`) raise `UsageError` (bad input, exit 2) or
`CommandFailed` (the work itself failed, exit 3); `bench.cli.main` imports those modules and
turns either into one line on stderr and its status. Keeping them here means no command imports
the module that imports it. The contract is documented once, in docs/cli.md.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["EXIT_OK", "EXIT_REGRESSION", "EXIT_USAGE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_TERMINATED",
           "CommandFailed", "UsageError", "append_step_summary", "check_new_file", "write_output"]

EXIT_OK = 0
EXIT_REGRESSION = 1  # a regression, and nothing else
EXIT_USAGE = 2  # bad input: a bad option or value, a missing or unreadable input, an output path that cannot be written
EXIT_FAILED = 3  # the work itself failed: a case, a rank, a benchmark run, a bug
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2, as a shell reports it
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15


class UsageError(Exception):
    """Bad input found after parsing (e.g. a missing file); exits 2 with one line."""


class CommandFailed(Exception):
    """The command's own work failed (not the input, not a regression); exits 3 with one line."""


def check_new_file(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output file that exists (earlier results are never
    overwritten) or that cannot be created (its folder missing, not a folder, or not writable)."""
    if path is None:
        return
    if path.exists():
        raise UsageError(f"{flag} {str(path)!r} already exists; choose another name or remove it")
    check_writable_parent(path, flag)


def check_writable_parent(path: Path, flag: str) -> None:
    """Refuse an output path whose folder does not exist, is not a folder, or is not writable."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {str(path)!r}: the folder {str(parent)!r} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {str(path)!r}: the folder {str(parent)!r} is not writable")


def write_output(path: Path, text: str, flag: str) -> None:
    """Write an output file as a new file; any error writing it is one line and exit 2 (never 1,
    which means a regression)."""
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(f"{flag} {str(path)!r} could not be written: {exc.strerror or exc}") from None


def append_step_summary(markdown: str) -> None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when set; an error writing it is one line and exit 2."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not summary:
        return
    try:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(markdown + "\n")
    except OSError as exc:
        raise UsageError(f"$GITHUB_STEP_SUMMARY {summary!r} could not be written: {exc.strerror or exc}") from None
