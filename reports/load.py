"""Load saved pytest-benchmark runs into `Run` objects and one tidy pandas DataFrame.

A run is a file ``.benchmarks/<machine_id>/NNNN_<name>.json`` (docs/saved-run-format.md).
Users name runs by path, by run id (``0003`` or ``3``, searched under ``storage/*/``) or by
save name (``smoke``: the latest run saved under that name, or ``0003_smoke``); no spec means
the latest run.

Every failure to find or read a run raises `RunLoadError` with a one-line message naming
the bad value, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

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

DEFAULT_STORAGE = Path(".benchmarks")
# pytest-benchmark names saved runs NNNN_<name>.json, numbered per machine_id folder.
_RUN_FILE_RE = re.compile(r"^(?P<id>\d{4,})_(?P<name>.*)\.json$")
_RUN_ID_RE = re.compile(r"^\d{1,}$")

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


class RunLoadError(ValueError):
    """No runs found, an unreadable or corrupt JSON file, or a file that is not a pytest-benchmark run."""


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
        return self.raw.get("alexnet") or {}

    @property
    def skipped(self) -> list[dict]:
        return list(self.suite.get("skipped") or [])


def _storage_dir(storage: Path | str) -> Path:
    # Accept pytest-benchmark's own spelling too: --benchmark-storage=file://DIR.
    text = str(storage)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return Path(text)


def _saved_files(storage: Path) -> list[Path]:
    if not storage.is_dir():
        return []
    return sorted(p for p in storage.glob("*/*.json") if _RUN_FILE_RE.match(p.name))


def _newest(paths: Sequence[Path]) -> Path:
    # Run numbers only order runs within one machine_id folder; across folders the file's
    # modification time is the better guide, with the run number breaking ties.
    return max(paths, key=lambda p: (p.stat().st_mtime, int(_RUN_FILE_RE.match(p.name).group("id"))))


def resolve_run_paths(specs: Sequence[str], *, storage: Path = DEFAULT_STORAGE) -> list[Path]:
    """Turn run specs (paths, run ids, save names) into existing run files, in the order given.

    Raises `RunLoadError` naming the spec that matched nothing (or more than one run).
    """
    storage = _storage_dir(storage)
    saved = _saved_files(storage)
    if not specs:
        if not saved:
            raise RunLoadError(
                f"no runs found in {storage}/; save one with `pytest bench/ --benchmark-save=NAME` "
                "or name a run file"
            )
        return [_newest(saved)]

    paths: list[Path] = []
    for spec in specs:
        spec = str(spec)
        as_path = Path(spec)
        if as_path.is_file():
            paths.append(as_path)
            continue
        if _RUN_ID_RE.match(spec):
            wanted = int(spec)
            hits = [p for p in saved if int(_RUN_FILE_RE.match(p.name).group("id")) == wanted]
            what = f"run id {spec!r}"
        elif not spec.endswith(".json") and "/" not in spec:
            hits = [p for p in saved if spec in (_RUN_FILE_RE.match(p.name).group("name"), p.stem)]
            hits = [_newest(hits)] if hits else []
            what = f"run name {spec!r}"
        else:
            raise RunLoadError(f"run file {spec!r} not found")
        if not hits:
            known = ", ".join(p.stem for p in saved[-5:]) or "none"
            raise RunLoadError(f"{what} not found in {storage}/*/ (latest saved runs: {known})")
        if len(hits) > 1:
            raise RunLoadError(
                f"{what} is ambiguous: {', '.join(str(p) for p in hits)}; give the file path instead"
            )
        paths.append(hits[0])
    return paths


def _check_run(data: Any, path: Path) -> None:
    """Raise unless ``data`` has the shape of a pytest-benchmark saved run."""
    if not isinstance(data, dict):
        raise RunLoadError(f"{path} is not a pytest-benchmark run: top level is {type(data).__name__}, not an object")
    missing = [k for k in ("machine_info", "benchmarks") if k not in data]
    if missing:
        raise RunLoadError(f"{path} is not a pytest-benchmark run: missing key(s) {', '.join(missing)}")
    if not isinstance(data["benchmarks"], list) or not isinstance(data["machine_info"], dict):
        raise RunLoadError(f"{path} is not a pytest-benchmark run: 'benchmarks' must be a list and 'machine_info' an object")
    for i, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict) or "name" not in bench:
            raise RunLoadError(f"{path} is not a pytest-benchmark run: benchmark #{i} has no 'name' and 'stats'")


def load_run(path: Path) -> Run:
    """Read and check one saved run file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunLoadError(f"run file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunLoadError(f"cannot read run file {str(path)!r}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunLoadError(f"{path} is corrupt JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    _check_run(data, path)
    m = _RUN_FILE_RE.match(path.name)
    run_id, name = (m.group("id"), m.group("name")) if m else (path.stem, "")
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
