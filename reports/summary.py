"""Speedups over the seed's fp32 eager step of the same workload (the headlines are `reports.headlines`).

The seed's baseline is the case with every speed setting off (fp32, eager, NCHW, default
cuDNN switches) and the *same* shape: run, mode, variant, batch size, resolution, device and
recipe. Only a baseline measured in the same run counts: on our 2-core CPU the same case's
median moves between processes with a log sd of about 0.2 (docs/measurement-notes.md, "Noise on
the 2-core CPU machine"), let alone between days or machines: far more than most speedups we
want to show.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

__all__ = [
    "SPEED_AXES",
    "SEED_SPEED_SETTINGS",
    "DERIVED_AXES",
    "step_cases",
    "shape_axes",
    "with_baseline",
    "is_seed",
]

# The axes a user turns to go faster; everything else in the config defines *what* is run.
SEED_SPEED_SETTINGS: dict[str, Any] = {
    "amp": "off",
    "compile": "off",
    "channels_last": False,
    "cudnn_benchmark": False,
    "deterministic": False,
    "tf32": False,
}
SPEED_AXES = tuple(SEED_SPEED_SETTINGS)
# height/width are written by RunConfig.flat() next to "resolution" and carry no extra information.
DERIVED_AXES = ("height", "width")


def step_cases(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that time one train/inference step with a throughput (not training-loop cases)."""
    if frame.empty or "images_per_s" not in frame:
        return frame.iloc[0:0]
    kind = frame["kind"] if "kind" in frame else pd.Series("step", index=frame.index)
    keep = (kind.fillna("step") == "step") & frame["images_per_s"].notna()
    return frame[keep]


def shape_axes(axes: Sequence[str]) -> list[str]:
    """Config axes that define the workload: all but the speed settings and derived ones."""
    return [a for a in axes if a not in SPEED_AXES and a not in DERIVED_AXES]


def _key(frame: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    # str() so that None/NaN/bool compare equal across rows in a dict lookup.
    present = [c for c in cols if c in frame]
    return frame[present].map(str).agg("|".join, axis=1) if present else pd.Series("", index=frame.index)


def is_seed(frame: pd.DataFrame) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for axis, value in SEED_SPEED_SETTINGS.items():
        if axis in frame:
            mask &= frame[axis].astype(object).map(lambda v, value=value: v == value or (v is None and value is False))
    return mask


def with_baseline(frame: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Step cases plus baseline_case_id, baseline_images_per_s and speedup (NaN when no baseline).

    The baseline has the same run and shape axes, with every speed setting at the seed's value.
    """
    steps = step_cases(frame).copy()
    if steps.empty:
        return steps.assign(baseline_case_id=None, baseline_images_per_s=float("nan"), speedup=float("nan"))
    cols = ["run_label", *shape_axes(axes)]
    keys = _key(steps, cols)
    seeds = steps[is_seed(steps)]
    lookup = {k: (row["case_id"], row["images_per_s"]) for k, (_, row) in zip(keys[seeds.index], seeds.iterrows())}
    found = keys.map(lambda k: lookup.get(k, (None, float("nan"))))
    steps["baseline_case_id"] = [f[0] for f in found]
    steps["baseline_images_per_s"] = [float(f[1]) for f in found]
    steps["speedup"] = steps["images_per_s"] / steps["baseline_images_per_s"]
    return steps
