"""A sweep plan: the cases collected once, their estimated costs, and each case's shard.

The plan depends on nothing of the machine that makes it (a login node has no GPU): the devices
are named (``--device cuda``), the cases are sorted by id, and the shards are balanced by cost,
largest first (LPT: each case goes to the least loaded shard), ties broken by a SHA-256 of the
case id, never by Python's ``hash`` (PYTHONHASHSEED) or the collection order.

Torch-free.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import statistics
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from bench.sweep.costs import GPU_WEIGHTS_S, CostModel, default_cost

__all__ = ["FORMAT", "OPTION_KEYS", "TIME_MARGIN", "assign_lpt", "collect_cases", "load_plan", "make_plan",
           "plan_id", "time_limit_s"]

FORMAT = "alexnet-bench sweep plan"
VERSION = 1
# The measurement options a plan fixes for every shard (the pytest options of the same names).
OPTION_KEYS = ("rounds", "warmup_rounds", "steps_per_round", "telemetry_seconds", "correctness", "case_timeout")
# --time = the slowest shard's estimate x TIME_MARGIN + the shard's start + SIGNAL_LEAD_S, in whole
# minutes: the estimate is an estimate (docs/sweeps.md measures its error), and Slurm's USR1 comes
# SIGNAL_LEAD_S before the limit, which must be after the shard's expected end.
TIME_MARGIN = 1.5
SIGNAL_LEAD_S = 120
# A shard's fixed start (pytest, the zygote, the probe and calibration): gpu_check.py's PLAN_MODEL_S
# on an H200 (2 + 4 + 3 s); measured on the 2-core CPU machine: 5 s (tiny preset, 2026-12-03).
SHARD_START_S = {"cuda": 9.0, "cpu": 5.0}
WARN_CASE_SHARE = 0.05


def _tiebreak(case_id: str) -> str:
    return hashlib.sha256(case_id.encode()).hexdigest()


@contextmanager
def _no_cuda_probe() -> Iterator[None]:
    """The ``full`` preset asks ``cuda_present()`` (a torch import) for its device; the plan names its
    devices, which replace that axis in every case, so the answer never matters: it is not asked."""
    import alexnet.config as config

    real = config.cuda_present
    config.cuda_present = lambda: False
    try:
        yield
    finally:
        config.cuda_present = real


def collect_cases(preset: str, overrides: Mapping[str, list[Any]], *, pipelines: Sequence[str] | None = None,
                  case_file: str | None = None) -> list[dict[str, Any]]:
    """Every case of the preset with the overrides (or of a ``--cases`` file): ``{case_id, kind, config}``."""
    from bench.workloads.workload import LoopWorkload, StepWorkload

    if case_file is not None:
        from bench.suite.caselist import load_case_list

        rows = load_case_list(case_file)
        if any(r.label or r.telemetry_seconds is not None or r.timer_check or r.correctness is not None for r in rows):
            raise ValueError(f"--cases {case_file}: a sweep plan takes rows of config and kind only")
        cases = [{"case_id": r.case_id, "kind": r.kind, "config": r.cfg.flat()} for r in rows]
    else:
        from bench.suite.presets import build_cases, build_loop_cases

        if "device" not in overrides:
            raise ValueError("--device is required: a plan must not depend on the machine it is made on")
        with _no_cuda_probe():
            steps = build_cases(preset, dict(overrides))
            loops = build_loop_cases(preset, dict(overrides), pipelines=pipelines)
        cases = ([{"case_id": StepWorkload.case_id(c), "kind": "step", "config": c.flat()} for c in steps]
                 + [{"case_id": LoopWorkload.case_id(c), "kind": "loop", "config": c.flat()} for c in loops])
    return sorted(cases, key=lambda c: c["case_id"])


def assign_lpt(costs: Mapping[str, float], shards: int) -> dict[str, int]:
    """Case id -> shard: largest cost first, each to the least loaded shard (lowest index on a tie)."""
    order = sorted(costs, key=lambda cid: (-costs[cid], _tiebreak(cid)))
    heap = [(0.0, k) for k in range(shards)]
    out = {}
    for cid in order:
        load, k = heapq.heappop(heap)
        out[cid] = k
        heapq.heappush(heap, (load + costs[cid], k))
    return out


def time_limit_s(estimate_s: float, device: str) -> int:
    """Slurm's ``--time`` for a shard estimated at ``estimate_s`` seconds (whole minutes, at least 10)."""
    start = SHARD_START_S["cuda" if device.startswith("cuda") else "cpu"]
    seconds = estimate_s * TIME_MARGIN + start + SIGNAL_LEAD_S
    return max(600, int(math.ceil(seconds / 60.0)) * 60)


def plan_id(cases: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> str:
    text = json.dumps({"cases": [c["case_id"] for c in cases], "options": dict(options)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def make_plan(cases: list[dict[str, Any]], *, shards: int, options: Mapping[str, Any], preset: str,
              selection: Mapping[str, Any], model: CostModel | None = None) -> dict[str, Any]:
    """The plan document: cases with cost and shard, per-shard loads, the time limit, warnings."""
    if shards < 1:
        raise ValueError(f"--shards {shards} is not valid; it must be >= 1")
    if not cases:
        raise ValueError("the selection has no cases")
    if shards > len(cases):
        raise ValueError(f"--shards {shards} is more than the {len(cases)} cases; at most {len(cases)}")
    model = model or CostModel()
    cases = sorted(cases, key=lambda c: c["case_id"])  # the plan never depends on the order given
    for c in cases:
        base = default_cost(c["config"], c["kind"], rounds=options["rounds"], warmup=options["warmup_rounds"],
                            telemetry_seconds=options.get("telemetry_seconds"))
        c["cost_s"], c["cost_source"] = model.estimate(c["case_id"], base)
        c["cost_s"] = round(c["cost_s"], 3)
    assignment = assign_lpt({c["case_id"]: c["cost_s"] for c in cases}, shards)
    loads = [0.0] * shards
    for c in cases:
        c["shard"] = assignment[c["case_id"]]
        loads[c["shard"]] += c["cost_s"]
    mean = statistics.fmean(loads)
    biggest = max(cases, key=lambda c: c["cost_s"])
    warnings = []
    if biggest["cost_s"] > WARN_CASE_SHARE * mean:
        warnings.append(f"one case ({biggest['case_id']}, {biggest['cost_s']:.0f} s) is "
                        f"{biggest['cost_s'] / mean:.0%} of a shard's mean load ({mean:.0f} s): more shards "
                        "cannot balance below it; use fewer shards")
    device = str(cases[0]["config"].get("device", "cpu"))
    sources: dict[str, int] = {}
    for c in cases:
        sources[c["cost_source"]] = sources.get(c["cost_source"], 0) + 1
    return {
        "format": FORMAT, "version": VERSION, "plan_id": plan_id(cases, options),
        "preset": preset, "selection": dict(selection), "options": dict(options), "shards": shards,
        "cost_model": {"hardware": model.hardware, "scale": round(model.scale(), 4), "sources": sources,
                       "gpu_weights_s": GPU_WEIGHTS_S if device.startswith("cuda") else None},
        "loads_s": [round(x, 3) for x in loads],
        "balance": {"max_s": round(max(loads), 3), "mean_s": round(mean, 3), "max_over_mean": round(max(loads) / mean, 4)},
        "time_limit_s": time_limit_s(max(loads), device),
        "warnings": warnings,
        "cases": cases,
    }


def load_plan(path: str | Path) -> dict[str, Any]:
    """A plan file, checked; ValueError (one line) for anything wrong."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"plan {str(path)!r} could not be read as JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"plan {str(path)!r} is not a sweep plan (make one with alexnet-bench sweep plan)")
    if doc.get("version") != VERSION:
        raise ValueError(f"plan {str(path)!r} has version {doc.get('version')!r}; this checkout reads {VERSION}")
    return doc
