"""The command line's usage error and its exit status, apart from its entry module.

The subcommand modules (`bench.cli.commands`) raise `UsageError`; `bench.cli.main` imports
those modules and turns the error into one line on stderr and `EXIT_USAGE`. Keeping both here
means no command imports the module that imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["EXIT_USAGE", "UsageError", "check_new_file", "write_output"]

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input found after parsing (e.g. a missing file); exits 2 with one line."""


def check_new_file(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output file that exists (earlier results are never
    overwritten) or that cannot be created (its folder missing, not a folder, or not writable)."""
    if path is None:
        return
    if path.exists():
        raise UsageError(f"{flag} {str(path)!r} already exists; choose another name or remove it")
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

