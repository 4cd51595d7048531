"""Saved runs for the report tests: hand-built synthetic ones.

The real run the report and history tests read is the session's shared run of the suite's
``tiny`` preset (``shared_tiny_run`` in tests/conftest.py), made exactly as a user runs it.
Synthetic runs are labelled as such (machine_info.hostname = "synthetic") and are used only
to test the logic that a tiny run cannot reach (compile x AMP sweeps, per-layer rows, loops).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any


def _case(cfg: dict[str, Any], images_per_s: float, *, rounds: int = 10, extra: dict | None = None) -> dict:
    step = cfg["batch_size"] / images_per_s
    case_id = "-".join([cfg["mode"], cfg["variant"], f"b{cfg['batch_size']}", cfg["resolution"],
                        "fp32" if cfg["amp"] == "off" else cfg["amp"]]
                       + ([f"compile_{cfg['compile']}"] if cfg["compile"] != "off" else []) + ["cpu"])
    data = [step * (1 + 0.01 * ((i % 3) - 1)) for i in range(rounds)]
    return {
        "name": f"test_step[{case_id}]",
        "fullname": f"bench/test_step.py::test_step[{case_id}]",
        "group": cfg["mode"],
        "params": {},
        "stats": {"min": min(data), "max": max(data), "mean": sum(data) / rounds, "median": sorted(data)[rounds // 2],
                  "iqr": step * 0.02, "rounds": rounds, "iterations": 1, "data": data},
        "extra_info": {"config": cfg, "case_id": case_id, "kind": "step", "images_per_s": images_per_s,
                       "images_per_s_iqr": images_per_s * 0.02, "step_time_s": step, "rounds": rounds,
                       "mfu": None, "peak_memory_bytes": None, "warnings": [], **(extra or {})},
    }


def synthetic_run(cases: list[tuple[dict[str, Any], float]], *, skipped: list[dict] | None = None) -> dict:
    """A saved-run JSON document with the given (config changes, images/s) cases. SYNTHETIC numbers."""
    base_cfg = {"mode": "train", "variant": "d2l", "batch_size": 8, "resolution": "65x65", "height": 65, "width": 65,
                "device": "cpu", "amp": "off", "compile": "off", "channels_last": False, "cudnn_benchmark": False,
                "deterministic": False, "tf32": False, "seed": 0}
    benchmarks = []
    for changes, ips in cases:
        cfg = {**base_cfg, **changes}
        if "resolution" in changes:
            cfg["height"], cfg["width"] = (int(v) for v in changes["resolution"].split("x"))
        extra = cfg.pop("_extra", None)
        benchmarks.append(_case(cfg, ips, extra=extra))
    return {
        "machine_info": {"node": "synthetic", "hostname": "synthetic", "cpu_model": "synthetic CPU", "torch_version": "0",
                         "cuda_version": None, "gpu_name": None, "suite_schema_version": 1},
        "commit_info": {"id": "0" * 40, "dirty": False, "branch": "synthetic"},
        "datetime": "2026-01-01T00:00:00+00:00",
        "version": "5.3.1",
        "benchmarks": benchmarks,
        "alexnet": {"schema_version": 1, "preset": "synthetic", "skipped": skipped or [], "calibration": {}},
    }


def write_run(doc: dict, storage: Path, run_id: int, name: str, *, machine: str = "Linux-CPython-3.11-64bit") -> Path:
    path = storage / machine / f"{run_id:04d}_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def edited_copy(src: Path, dst: Path, edit) -> Path:
    """Copy a saved run, applying ``edit(doc)`` to its parsed JSON."""
    doc = copy.deepcopy(json.loads(src.read_text(encoding="utf-8")))
    edit(doc)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(doc), encoding="utf-8")
    return dst
