"""``-p bench.sweep.journal --sweep-journal FILE``: each finished case appended to a journal as it ends.

pytest-benchmark writes the run once, at the session's end: a shard killed outright (SIGKILL, a lost
node) would lose every case it measured. This plugin appends one JSON line per case to the
attempt's ``journal.jsonl`` right after the case's teardown (the end of its ``pytest_runtest_protocol``) (its ``benchmarks`` entry exactly as
the saved run would hold it, or that it was skipped as unsupported or failed), and flushes it to
disk, so `bench.sweep.shard.done_cases` (``--resume``) and `bench.sweep.merge` can use it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("alexnet-bench sweep").addoption(
        "--sweep-journal", default=None, metavar="FILE", help="append each finished case to FILE (JSON lines)")


def _lists(config: pytest.Config) -> tuple[list[Any], list[Any], list[Any]]:
    from bench.suite.plugin import _SESSION

    bs = getattr(config, "_benchmarksession", None)
    s = config.stash.get(_SESSION, None)
    runner = getattr(s, "_runner", None) if s is not None else None
    return (bs.benchmarks if bs is not None else [], s.skipped if s is not None else [],
            runner.failed if runner is not None else [])


def _get(record: Any, key: str) -> Any:
    return record.get(key) if isinstance(record, dict) else getattr(record, key, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> Any:
    path = item.config.getoption("sweep_journal")
    if not path:
        yield
        return
    before = [len(x) for x in _lists(item.config)]
    yield  # the case runs: setup, call (pytest-benchmark lists it), teardown
    benchmarks, skipped, failed = _lists(item.config)
    lines = []
    for b in benchmarks[before[0]:]:
        if getattr(b, "has_error", False):
            continue
        entry = b.as_dict(include_data=True)
        lines.append({"case_id": (entry.get("extra_info") or {}).get("case_id"), "status": "done", "entry": entry})
    lines += [{"case_id": _get(s, "case_id"), "status": "skipped", "reason": _get(s, "reason")} for s in skipped[before[1]:]]
    lines += [{"case_id": _get(f, "case_id"), "status": "failed", "reason": _get(f, "reason")} for f in failed[before[2]:]]
    if not lines:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            for line in lines:
                # As the saved run writes a value JSON cannot hold (runrecord.store.dumps): the
                # params' RunConfig becomes UNSERIALIZABLE[repr], exactly as in the run's file.
                fh.write(json.dumps({**line, "t": time.time()}, default=lambda o: f"UNSERIALIZABLE[{o!r}]") + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # the journal is a safety net: losing it never costs the run
        print(f"sweep journal {path}: not written ({exc.strerror or exc})", file=sys.stderr)
