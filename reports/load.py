"""Load saved pytest-benchmark runs into `Run` objects and one tidy pandas DataFrame.

A run is a file ``.benchmarks/<machine_id>/NNNN_<name>.json`` (docs/saved-run-format.md).
Users name runs by path, by run id (``0003`` or ``3``, searched under ``storage/*/``) or by
save name (``smoke``: the latest run saved under that name, or ``0003_smoke``); no spec means
the latest run. Finding and reading the files is the run record's store (`runrecord.store`);
this module turns what it reads into `Run` objects and frames.

Every failure to find or read a run raises `RunLoadError` with a one-line message naming
the bad value, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from runrecord.schema import SECTION, RunLoadError, RunRecord, schema_version
from runrecord.store import DEFAULT_STORAGE, RunStore, read_run_json, run_file_id

__all__ = [
    "RunLoadError",
    "Run",
    "resolve_run_paths",
    "load_run",
    "load_runs",
    "runs_to_frame",
    "samples_frame",
    "skipped_frame",
    "config_axes",
    "read_frame_csv",
    "RUN_COLUMNS",
    "CONFIG_PREFIX",
    "ENV_PREFIX",
]

# Columns that identify the run a row came from; they come first in the frame.
RUN_COLUMNS = ("run_id", "run_name", "run_label", "run_path", "run_datetime")
# Config axes are written unprefixed (mode, batch_size, amp, ...) so that groupby reads
# naturally; environment columns carry this prefix so they never collide with an axis.
CONFIG_PREFIX = ""
ENV_PREFIX = "env_"

# machine_info keys copied into env_* columns (pytest-benchmark's + ours, saved-run-format.md).
_ENV_KEYS = (
    "node", "machine", "processor", "python_version", "python_implementation", "system", "release",
    "suite_schema_version", "torch_version", "torchvision_version", "cuda_version", "cudnn_version",
    "cuda_available", "gpu_name", "gpu_uuid", "gpu_driver", "gpu_power_limit_w",
    "gpu_max_sm_clock_mhz", "gpu_max_mem_clock_mhz", "cpu_model", "cpu_count", "torch_num_threads",
    "hostname",
)
# pytest-benchmark's stats (seconds per step), copied as stats_* columns; stats.data (the raw
# rounds) is kept out of the frame (see `samples_frame`) so the CSV stays one row per case.
_STATS_KEYS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "rounds", "iterations", "ops", "outliers")
# extra_info keys that are not scalar metrics and get special handling below.
_NESTED_EXTRA = ("config", "telemetry", "layers", "correctness", "warnings")


@dataclass(frozen=True)
class Run:
    """One saved run: its file, its id (``"0003"``), its save name (``"smoke"``) and the parsed JSON."""

    path: Path
    run_id: str
    name: str
    raw: dict = field(repr=False, compare=False, hash=False)

    @property
    def label(self) -> str:
        return f"{self.run_id}_{self.name}" if self.name else self.run_id

    @property
    def machine_info(self) -> dict:
        return self.raw.get("machine_info") or {}

    @property
    def commit_info(self) -> dict:
        return self.raw.get("commit_info") or {}

    @property
    def datetime(self) -> str | None:
        return self.raw.get("datetime")

    @property
    def benchmarks(self) -> list[dict]:
        return self.raw.get("benchmarks") or []

    @property
    def suite(self) -> dict:
        """The run-level ``alexnet`` section (preset, skipped, calibration); {} when absent."""
        return self.raw.get(SECTION) or {}

    @property
    def skipped(self) -> list[dict]:
        return list(self.suite.get("skipped") or [])

    @property
    def interrupted(self) -> dict | None:
        """``{signal, not_run, collected}`` when a signal cut the run short (a partial run), else None."""
        return self.suite.get("interrupted") or None

    @property
    def schema(self) -> int | None:
        """The suite's schema version (`runrecord.schema.schema_version`); None for a run not of ours."""
        return schema_version(self.raw)

    def record(self) -> RunRecord:
        """The run as typed records (`runrecord.schema.RunRecord`)."""
        return RunRecord.from_json(self.raw, self.path)


def resolve_run_paths(specs: Sequence[str], *, storage: Path | str = DEFAULT_STORAGE) -> list[Path]:
    """Turn run specs (paths, run ids, save names) into existing run files, in the order given
    (`runrecord.store.RunStore.resolve`). Raises `RunLoadError` naming the spec that matched nothing."""
    return RunStore(storage).resolve(specs)


def load_run(path: Path) -> Run:
    """Read and check one saved run file (`runrecord.store.read_run_json`)."""
    path = Path(path)
    data = read_run_json(path)
    run_id, name = run_file_id(path)
    return Run(path=path, run_id=run_id, name=name, raw=data)


def load_runs(specs: Sequence[str], *, storage: Path = DEFAULT_STORAGE) -> list[Run]:
    """`resolve_run_paths` then `load_run` each."""
    return [load_run(p) for p in resolve_run_paths(specs, storage=storage)]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _row(run: Run, bench: dict) -> dict[str, Any]:
    extra = bench.get("extra_info") or {}
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "run_name": run.name,
        "run_label": run.label,
        "run_path": str(run.path),
        "run_datetime": run.datetime,
        "name": bench.get("name"),
        "fullname": bench.get("fullname"),
        "group": bench.get("group"),
        "case_id": extra.get("case_id", bench.get("name")),
        "kind": extra.get("kind"),
    }
    for axis, value in (extra.get("config") or {}).items():
        row[f"{CONFIG_PREFIX}{axis}"] = value
    for key, value in extra.items():
        if key in _NESTED_EXTRA or key in ("case_id", "kind"):
            continue
        col = key if key not in row else f"extra_{key}"
        if _scalar(value):
            row[col] = value
        elif isinstance(value, dict):
            for sub, subval in value.items():
                if _scalar(subval):
                    row[f"{col}_{sub}"] = subval
    warnings = extra.get("warnings") or []
    row["warnings"] = "; ".join(str(w) for w in warnings)
    for key, value in (extra.get("correctness") or {}).items():
        if _scalar(value):
            row[f"correctness_{key}"] = value
    telemetry = extra.get("telemetry") or {}
    row["telemetry_kind"] = telemetry.get("kind")
    for key, value in (telemetry.get("summary") or {}).items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)  # e.g. throttle_reasons
        if _scalar(value):
            row[f"telemetry_{key}"] = value
    row["has_layers"] = bool(extra.get("layers"))
    stats = bench.get("stats") or {}
    for key in _STATS_KEYS:
        if key in stats:
            row[f"stats_{key}"] = stats[key]
    row["samples"] = len(stats.get("data") or [])
    info = run.machine_info
    for key in _ENV_KEYS:
        if key in info:
            row[f"{ENV_PREFIX}{key}"] = info[key]
    cpu = info.get("cpu") or {}
    if isinstance(cpu, dict) and "brand_raw" in cpu:
        row[f"{ENV_PREFIX}cpu_brand"] = cpu["brand_raw"]
    commit = run.commit_info
    for key in ("id", "dirty", "branch", "time"):
        if key in commit:
            row[f"{ENV_PREFIX}commit_{key}"] = commit[key]
    suite = run.suite
    row[f"{ENV_PREFIX}preset"] = suite.get("preset")
    calibration = suite.get("calibration") or {}
    row[f"{ENV_PREFIX}calibration_gflops"] = calibration.get("gflops")
    return row


def runs_to_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per case per run: run columns, every config axis, every metric, environment.

    Columns that a run lacks are NaN/None; float NaN never replaces a saved value.
    """
    rows = [_row(run, bench) for run in runs for bench in run.benchmarks]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*RUN_COLUMNS, "name", "case_id"])
    # Run columns first, environment last, everything else in first-seen order between.
    env = [c for c in frame.columns if c.startswith(ENV_PREFIX)]
    head = [c for c in RUN_COLUMNS if c in frame.columns]
    middle = [c for c in frame.columns if c not in env and c not in head]
    return frame[head + middle + env]


# Columns that look numeric but are text: "0003" must stay "0003", a commit id stays a string.
_TEXT_COLUMNS = {"run_id": str, "run_name": str, "run_label": str, "name": str, "case_id": str,
                 f"{ENV_PREFIX}commit_id": str}


def read_frame_csv(path: Path | str) -> pd.DataFrame:
    """Read back a CSV written from `runs_to_frame` (``report --csv``) with its text columns as text."""
    head = pd.read_csv(path, nrows=0)
    return pd.read_csv(path, dtype={c: t for c, t in _TEXT_COLUMNS.items() if c in head.columns})


def config_axes(runs: Sequence[Run]) -> list[str]:
    """Config axes present in the runs (keys of extra_info.config), in first-seen order."""
    axes: dict[str, None] = {}
    for run in runs:
        for bench in run.benchmarks:
            for key in ((bench.get("extra_info") or {}).get("config") or {}):
                axes.setdefault(f"{CONFIG_PREFIX}{key}", None)
    return list(axes)


def samples_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """Long format of every timed round: run_label, case_id, name, round, step_time_s (seconds per step)."""
    rows = []
    for run in runs:
        for bench in run.benchmarks:
            extra = bench.get("extra_info") or {}
            case_id = extra.get("case_id", bench.get("name"))
            for i, value in enumerate((bench.get("stats") or {}).get("data") or []):
                if isinstance(value, (int, float)) and math.isfinite(value):
                    rows.append({"run_label": run.label, "case_id": case_id, "name": bench.get("name"),
                                 "mode": (extra.get("config") or {}).get("mode"), "round": i, "step_time_s": value})
    return pd.DataFrame(rows, columns=["run_label", "case_id", "name", "mode", "round", "step_time_s"])


def skipped_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per skipped case per run (alexnet.skipped): run_label, case_id, name, reason."""
    rows = []
    for run in runs:
        for skip in run.skipped:
            if not isinstance(skip, dict):
                continue
            rows.append({"run_label": run.label, "case_id": skip.get("case_id") or skip.get("name"),
                         "name": skip.get("name"), "fullname": skip.get("fullname"), "reason": skip.get("reason")})
    return pd.DataFrame(rows, columns=["run_label", "case_id", "name", "fullname", "reason"])
