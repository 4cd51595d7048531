"""A saved run's ``commit_info``: the git state of the code that was measured. No torch, nothing else of ours.

The suite's runs get theirs from pytest-benchmark (its ``pytest_benchmark_generate_commit_info``
hook calls `pytest_benchmark.utils.get_commit_info` in the current directory). The runs saved
without pytest-benchmark's session (`alexnet-bench ddp`, each side of a duet, whose code is a git
worktree of its own) take it from `commit_info` here: the same function, run in the folder whose
git state it describes, so every writer records the same fields (``id``, ``time``,
``author_time``, ``dirty``, ``project``, ``branch``) the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["commit_info"]


def commit_info(directory: Path | str | None = None, *, project_name: str | None = None) -> dict[str, Any]:
    """pytest-benchmark's ``commit_info`` for ``directory`` (default: the current one).

    `get_commit_info` runs git in the current directory (and names the project after it), so
    it is called from inside ``directory``; the working directory is restored afterwards.
    """
    from pytest_benchmark.utils import get_commit_info

    if directory is None:
        return get_commit_info(project_name)
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return get_commit_info(project_name)
    finally:
        os.chdir(cwd)
