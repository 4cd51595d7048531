"""The sweep's cost model: each case's estimated seconds, from documented weights, learned from saved runs.

A case costs what its worker lives (``extra_info.case_wall_s``: from asking for the worker to its
exit). Before any run of the hardware exists, `default_cost` estimates it from weights; every
weight's source is in `GPU_WEIGHTS_S` / `CPU_WEIGHTS_S` and docs/sweeps.md ("The cost model").
`learn` reads saved runs (``--costs RUN_OR_DIR``): a case measured on the hardware costs the median
of its measurements; a case never measured there costs its default times the hardware's scale (the
median ratio measured / default over the cases that were).

Torch-free: a login node plans.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["CPU_WEIGHTS_S", "GPU_WEIGHTS_S", "CostModel", "default_cost", "hardware_of", "learn", "run_files"]

# CUDA: the per-item estimates of an H200 with torch 2.11 in bench/cli/commands/gpu_check.py
# (PLAN_MODEL_S, 2026-12-03; estimates, not measurements: no GPU has run the suite yet).
GPU_WEIGHTS_S: dict[str, float] = {
    "case": 3.0,  # PLAN_MODEL_S["case"]: fork, CUDA context, build, correctness check, exit
    "warmup": 2.0,  # PLAN_MODEL_S["warmup"]: the CUDA warm-up lasts at least 2 s
    "rounds per 10": 1.0,  # PLAN_MODEL_S["rounds"]: 10 rounds of k steps (k makes a round ~1 TFLOP)
    "window": 5.0,  # the default --telemetry-seconds on CUDA (docs/bench.md)
    "compile pool": 4.0,  # PLAN_MODEL_S["compile pool"]
    "compile default": 45.0,  # PLAN_MODEL_S["compile default"] (the review's 30-60 s on an H200)
    "compile reduce-overhead": 45.0,  # PLAN_MODEL_S["compile reduce-overhead"]
    # No estimate exists: max-autotune benchmarks candidate kernels on top of default's compile.
    # Assumed twice default's until a run says otherwise.
    "compile max-autotune": 90.0,
    # Assumed: an inference case compiles its forward graph only (a train case adds the backward).
    "inference compile factor": 0.5,
}
# CPU: read off case_wall_s of the quick preset on the 2-core CPU machine, 2026-12-03 (12 cases, the
# machine shared with other runs; docs/sweeps.md, "The cost model"): a fixed part per case (the tiny
# preset's inference cases, 2.6-3.0 s), seconds per step per megapixel of the batch (train b32 96x96:
# 1.2 s a step, inference 0.34 s), and a cold compile (train 48 s, inference 40 s over eager).
CPU_WEIGHTS_S: dict[str, float] = {
    "case": 2.5,
    "train step per Mpx": 4.0,
    "inference step per Mpx": 1.1,
    "compile train": 48.0,
    "compile inference": 40.0,
}
# The seed's GPU batch (256 at 224x224): the size at which a train step is about one k=1 round.
_REF_PX = 256 * 224 * 224


def _pixels(config: Mapping[str, Any]) -> int:
    res = str(config.get("resolution", "224x224"))
    h, _, w = res.partition("x")
    return int(config.get("batch_size", 128)) * int(h) * int(w or h)


def default_cost(config: Mapping[str, Any], kind: str = "step", *, rounds: int = 20, warmup: int = 5,
                 telemetry_seconds: float | None = None) -> float:
    """Estimated seconds of one case's worker from the documented weights (no hardware known)."""
    device = str(config.get("device", "cpu"))
    mode = config.get("mode", "train") if kind == "step" else "train"
    comp = config.get("compile", "off")
    if device.startswith("cuda"):
        w = GPU_WEIGHTS_S
        size = max(1.0, _pixels(config) / _REF_PX * (1.0 if mode == "train" else 1 / 3))
        window = w["window"] if telemetry_seconds is None else telemetry_seconds
        cost = w["case"] + w["warmup"] + w["rounds per 10"] * rounds / 10 * size + window
        if comp != "off":
            factor = 1.0 if mode == "train" else w["inference compile factor"]
            cost += w["compile pool"] + w[f"compile {comp}"] * factor
        return cost
    w = CPU_WEIGHTS_S
    steps = rounds + warmup + 2  # the timed and warm-up rounds, the cold step, the correctness check
    cost = w["case"] + steps * _pixels(config) / 1e6 * w[f"{mode} step per Mpx"]
    if comp != "off":
        cost += w[f"compile {mode}"]
    return cost


def hardware_of(machine_info: Mapping[str, Any], device: str) -> str:
    """The hardware a case ran on, as costs are keyed: the GPU's name for CUDA cases, else the CPU's model."""
    if device.startswith("cuda"):
        return str(machine_info.get("gpu_name") or "unknown GPU")
    return str(machine_info.get("cpu_model") or machine_info.get("processor") or "unknown CPU")


def run_files(paths: Iterable[str | Path]) -> list[Path]:
    """Saved-run files under each path (a file, or every ``*.json`` below a folder)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(q for q in p.rglob("*.json") if q.name[:4].isdigit())
        else:
            raise ValueError(f"--costs {str(p)!r}: no such file or folder")
    return out


@dataclass
class CostModel:
    """Defaults, plus what saved runs measured: ``measured[hardware][case_id]`` = wall seconds."""

    measured: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    defaults: dict[str, dict[str, float]] = field(default_factory=dict)  # the default of each measured case
    hardware: str | None = None  # the hardware the plan is for (None: defaults only)

    def scale(self) -> float:
        """The hardware's median ratio measured / default (1 when nothing was measured)."""
        got = self.measured.get(self.hardware or "", {})
        ratios = [statistics.median(v) / self.defaults[self.hardware][k] for k, v in got.items()
                  if self.defaults.get(self.hardware, {}).get(k)]
        return statistics.median(ratios) if ratios else 1.0

    def estimate(self, case_id: str, default: float) -> tuple[float, str]:
        """(seconds, source): ``measured`` (median of this case's runs), ``scaled`` or ``default``."""
        got = self.measured.get(self.hardware or "", {}).get(case_id)
        if got:
            return statistics.median(got), "measured"
        if self.hardware in self.measured:
            return default * self.scale(), "scaled"
        return default, "default"


def learn(files: Iterable[Path], *, rounds: int | None = None, warmup: int | None = None) -> CostModel:
    """A cost model from saved runs: every case with ``extra_info.case_wall_s``, keyed by its hardware."""
    model = CostModel()
    for path in files:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
            continue
        info = doc.get("machine_info") or {}
        section = doc.get("alexnet") or {}
        for b in doc["benchmarks"]:
            extra = b.get("extra_info") or {}
            wall, cid, cfg = extra.get("case_wall_s"), extra.get("case_id"), extra.get("config") or {}
            if not isinstance(wall, (int, float)) or not cid:
                continue
            hw = hardware_of(info, str(cfg.get("device", "cpu")))
            model.measured.setdefault(hw, {}).setdefault(cid, []).append(float(wall))
            model.defaults.setdefault(hw, {})[cid] = default_cost(
                cfg, extra.get("kind", "step"), rounds=rounds or section.get("rounds") or 20,
                warmup=warmup or section.get("warmup_rounds") or 5)
    return model
