"""One frozen, validated description of a run.

`RunConfig` is shared by the training loop, the benchmark cases, the profiler and the
reports: a benchmark case *is* a RunConfig, and its flattened form (`RunConfig.flat()`) is
written verbatim into every saved result so that replicates can be grouped by it.

Every option is validated once, in ``__post_init__``; a bad value raises ``ValueError``
with a message that names the value and the valid ones. The CLI turns that into one line
and exit status 2.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from alexnet.arch import check_resolution

__all__ = [
    "AMP_MODES",
    "COMPILE_MODES",
    "DATASETS",
    "DEVICES",
    "DIST_BACKENDS",
    "INITS",
    "MODES",
    "PIPELINES",
    "VARIANTS",
    "RunConfig",
    "parse_resolution",
    "parse_device",
    "cuda_present",
]

MODES = ("train", "inference")
VARIANTS = ("d2l", "torchvision")
AMP_MODES = ("off", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
INITS = ("default", "xavier")
DATASETS = ("synthetic", "fashion-mnist")
PIPELINES = ("dataloader", "device")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
# torch.distributed backend of a data-parallel run (bench.ddp.rank): nccl on GPUs, gloo on CPU;
# "none" is a single process with no process group (the scaling baseline).
DIST_BACKENDS = ("none", "gloo", "nccl")

# Input channels and classes of each variant: the seed's net reads 1-channel FashionMNIST
# and predicts 10 classes; torchvision's AlexNet is the ImageNet net (3 channels, 1000).
VARIANT_CHANNELS = {"d2l": 1, "torchvision": 3}
VARIANT_CLASSES = {"d2l": 10, "torchvision": 1000}

_RES_RE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(?::\d+)?)$")


def parse_resolution(value: str | int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"224x244"`` -> (224, 244) as (height, width)."""
    if isinstance(value, bool):
        raise ValueError(f"resolution {value!r} is not valid; use N or HxW, e.g. 224 or 224x244")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return (int(value[0]), int(value[1]))
        raise ValueError(f"resolution {value!r} is not valid; use N or HxW, e.g. 224 or 224x244")
    m = _RES_RE.match(str(value))
    if not m:
        raise ValueError(f"resolution {value!r} is not valid; use N or HxW, e.g. 224 or 224x244")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    return (h, w)


def parse_device(value: str) -> str:
    """Validate a device string; ``auto`` resolves to ``cuda`` when a GPU is present."""
    value = str(value).strip()
    if not _DEVICE_RE.match(value):
        raise ValueError(f"device {value!r} is not valid; choose from {', '.join(DEVICES)}")
    if value == "auto":
        return "cuda" if cuda_present() else "cpu"
    return value


def cuda_present() -> bool:
    """Whether a CUDA GPU is visible, without initialising CUDA in this process.

    ``torch.cuda.device_count()`` asks NVML first and, per its docstring (torch 2.x), "will NOT
    poison fork if NVML discovery succeeds"; ``torch.cuda.is_available()`` calls the CUDA
    runtime unless ``PYTORCH_NVML_BASED_CUDA_CHECK=1``. The benchmark suite's coordinator
    must stay a process that never initialised CUDA (bench/suite/runner.py).
    """
    import torch

    return torch.cuda.device_count() > 0


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} {value!r} is not valid; choose from {', '.join(valid)}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: the step being measured and the training recipe.

    Defaults are the seed's: d2l AlexNet, batch 128, 224x224, SGD at lr 0.01 with no momentum
    or weight decay, 10 epochs, PyTorch's default initialisation (see `alexnet.model`).
    """

    # --- the step -------------------------------------------------------------------------
    mode: str = "train"
    variant: str = "d2l"
    batch_size: int = 128
    resolution: tuple[int, int] = (224, 224)
    device: str = "auto"
    amp: str = "off"
    compile: str = "off"
    channels_last: bool = False
    cudnn_benchmark: bool = False
    deterministic: bool = False
    tf32: bool = False
    # --- the recipe -----------------------------------------------------------------------
    init: str = "default"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 10
    seed: int = 0
    data: str = "synthetic"
    data_root: str | None = None
    pipeline: str = "dataloader"
    workers: int = 0
    # --- data parallel (bench.ddp.rank) ----------------------------------------------------
    world_size: int = 1
    dist_backend: str = "none"

    def __post_init__(self) -> None:
        _choice("mode", self.mode, MODES)
        _choice("variant", self.variant, VARIANTS)
        _choice("amp", self.amp, AMP_MODES)
        _choice("compile", self.compile, COMPILE_MODES)
        _choice("init", self.init, INITS)
        _choice("data", self.data, DATASETS)
        _choice("pipeline", self.pipeline, PIPELINES)
        _choice("dist_backend", self.dist_backend, DIST_BACKENDS)
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 1:
            raise ValueError(f"world size {self.world_size!r} is not valid; it must be an integer >= 1")
        if self.world_size > 1 and self.dist_backend == "none":
            raise ValueError(f"dist_backend 'none' is not valid with world size {self.world_size}; choose from gloo, nccl")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch size {self.batch_size!r} is not valid; it must be an integer >= 1")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs {self.epochs!r} is not valid; it must be an integer >= 1")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers {self.workers!r} is not valid; it must be an integer >= 0")
        if not (self.lr > 0):
            raise ValueError(f"lr {self.lr!r} is not valid; it must be > 0")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum {self.momentum!r} is not valid; it must be in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay {self.weight_decay!r} is not valid; it must be >= 0")
        object.__setattr__(self, "resolution", parse_resolution(self.resolution))
        object.__setattr__(self, "device", parse_device(self.device))
        check_resolution(self.variant, self.resolution)
        if self.dist_backend == "nccl" and not self.is_cuda:
            raise ValueError(f"dist_backend 'nccl' is not valid on device {self.device!r}; use gloo on CPU")

    # --- derived --------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return VARIANT_CHANNELS[self.variant]

    @property
    def num_classes(self) -> int:
        return VARIANT_CLASSES[self.variant]

    @property
    def resolution_str(self) -> str:
        return f"{self.resolution[0]}x{self.resolution[1]}"

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with some fields changed, validated again. Unknown keys are errors."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **changes)

    def case_id(self) -> str:
        """Readable id, e.g. ``train-d2l-b64-224x224-bf16-compile_default-cl``."""
        parts = [self.mode, self.variant, f"b{self.batch_size}", self.resolution_str]
        parts.append("fp32" if self.amp == "off" else self.amp)
        if self.compile != "off":
            parts.append(f"compile_{self.compile}")
        if self.channels_last:
            parts.append("cl")
        if self.cudnn_benchmark:
            parts.append("cudnnbench")
        if self.deterministic:
            parts.append("det")
        if self.tf32:
            parts.append("tf32")
        parts.append(self.device.replace(":", ""))
        if self.world_size > 1:
            parts.append(f"ddp{self.world_size}")
        return "-".join(parts)

    def flat(self) -> dict[str, Any]:
        """Flattened, JSON-ready form written into every result row."""
        d = dataclasses.asdict(self)
        d["resolution"] = self.resolution_str
        d["height"], d["width"] = self.resolution
        return d

    @classmethod
    def from_flat(cls, d: dict[str, Any]) -> "RunConfig":
        """Inverse of `flat`. The derived height/width keys are dropped; other unknown keys are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"height", "width"})
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in d.items() if k in names})
