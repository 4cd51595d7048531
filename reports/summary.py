"""Speedups over the seed's fp32 eager step, and the best configuration of each mode.

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
    "best_configs",
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


def _is_seed(frame: pd.DataFrame) -> pd.Series:
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
    seeds = steps[_is_seed(steps)]
    lookup = {k: (row["case_id"], row["images_per_s"]) for k, (_, row) in zip(keys[seeds.index], seeds.iterrows())}
    found = keys.map(lambda k: lookup.get(k, (None, float("nan"))))
    steps["baseline_case_id"] = [f[0] for f in found]
    steps["baseline_images_per_s"] = [float(f[1]) for f in found]
    steps["speedup"] = steps["images_per_s"] / steps["baseline_images_per_s"]
    return steps


def best_configs(frame: pd.DataFrame, axes: Sequence[str]) -> list[dict[str, Any]]:
    """Per run and mode, the fastest step case and its speedup over the seed's fp32 eager.

    When the fastest case has no baseline at its own shape, its throughput is set against the
    seed's fp32 eager case of the same run, mode, variant, device and resolution whose batch
    size is nearest, and ``note`` says so: images/s is per image, so that comparison is fair
    but mixes the batch-size effect into the speedup.
    """
    steps = with_baseline(frame, axes)
    out: list[dict[str, Any]] = []
    if steps.empty:
        return out
    seeds = steps[_is_seed(steps)]
    for (run_label, mode), group in steps.groupby(["run_label", "mode"], sort=False, dropna=False):
        best = group.loc[group["images_per_s"].idxmax()]
        entry = {
            "run_label": run_label,
            "mode": mode,
            "case_id": best["case_id"],
            "images_per_s": float(best["images_per_s"]),
            "images_per_s_iqr": float(best.get("images_per_s_iqr", float("nan"))),
            "settings": {a: best[a] for a in SPEED_AXES if a in best.index},
            "baseline_case_id": best["baseline_case_id"],
            "baseline_images_per_s": float(best["baseline_images_per_s"]),
            "speedup": float(best["speedup"]),
            "note": None,
        }
        if entry["baseline_case_id"] is None:
            same = seeds[(seeds["run_label"] == run_label) & (seeds["mode"] == mode)]
            for axis in ("variant", "device", "resolution"):
                if axis in same:
                    same = same[same[axis] == best[axis]]
            if not same.empty and "batch_size" in same:
                near = same.loc[(same["batch_size"] - best["batch_size"]).abs().idxmin()]
                entry.update(
                    baseline_case_id=near["case_id"],
                    baseline_images_per_s=float(near["images_per_s"]),
                    speedup=float(best["images_per_s"] / near["images_per_s"]),
                    note=f"no fp32 eager case at batch {best['batch_size']}; baseline is batch {near['batch_size']}",
                )
            else:
                entry["note"] = "no fp32 eager baseline of this mode, variant, device and resolution in this run"
        out.append(entry)
    return out
