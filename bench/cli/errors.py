"""The command line's usage error and its exit status, apart from its entry module.

The subcommand modules (`bench.cli.commands`) raise `UsageError`; `bench.cli.main` imports
those modules and turns the error into one line on stderr and `EXIT_USAGE`. Keeping both here
means no command imports the module that imports it.
"""

from __future__ import annotations

__all__ = ["EXIT_USAGE", "UsageError"]

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input found after parsing (e.g. a missing file); exits 2 with one line."""
