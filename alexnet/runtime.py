"""Where each string option becomes its PyTorch object, in exactly one place.

- ``amp`` -> an autocast context (a null context when off) and a GradScaler that is simply
  disabled unless fp16, so the step never branches on AMP (as nanoGPT and timm do).
- ``cudnn_benchmark`` / ``deterministic`` / ``tf32`` -> backend switches set explicitly at
  the start of a run and restored after (`backend_switches`), as torchvision's reference
  script does; what was set is returned so it can be recorded.
- ``compile`` -> ``torch.compile(model, mode=...)``; ``channels_last`` -> memory format of
  the model and of every input batch.

`StepRunner` bundles a prepared model, optimizer, scaler and autocast context and exposes one
``step(x, y)`` used by the training loop, the benchmarks and the profiler alike.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from alexnet.config import RunConfig
from alexnet.model import build_model
from alexnet.support import cpu_has_bf16, unsupported_reason

__all__ = [
    "StepRunner",
    "amp_dtype",
    "autocast_context",
    "backend_switches",
    "cpu_has_bf16",
    "make_scaler",
    "seed_everything",
    "synchronize",
    "unsupported_reason",
]

_AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(cfg: RunConfig) -> torch.dtype | None:
    return _AMP_DTYPES[cfg.amp]


def autocast_context(cfg: RunConfig) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(cfg)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(cfg.device).type, dtype=dtype)


def make_scaler(cfg: RunConfig) -> "torch.amp.GradScaler":
    """A GradScaler that is a no-op unless training in fp16 (fp16 gradients underflow)."""
    enabled = cfg.amp == "fp16" and cfg.mode == "train"
    return torch.amp.GradScaler(torch.device(cfg.device).type, enabled=enabled)


@contextlib.contextmanager
def backend_switches(cfg: RunConfig) -> Iterator[dict[str, Any]]:
    """Set cuDNN / TF32 / determinism switches for a run, yield what was set, restore after."""
    cudnn = torch.backends.cudnn
    saved = {
        "cudnn.benchmark": cudnn.benchmark,
        "cudnn.deterministic": cudnn.deterministic,
        "cudnn.allow_tf32": cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    try:
        cudnn.benchmark = cfg.cudnn_benchmark
        cudnn.deterministic = cfg.deterministic
        cudnn.allow_tf32 = cfg.tf32
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")
        if cfg.deterministic:
            # cuBLAS needs a fixed workspace for deterministic matmuls on CUDA >= 10.2.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _set_deterministic(cfg.deterministic)
        yield {
            "cudnn.benchmark": cudnn.benchmark,
            "cudnn.deterministic": cudnn.deterministic,
            "cudnn.allow_tf32": cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
    finally:
        cudnn.benchmark = saved["cudnn.benchmark"]
        cudnn.deterministic = saved["cudnn.deterministic"]
        cudnn.allow_tf32 = saved["cudnn.allow_tf32"]
        torch.backends.cuda.matmul.allow_tf32 = saved["cuda.matmul.allow_tf32"]
        torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
        _set_deterministic(saved["deterministic_algorithms"])
        if saved["CUBLAS_WORKSPACE_CONFIG"] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _set_deterministic(on: bool) -> None:
    """``torch.use_deterministic_algorithms(on)``, called only when it changes something.

    The call imports torch._dynamo and torch._inductor (about 2.4 s on our 2-core CPU, torch
    2.14), which every fresh benchmark worker would otherwise pay just to keep the default.
    """
    if torch.are_deterministic_algorithms_enabled() != on:
        torch.use_deterministic_algorithms(on)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional for the core loop
        pass


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work; a no-op on CPU. Called before any clock is read."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StepRunner:
    """A prepared model plus everything one step needs.

    ``step(x, y)`` is a training step (forward, loss, backward, optimizer step) in train mode
    and a forward under ``torch.inference_mode`` in inference mode. It returns the loss
    (train) or the logits (inference) *without* synchronising: timing code does that.
    """

    cfg: RunConfig
    model: nn.Module
    eager_model: nn.Module
    optimizer: torch.optim.Optimizer | None
    scaler: "torch.amp.GradScaler"
    loss_fn: Callable[..., torch.Tensor] = field(default_factory=nn.CrossEntropyLoss)

    @classmethod
    def build(cls, cfg: RunConfig, *, model: nn.Module | None = None) -> "StepRunner":
        """Build the model for ``cfg`` (or adopt ``model``), move it, optionally compile it.

        Call inside `backend_switches(cfg)` so compilation sees the run's switches.
        """
        if model is None:
            model = build_model(cfg.variant, init=cfg.init, resolution=cfg.resolution)
        model = model.to(cfg.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train(cfg.mode == "train")
        optimizer = None
        if cfg.mode == "train":
            optimizer = torch.optim.SGD(
                model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        run_model = model
        if cfg.compile != "off":
            run_model = torch.compile(model, mode=None if cfg.compile == "default" else cfg.compile)
        return cls(cfg=cfg, model=run_model, eager_model=model, optimizer=optimizer, scaler=make_scaler(cfg))

    def prepare(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Move a batch to the device (and memory format) the model expects."""
        x = x.to(self.cfg.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if y is not None:
            y = y.to(self.cfg.device, non_blocking=True)
        return x, y

    def random_batch(self, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed random batch of the config's shape, already on the device."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.cfg.batch_size, self.cfg.in_channels, *self.cfg.resolution, generator=g)
        y = torch.randint(0, self.cfg.num_classes, (self.cfg.batch_size,), generator=g)
        return self.prepare(x, y)  # type: ignore[return-value]

    def forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_context(self.cfg):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
        return logits, loss

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.optimizer is not None, "train_step needs mode='train'"
        self.optimizer.zero_grad(set_to_none=True)
        _, loss = self.forward_loss(x, y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def inference_step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode(), autocast_context(self.cfg):
            return self.model(x)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.mode == "train":
            return self.train_step(x, y)
        return self.inference_step(x, y)
