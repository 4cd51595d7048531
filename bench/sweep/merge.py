"""``alexnet-bench sweep merge``: the shards' runs joined into ordinary saved runs.

One merged run per hardware and software fingerprint (`FINGERPRINT_KEYS`): different hardware is
never one run. Within a fingerprint a case measured more than once keeps its latest successful
attempt; every case records which shard, attempt and host measured it (``extra_info.sweep``);
the shards' machine info and calibrations are kept in ``alexnet.sweep.shards``; skipped and
failed lists are joined, and a failure that later succeeded is not listed as failed. Cases that
only a killed attempt's journal holds join the run of the same machine fingerprint.

Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.sweep.shard import Attempt, attempts

__all__ = ["FINGERPRINT_KEYS", "Merged", "fingerprint", "merge_sweep"]

# name -> the machine_info (or commit_info) fields it compares; --allow-env-diff takes the names.
FINGERPRINT_KEYS: dict[str, tuple[str, ...]] = {
    "gpu": ("gpu_name",),
    "memory": ("gpu_memory_total_bytes",),
    "cpu": ("cpu_model",),  # compared only where no GPU was used (a GPU case is the GPU's)
    "driver": ("gpu_driver",),
    "torch": ("torch_version",),
    "cuda": ("cuda_version",),
    "cudnn": ("cudnn_version",),
    "python": ("python_version",),
    "commit": ("commit", "dirty"),
}


def fingerprint(doc: Mapping[str, Any], allow: Sequence[str] = ()) -> tuple[tuple[str, Any], ...]:
    """The run's hardware and software fingerprint, less the names in ``allow``."""
    info, commit = doc.get("machine_info") or {}, doc.get("commit_info") or {}
    values = {"commit": commit.get("id"), "dirty": commit.get("dirty")}
    out = []
    for name, keys in FINGERPRINT_KEYS.items():
        if name in allow or (name == "cpu" and info.get("gpu_name")):
            continue
        out += [(k, values[k] if k in values else info.get(k)) for k in keys]
    return tuple(out)


@dataclass
class _Candidate:
    case_id: str
    entry: dict[str, Any]
    attempt: Attempt
    run: str  # the run file's name, or "journal"
    order: tuple[float, int]


@dataclass
class Merged:
    """One merged run (``doc``) and what was said about it."""

    doc: dict[str, Any]
    machine_id: str
    notes: list[str] = field(default_factory=list)


def _key_text(key: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key)


def merge_sweep(sweep_dir: Path, plan: Mapping[str, Any], *, allow: Sequence[str] = ()) -> tuple[list[Merged], list[str], list[str]]:
    """(merged runs, missing case ids, lines to print). Raises ValueError for a sweep with no run."""
    unknown = sorted(set(allow) - set(FINGERPRINT_KEYS))
    if unknown:
        raise ValueError(f"--allow-env-diff {','.join(unknown)} is not valid; choose from {', '.join(FINGERPRINT_KEYS)}")
    groups: dict[tuple, dict[str, Any]] = {}
    by_machine: dict[str, tuple] = {}  # an attempt's local fingerprint -> the group its runs joined
    lines: list[str] = []
    journal_only: list[tuple[Attempt, dict[str, Any]]] = []
    for a in attempts(sweep_dir):
        if a.meta.get("plan_id") != plan["plan_id"]:
            lines.append(f"left out {a.path.name}: it ran plan {a.meta.get('plan_id')}, not {plan['plan_id']}")
            continue
        in_runs: set[str] = set()
        for run in a.runs:
            doc = json.loads(run.read_text())
            key = fingerprint(doc, allow)
            g = groups.setdefault(key, {"runs": [], "cands": [], "skipped": {}, "failed": {}})
            g["runs"].append((a, run, doc))
            by_machine.setdefault(json.dumps(a.meta.get("fingerprint"), sort_keys=True), key)
            when = a.meta.get("started", 0.0)
            for b in doc.get("benchmarks") or []:
                cid = (b.get("extra_info") or {}).get("case_id")
                in_runs.add(cid)
                g["cands"].append(_Candidate(cid, b, a, run.name, (when, a.attempt)))
            section = doc.get("alexnet") or {}
            for s in section.get("skipped") or []:
                g["skipped"].setdefault(s.get("case_id"), s)
            for f in section.get("failed") or []:
                g["failed"][f.get("case_id")] = {**f, "sweep": _where(a, run.name)}
        for line in a.journal():
            if line.get("status") == "done" and line.get("case_id") not in in_runs:
                journal_only.append((a, line))
    for a, line in journal_only:
        key = by_machine.get(json.dumps(a.meta.get("fingerprint"), sort_keys=True))
        if key is None:
            lines.append(f"left out {line['case_id']} from {a.label()}'s journal: no saved run of the same machine")
            continue
        groups[key]["cands"].append(_Candidate(line["case_id"], line["entry"], a, "journal",
                                               (a.meta.get("started", 0.0), a.attempt)))
    if not groups:
        raise ValueError(f"{sweep_dir}: no shard has saved a run of plan {plan['plan_id']} yet")
    if len(groups) > 1:
        keys = list(groups)
        differ = sorted({k for k, v in keys[0] if any(dict(o).get(k) != v for o in keys[1:])})
        lines.append(f"split into {len(groups)} runs: the shards differ in {', '.join(differ)} "
                     "(different hardware or software is never one run; --allow-env-diff NAME merges across a "
                     "difference that does not matter to you)")
    merged = [_merge_group(key, g, plan, allow, lines) for key, g in groups.items()]
    covered = set()
    for m in merged:
        covered |= {b["extra_info"]["case_id"] for b in m.doc["benchmarks"]}
        covered |= {s["case_id"] for s in m.doc["alexnet"]["skipped"]}
    missing = [c["case_id"] for c in plan["cases"] if c["case_id"] not in covered]
    return merged, missing, lines


def _where(a: Attempt, run: str) -> dict[str, Any]:
    return {"shard": a.shard, "attempt": a.attempt, "host": a.host, "run": run, "folder": a.path.name}


def _merge_group(key: tuple, g: dict[str, Any], plan: Mapping[str, Any], allow: Sequence[str],
                 lines: list[str]) -> Merged:
    best: dict[str, _Candidate] = {}
    dropped: dict[str, list[_Candidate]] = {}
    for c in sorted(g["cands"], key=lambda c: c.order):
        if c.case_id in best:
            dropped.setdefault(c.case_id, []).append(best[c.case_id])
        best[c.case_id] = c  # the latest successful attempt wins
    order = {c["case_id"]: i for i, c in enumerate(plan["cases"])}
    benchmarks = []
    for cid in sorted(best, key=lambda x: order.get(x, len(order))):
        c = best[cid]
        entry = json.loads(json.dumps(c.entry))
        entry.setdefault("extra_info", {})["sweep"] = _where(c.attempt, c.run)
        benchmarks.append(entry)
    duplicates = [{"case_id": cid, "kept": _where(best[cid].attempt, best[cid].run),
                   "dropped": [_where(d.attempt, d.run) for d in ds]} for cid, ds in dropped.items()]
    for d in duplicates:
        lines.append(f"{d['case_id']}: measured {1 + len(d['dropped'])} times; kept shard {d['kept']['shard']} "
                     f"attempt {d['kept']['attempt']} on {d['kept']['host']} (the latest)")
    failed = [f for cid, f in g["failed"].items() if cid not in best]
    recovered = sorted(cid for cid in g["failed"] if cid in best)
    skipped = [s for cid, s in g["skipped"].items() if cid not in best]
    a0, run0, doc0 = max(g["runs"], key=lambda r: (r[0].meta.get("started", 0.0), r[0].attempt))
    section = dict(doc0.get("alexnet") or {})
    env_diff = {}
    for name in allow:
        for k in FINGERPRINT_KEYS[name]:
            values = sorted({str((d.get("machine_info") or {}).get(k)) for _, _, d in g["runs"]})
            env_diff[k] = values
    section.update(
        preset=plan["preset"], skipped=skipped, failed=failed, interrupted=None,
        notices=sorted({n for _, _, d in g["runs"] for n in (d.get("alexnet") or {}).get("notices") or []}),
        sweep={
            "plan_id": plan["plan_id"], "shards_planned": plan["shards"], "selection": plan.get("selection"),
            "options": plan["options"], "fingerprint": dict(key), "allowed_env_diff": {"names": list(allow), "values": env_diff},
            "shards": [{**_where(a, run.name), "machine_info": d.get("machine_info"), "datetime": d.get("datetime"),
                        "calibration": (d.get("alexnet") or {}).get("calibration"),
                        "calibrations": (d.get("alexnet") or {}).get("calibrations"),
                        "interrupted": (d.get("alexnet") or {}).get("interrupted")} for a, run, d in g["runs"]],
            "duplicates": duplicates, "failed_then_succeeded": recovered,
        },
    )
    doc = {"machine_info": doc0["machine_info"], "commit_info": doc0.get("commit_info") or {},
           "benchmarks": benchmarks, "datetime": doc0.get("datetime"), "version": doc0.get("version"),
           "alexnet": section}
    lines.append(f"merged {len(benchmarks)} cases from {len(g['runs'])} shard run(s) of {_key_text(key)[:160]}")
    return Merged(doc, run0.parent.name)
