"""``alexnet-bench sweep status``: per shard, what is done, failed, running or missing.

A shard is **done** when its cases are all measured or skipped as unsupported (by any attempt),
**running** when its latest attempt has not ended and its process lives (on this host) or cannot be
asked (another host), **failed** when its latest attempt ended with cases not done, **missing** when
no attempt started. Torch-free.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping

from bench.sweep.shard import Attempt, attempts

__all__ = ["shard_states"]


def _alive(a: Attempt) -> bool | None:
    """Whether the attempt's process lives: None when it ran on another host (it cannot be asked here)."""
    if a.host != socket.gethostname().split(".")[0]:
        return None
    pid = a.meta.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finished(a: Attempt) -> tuple[set[str], set[str]]:
    """(case ids measured or skipped, case ids failed) by this attempt: its runs and its journal."""
    import json

    done, failed = set(), set()
    for run in a.runs:
        doc = json.loads(run.read_text())
        done |= {(b.get("extra_info") or {}).get("case_id") for b in doc.get("benchmarks") or []}
        done |= {s.get("case_id") for s in (doc.get("alexnet") or {}).get("skipped") or []}
        failed |= {f.get("case_id") for f in (doc.get("alexnet") or {}).get("failed") or []}
    for line in a.journal():
        (done if line.get("status") in ("done", "skipped") else failed).add(line.get("case_id"))
    return done, failed


def shard_states(sweep_dir: Any, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per shard of the plan: ``shard, state, done, total, failed, attempts, host, detail``."""
    by_shard: dict[int, list[Attempt]] = {}
    for a in attempts(sweep_dir):
        if a.meta.get("plan_id") == plan["plan_id"]:
            by_shard.setdefault(a.shard, []).append(a)
    rows = []
    for k in range(plan["shards"]):
        cases = {c["case_id"] for c in plan["cases"] if c["shard"] == k}
        tries = by_shard.get(k, [])
        done: set[str] = set()
        failed: set[str] = set()
        for a in tries:
            d, f = _finished(a)
            done |= d
            failed |= f
        failed -= done
        row = {"shard": k, "total": len(cases), "done": len(cases & done), "failed": len(cases & failed),
               "attempts": len(tries), "host": tries[-1].host if tries else None}
        if not tries:
            row["state"], row["detail"] = "missing", "no attempt started"
        elif cases <= done:
            row["state"], row["detail"] = "done", ""
        else:
            last = tries[-1]
            alive = _alive(last)
            if last.end is None and alive is not False:
                row["state"] = "running"
                row["detail"] = f"pid {last.meta.get('pid')}" if alive else f"on {last.host} (not asked from here)"
            else:
                row["state"] = "failed"
                status = (last.end or {}).get("exit_status")
                row["detail"] = (f"exit status {status}" if status is not None else "ended without a word (killed)") + \
                    f"; {len(cases - done)} case(s) not done"
        rows.append(row)
    return rows
