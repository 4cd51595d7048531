"""Whether a config can run on this machine, answered without importing torch where it can be.

The suite's coordinator asks this for every case before a worker starts (and must never
initialise CUDA itself), so only a CUDA config without ``cuda_facts`` imports torch here.
`alexnet.runtime` re-exports both functions.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from alexnet.config import RunConfig

__all__ = ["cpu_has_bf16", "torchvision_missing", "unsupported_reason"]


def torchvision_missing(*, import_it: bool = True) -> str | None:
    """Why the torchvision variant cannot be built here, or None.

    torchvision is imported only when its variant is used: a machine with torch alone (such as
    a GPU box with a preinstalled torch and ``pip install --no-deps -e .``) runs the d2l net and
    skips the torchvision variant with this reason. ``import_it=False`` only checks that it is
    installed (importing ``torchvision.models`` imports ``torch._dynamo``: about 1.8 s here).
    """
    if not import_it:
        try:
            found = importlib.util.find_spec("torchvision") is not None
        except ImportError:  # a finder that refuses it
            found = False
        return None if found else "the torchvision variant needs torchvision, which is not installed here"
    try:
        import torchvision.models  # noqa: F401
    except ImportError as exc:
        return f"the torchvision variant needs torchvision, which is not importable here ({exc})"
    return None


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX).

    On AVX2-only CPUs bf16 is emulated: our 2-core machine ran a bf16 GEMM at about
    0.3 GFLOP/s against about 170 GFLOP/s in fp32 (docs/measurement-notes.md, "bf16 on the CPU").
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def unsupported_reason(cfg: RunConfig, *, allow_emulated_bf16: bool = False,
                       cuda_facts: dict[str, Any] | None = None, import_torchvision: bool = True) -> str | None:
    """Why this config cannot run as asked on this machine, or None if it can.

    Unsupported combinations are skipped with this reason, never run as something else.
    ``cuda_facts`` (``{"count": N, "devices": [{"name": ..., "bf16": ...}, ...]}``, gathered by
    a process that may touch the device) lets a caller that must never initialise CUDA, such
    as the benchmark suite's coordinator, decide without asking the device itself.
    ``import_torchvision=False`` only looks for torchvision where importing it would cost seconds
    (the coordinator: the worker that builds the case imports it and skips it if that fails).
    Torch is imported only for a CUDA config without ``cuda_facts``.
    """
    if cfg.variant == "torchvision":
        missing = torchvision_missing(import_it=import_torchvision)
        if missing:
            return missing
    if cfg.is_cuda:
        if cfg.variant == "torchvision" and cfg.deterministic and cfg.mode == "train":
            # torchvision's AlexNet ends its features with AdaptiveAvgPool2d, and
            # adaptive_avg_pool2d_backward_cuda has no deterministic implementation: under
            # use_deterministic_algorithms(True) it raises. warn_only would run it, but then
            # the case would not be deterministic, which is what it claims to measure.
            return ("torchvision + deterministic + train on CUDA: adaptive_avg_pool2d_backward_cuda has no "
                    "deterministic implementation")
        if cuda_facts is None:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            devices = None
        else:
            count = int(cuda_facts.get("count") or 0)
            devices = cuda_facts.get("devices") or []
        if count == 0:
            return f"device {cfg.device} requested but CUDA is not available on this machine"
        idx = int(cfg.device.split(":")[1]) if ":" in cfg.device else 0
        if idx >= count:
            return f"device {cfg.device} requested but only {count} GPU(s) visible"
        if cfg.amp == "bf16":
            if devices is None:
                import torch

                bf16, name = torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(idx)
            else:
                bf16, name = bool(devices[idx].get("bf16")), devices[idx].get("name")
            if not bf16:
                return f"bf16 autocast requested but {name} has no bf16 support"
        return None
    # CPU
    if cfg.cudnn_benchmark:
        return "cudnn_benchmark is a cuDNN switch; it has no effect on CPU"
    if cfg.tf32:
        return "tf32 is a CUDA matmul/cuDNN switch; it has no effect on CPU"
    if cfg.amp == "fp16":
        return "fp16 autocast is not supported on CPU by this suite (use bf16, or a GPU)"
    if cfg.compile == "reduce-overhead":
        return "compile mode reduce-overhead uses CUDA graphs; it does nothing extra on CPU"
    if cfg.amp == "bf16" and not cpu_has_bf16() and not allow_emulated_bf16:
        return "bf16 on this CPU is emulated (no AVX512-BF16/AMX); ask for it explicitly to run it anyway"
    return None
