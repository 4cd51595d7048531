"""Benchmark cases as data: presets of `RunConfig`s, and axis overrides applied on top.

A preset is a list of configs. An axis override (``--batch-sizes 32,64``) replaces that
axis in every case of the preset by each given value, and duplicates are dropped; so
``--preset quick --amp off,bf16`` runs every quick case in fp32 and in bf16.

- ``tiny``: for the project's own tests; 3 d2l CPU cases at batch 2, 65x65.
- ``quick``: the CPU default, CI's run: at most 12 cases, under 5 minutes on a 2-core CPU.
- ``standard``: the CUDA default: a GPU baseline, one-factor sweeps around it on every axis,
  and the full compile x AMP x channels_last grid at the baseline.
- ``full``: the cartesian product of every axis's values (narrow it with overrides).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from alexnet.config import AMP_MODES, COMPILE_MODES, MODES, VARIANTS, RunConfig, parse_resolution

__all__ = ["AXES", "PIPELINE_VALUES", "PRESETS", "Axis", "PresetSpec", "build_cases", "build_loop_cases", "default_preset",
           "loop_case_id", "parse_axis"]

ON_OFF = {"on": True, "off": False}


@dataclass(frozen=True)
class PresetSpec:
    """How many timed and warm-up rounds a preset's cases get, and how it builds them."""

    name: str
    build: Callable[[], list[RunConfig]]
    rounds: int
    warmup: int
    help: str
    # Training-loop cases (bench/test_loop.py): full steps fed by a real input pipeline.
    loops: Callable[[], list[RunConfig]] = lambda: []


@dataclass(frozen=True)
class Axis:
    """One overridable axis: command-line flag, RunConfig field, parser, valid values text.

    ``flag`` is the documented spelling, the one-config commands' (``--batch-size``, as in
    ``alexnet-bench profile``); ``alias`` (``--batch-sizes``) is accepted too."""

    flag: str
    field: str
    parse: Callable[[str], Any]
    valid: str
    alias: str | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag,) if self.alias is None else (self.flag, self.alias)


def _parse_choice(name: str, valid: Sequence[str]) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v not in valid:
            raise ValueError(f"{name} {v!r} is not valid; choose from {', '.join(valid)}")
        return v

    return parse


def _parse_on_off(name: str) -> Callable[[str], bool]:
    def parse(v: str) -> bool:
        if v not in ON_OFF:
            raise ValueError(f"{name} {v!r} is not valid; choose from on, off")
        return ON_OFF[v]

    return parse


def _parse_batch(v: str) -> int:
    if not v.isdigit() or int(v) < 1:
        raise ValueError(f"batch size {v!r} is not valid; it must be an integer >= 1")
    return int(v)


def _parse_device(v: str) -> str:
    from alexnet.config import parse_device

    return parse_device(v)


AXES: dict[str, Axis] = {
    a.field: a
    for a in [
        Axis("--mode", "mode", _parse_choice("mode", MODES), ", ".join(MODES), alias="--modes"),
        Axis("--variant", "variant", _parse_choice("variant", VARIANTS), ", ".join(VARIANTS), alias="--variants"),
        Axis("--batch-size", "batch_size", _parse_batch, "integers >= 1", alias="--batch-sizes"),
        Axis("--resolution", "resolution", parse_resolution, "N or HxW, e.g. 224,227,224x244", alias="--resolutions"),
        Axis("--amp", "amp", _parse_choice("amp", AMP_MODES), ", ".join(AMP_MODES)),
        Axis("--compile", "compile", _parse_choice("compile", COMPILE_MODES), ", ".join(COMPILE_MODES)),
        Axis("--channels-last", "channels_last", _parse_on_off("channels-last"), "on, off"),
        Axis("--cudnn-benchmark", "cudnn_benchmark", _parse_on_off("cudnn-benchmark"), "on, off"),
        Axis("--deterministic", "deterministic", _parse_on_off("deterministic"), "on, off"),
        Axis("--tf32", "tf32", _parse_on_off("tf32"), "on, off"),
        Axis("--device", "device", _parse_device, "cpu, cuda, cuda:N, auto", alias="--devices"),
    ]
}


def parse_axis(field: str, text: str) -> list[Any]:
    """``"32,64"`` -> [32, 64] for ``field``; ValueError naming the bad value and valid ones."""
    axis = AXES[field]
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{axis.flag} needs at least one value; valid: {axis.valid}")
    values = []
    for item in items:
        v = axis.parse(item)
        if v not in values:
            values.append(v)
    return values


def _dedupe(cases: list[RunConfig]) -> list[RunConfig]:
    return list(dict.fromkeys(cases))


# --- presets ----------------------------------------------------------------------------

def _tiny() -> list[RunConfig]:
    base = RunConfig(batch_size=2, resolution=(65, 65), device="cpu")
    return [base, base.replace(mode="inference"), base.replace(mode="inference", channels_last=True)]


def _quick() -> list[RunConfig]:
    from alexnet.support import cpu_has_bf16

    # Batch 32 at 96x96: one d2l train step is ~0.2-0.5 s on the 2-core CPU, so 12 cases of
    # 10 rounds plus two cold compiles (~25 s each: docs/measurement-notes.md, "torch.compile on the CPU") fit well inside 5 minutes.
    base = RunConfig(batch_size=32, resolution=(96, 96), device="cpu")
    inf = base.replace(mode="inference")
    # 10 step cases + the 2 training-loop cases of `_quick_loops` = 12, the preset's cap.
    cases = [
        base, inf,
        base.replace(channels_last=True), inf.replace(channels_last=True),
        base.replace(batch_size=64),
        base.replace(resolution=(128, 128)),
        base.replace(variant="torchvision"),
        base.replace(compile="default"), inf.replace(compile="default"),
    ]
    # bf16 only where the CPU has bf16 hardware: emulated bf16 runs ~500x slower (docs/measurement-notes.md, "bf16 on the CPU").
    cases.append(base.replace(amp="bf16") if cpu_has_bf16() else base.replace(deterministic=True))
    return cases


def _quick_loops() -> list[RunConfig]:
    # Small: the quick preset's step shape, one case per pipeline; the dataloader gets one worker
    # (the machine has 2 cores: one for the worker, one for the step).
    base = RunConfig(batch_size=32, resolution=(96, 96), device="cpu", data="synthetic")
    return [base.replace(pipeline="device"), base.replace(pipeline="dataloader", workers=1)]


def _standard_loops() -> list[RunConfig]:
    # The seed's settings: batch 128 at 224x224; the book's DataLoader uses 4 workers.
    base = RunConfig(batch_size=128, resolution=(224, 224), device="cuda", data="synthetic",
                     cudnn_benchmark=True, tf32=True)
    return [base.replace(pipeline="device"), base.replace(pipeline="dataloader", workers=4)]


# The GPU baseline: train, batch 256, 224x224, fp32 with TF32 on, eager, cudnn.benchmark on.
_STANDARD_BASE = dict(mode="train", variant="d2l", batch_size=256, resolution=(224, 224), device="cuda",
                      amp="off", compile="off", channels_last=False, cudnn_benchmark=True,
                      deterministic=False, tf32=True)

# One-factor sweep values around the baseline.
_STANDARD_SWEEPS: dict[str, list[Any]] = {
    "mode": ["inference"],
    "variant": ["torchvision"],
    "batch_size": [32, 64, 128, 512],
    "resolution": [(227, 227), (224, 244), (256, 256)],
    "amp": ["bf16", "fp16"],
    "compile": ["default", "reduce-overhead", "max-autotune"],
    "channels_last": [True],
    "cudnn_benchmark": [False],
    "deterministic": [True],
    "tf32": [False],
}


def _standard() -> list[RunConfig]:
    base = RunConfig(**_STANDARD_BASE)
    cases = [base]
    for field, values in _STANDARD_SWEEPS.items():
        cases += [base.replace(**{field: v}) for v in values]
    for comp, amp, cl in itertools.product(COMPILE_MODES, AMP_MODES, (False, True)):
        cases.append(base.replace(compile=comp, amp=amp, channels_last=cl))
    return _dedupe(cases)


_FULL_VALUES: dict[str, list[Any]] = {
    "mode": list(MODES),
    "variant": list(VARIANTS),
    "batch_size": [32, 64, 128, 256, 512],
    "resolution": [(224, 224), (227, 227), (224, 244)],
    "amp": list(AMP_MODES),
    "compile": list(COMPILE_MODES),
    "channels_last": [False, True],
    "cudnn_benchmark": [False, True],
    "deterministic": [False, True],
    "tf32": [False, True],
}


def _full() -> list[RunConfig]:
    from alexnet.config import cuda_present

    device = "cuda" if cuda_present() else "cpu"
    fields = list(_FULL_VALUES)
    return [
        RunConfig(device=device, **dict(zip(fields, combo)))
        for combo in itertools.product(*(_FULL_VALUES[f] for f in fields))
    ]


PRESETS: dict[str, PresetSpec] = {
    p.name: p
    for p in [
        PresetSpec("tiny", _tiny, rounds=10, warmup=2, help="3 d2l CPU cases at batch 2, 65x65: the project's tests"),
        PresetSpec("quick", _quick, rounds=10, warmup=2, loops=_quick_loops,
                   help="<= 12 CPU step cases + 2 training-loop cases, under 5 min on 2 cores (CPU default)"),
        PresetSpec("standard", _standard, rounds=20, warmup=5, loops=_standard_loops,
                   help="GPU baseline, one-factor sweeps, compile x AMP x channels_last grid, "
                        "training loop per pipeline (CUDA default)"),
        PresetSpec("full", _full, rounds=20, warmup=5, loops=_standard_loops, help="cartesian product of every axis"),
    ]
}


def default_preset() -> str:
    from alexnet.config import cuda_present  # NVML-based: the suite's process never initialises CUDA

    return "standard" if cuda_present() else "quick"


def build_cases(preset: str, overrides: dict[str, list[Any]] | None = None) -> list[RunConfig]:
    """The preset's cases with each overridden axis replaced by every given value."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not valid; choose from {', '.join(PRESETS)}")
    cases = PRESETS[preset].build()
    for field, values in (overrides or {}).items():
        if field not in AXES:
            raise ValueError(f"axis {field!r} is not valid; choose from {', '.join(AXES)}")
        cases = [c.replace(**{field: v}) for c in cases for v in values]
    return _dedupe(cases)


# Axes an override may change in a training-loop case. The loop is the seed's recipe (d2l net,
# training): --modes/--variants do not apply to it; it only runs when they include train/d2l.
LOOP_AXES = ("batch_size", "resolution", "device", "amp", "compile", "channels_last",
             "cudnn_benchmark", "deterministic", "tf32")
PIPELINE_VALUES = ("dataloader", "device")


def build_loop_cases(preset: str, overrides: dict[str, list[Any]] | None = None, *,
                     pipelines: Sequence[str] | None = None, data_root: str | None = None) -> list[RunConfig]:
    """The preset's training-loop cases, with axis overrides, a pipeline filter and real data."""
    overrides = overrides or {}
    if "train" not in overrides.get("mode", ["train"]) or "d2l" not in overrides.get("variant", ["d2l"]):
        return []
    cases = PRESETS[preset].loops()
    for field, values in overrides.items():
        if field in LOOP_AXES:
            cases = [c.replace(**{field: v}) for c in cases for v in values]
    if pipelines is not None:
        cases = [c for c in cases if c.pipeline in pipelines]
    if data_root is not None:
        cases = [c.replace(data="fashion-mnist", data_root=data_root) for c in cases]
    return _dedupe(cases)


def loop_case_id(cfg: RunConfig) -> str:
    """``loop-<step id>-<pipeline>[-wN]``: the step id does not name the input pipeline."""
    from bench.workloads.workload import LoopWorkload

    return LoopWorkload.case_id(cfg)
