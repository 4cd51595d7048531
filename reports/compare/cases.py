"""What a comparison reads from a saved run: its cases, their rounds, pace samples and marks.

Fields as docs/saved-run-format.md defines them; `RunLoadError` for a case saved without its
raw rounds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from runrecord.samples import paced_samples
from reports.load import Run, RunLoadError

SAVE_DATA_HINT = "save runs with --benchmark-save-data (the suite's default, set in bench/conftest.py)"


# --- reading runs ------------------------------------------------------------------------------


def _label(run: Run) -> str:
    return run.label


def _case_key(bench: dict) -> str:
    """Cases match by their config (every axis); runs without one fall back to the node id."""
    cfg = (bench.get("extra_info") or {}).get("config")
    if cfg:
        return json.dumps(cfg, sort_keys=True)
    return bench.get("fullname") or bench["name"]


def _case_label(bench: dict) -> str:
    return (bench.get("extra_info") or {}).get("case_id") or bench.get("name") or "?"


def _samples(run: Run, bench: dict) -> np.ndarray:
    data = (bench.get("stats") or {}).get("data")
    if not data:
        raise RunLoadError(f"{run.path}: case {_case_label(bench)!r} has no raw samples (stats.data); {SAVE_DATA_HINT}")
    return np.asarray(data, dtype=float)


def _cases(run: Run) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for bench in run.raw.get("benchmarks") or []:
        out[_case_key(bench)] = bench
    return out


def _env_value(run: Run, key: str) -> Any:
    mi = run.raw.get("machine_info") or {}
    if key == "cpu_model" and not mi.get("cpu_model"):
        return (mi.get("cpu") or {}).get("brand_raw")  # pytest-benchmark's own field
    return mi.get(key)



def _calibration_gflops(run: Run) -> float | None:
    cal = (run.raw.get("alexnet") or {}).get("calibration") or {}
    g = cal.get("gflops")
    return float(g) if isinstance(g, (int, float)) and g > 0 else None


def _pace(bench: dict) -> list[float] | None:
    pace = (bench.get("extra_info") or {}).get("pace") or {}
    samples = pace.get("samples")
    return samples if isinstance(samples, list) and samples else None


def _paced(run: Run, bench: dict) -> np.ndarray | None:
    """A case's rounds divided by the pace GEMM around each (None for runs saved without pace)."""
    pace = _pace(bench)
    return None if pace is None else paced_samples(_samples(run, bench), pace)


def _duet(bench: dict) -> dict | None:
    d = (bench.get("extra_info") or {}).get("duet")
    return d if isinstance(d, dict) and d.get("estimator") else None


def _peak_memory(bench: dict) -> float | None:
    m = (bench.get("extra_info") or {}).get("peak_memory_bytes")
    return float(m) if isinstance(m, (int, float)) else None
