"""``pytest bench/ --cases FILE``: an explicit list of cases instead of a preset's product.

A preset is a cartesian product of axes (`bench.suite.presets`); some runs need a handful of
unrelated cases in one run, with one zygote and one probe for all of them: ``alexnet-bench
gpu-check`` is one. The file is JSON::

    {"cases": [
        {"config": {"mode": "train", "batch_size": 8, "resolution": "96x96", "device": "cuda",
                    "compile": "reduce-overhead"}},
        {"config": {"mode": "train", "batch_size": 8, "resolution": "96x96", "device": "cuda",
                    "compile": "reduce-overhead"}, "label": "again"},
        {"config": {"device": "cuda", "amp": "bf16"}, "telemetry_seconds": 5, "timer_check": true}
    ]}

(a bare list of rows is accepted too). Each row:

- ``config``: `alexnet.config.RunConfig` fields; what a row leaves out is the seed's default
  (d2l, train, batch 128, 224x224, fp32, eager);
- ``kind``: ``step`` (default) or ``loop`` (a training-loop case, `bench/test_loop.py`);
- ``label``: measure the same config once more in a worker of its own. The case id gets
  ``~LABEL`` (``train-d2l-b8-96x96-fp32-compile_reduce-overhead-cuda~again``), so the saved run
  holds both and every reader sees two cases;
- ``telemetry_seconds``: this case's window of back-to-back steps after the timed rounds
  (otherwise ``--telemetry-seconds``, or its default);
- ``correctness``: false skips this case's correctness check (as ``--no-correctness`` does for
  every case); true keeps it whatever the run's option;
- ``timer_check``: after the timed rounds, time the same step with
  ``torch.utils.benchmark.Timer.blocked_autorange`` too, interleaved with blocked rounds of the
  suite's own, and save the agreement as ``extra_info.timer_check``
  (`bench.workloads.measure.CaseSession.timer_check`).

Torch-free: the coordinator reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet.config import RunConfig

__all__ = ["CaseRow", "ROW_KEYS", "load_case_list", "load_rows"]

ROW_KEYS = ("config", "kind", "label", "telemetry_seconds", "timer_check", "correctness")
KINDS = ("step", "loop")


@dataclass(frozen=True)
class CaseRow:
    cfg: RunConfig
    kind: str = "step"
    label: str | None = None
    telemetry_seconds: float | None = None
    timer_check: bool = False
    correctness: bool | None = None  # None: the run's (--no-correctness)

    @property
    def case_id(self) -> str:
        from bench.workloads.workload import workload_for

        base = workload_for(self.kind).case_id(self.cfg)
        return f"{base}~{self.label}" if self.label else base


def _row(raw: Any, n: int, where: str) -> CaseRow:
    at = f"{where}: case {n}"
    if not isinstance(raw, dict):
        raise ValueError(f"{at} is {type(raw).__name__}, not an object with keys {', '.join(ROW_KEYS)}")
    unknown = sorted(set(raw) - set(ROW_KEYS))
    if unknown:
        raise ValueError(f"{at}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(ROW_KEYS)}")
    config = raw.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{at}: 'config' must be an object of RunConfig fields (e.g. {{\"device\": \"cuda\"}})")
    try:
        cfg = RunConfig.from_flat({k: (tuple(v) if k == "resolution" and isinstance(v, list) else v)
                                   for k, v in config.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{at}: {exc}") from None
    kind = raw.get("kind", "step")
    if kind not in KINDS:
        raise ValueError(f"{at}: kind {kind!r} is not valid; choose from {', '.join(KINDS)}")
    label = raw.get("label")
    if label is not None and (not isinstance(label, str) or not label.replace("-", "").replace("_", "").isalnum()):
        raise ValueError(f"{at}: label {label!r} is not valid; use letters, digits, '-' and '_'")
    seconds = raw.get("telemetry_seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0):
        raise ValueError(f"{at}: telemetry_seconds {seconds!r} is not valid; it must be a number >= 0")
    flags = {k: raw.get(k) for k in ("timer_check", "correctness")}
    for k, v in flags.items():
        if v is not None and not isinstance(v, bool):
            raise ValueError(f"{at}: {k} {v!r} is not valid; use true or false")
    return CaseRow(cfg, kind, label, None if seconds is None else float(seconds), bool(flags["timer_check"]),
                   flags["correctness"])


def load_case_list(path: str | Path) -> list[CaseRow]:
    """The rows of a ``--cases`` file; ValueError (one line) for anything wrong in it."""
    where = f"--cases {path}"
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    return load_rows(data.get("cases") if isinstance(data, dict) else data, where=where)


def load_rows(rows: Any, *, where: str) -> list[CaseRow]:
    """Rows as plain data (a ``--cases`` file's list) to `CaseRow`; ValueError (one line) naming ``where``."""
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}: expected a non-empty list of cases (or {{\"cases\": [...]}})")
    out = [_row(r, i, where) for i, r in enumerate(rows, 1)]
    seen: dict[str, int] = {}
    for i, row in enumerate(out, 1):
        if row.case_id in seen:
            raise ValueError(f"{where}: case {i} is case {seen[row.case_id]} again ({row.case_id}); give one of them "
                             "a 'label' to measure it twice")
        seen[row.case_id] = i
    return out
