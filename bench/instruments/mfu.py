"""Model FLOPs utilisation: achieved FLOP/s against a peak.

On a GPU the peak comes from a datasheet table keyed by the GPU name torch/NVML report and
by the dtype the case computes in; an unknown GPU gets no MFU rather than a guess. On the
CPU the peak is an fp32 GEMM measured once per run on the same machine (`calibrate`), which
also serves as the run's calibration kernel: a record of how fast the machine was that day.

Datasheet figures are dense (no sparsity) tensor-core peaks in TFLOPS, from NVIDIA's product
pages (listed in docs/measurement-notes.md, "GPU peaks for MFU"; the datasheets print sparsity
figures, which are 2x these).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from alexnet.config import RunConfig

__all__ = [
    "GPU_PEAK_TFLOPS",
    "calibrate",
    "compute_dtype",
    "gpu_peak_tflops",
    "mfu_for",
]

# name -> dtype -> dense peak TFLOPS. None where the GPU has no such unit (V100: no TF32/bf16).
GPU_PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    "H100 SXM": {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0, "fp16": 989.0},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H200": {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0, "fp16": 989.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    "V100 SXM2": {"fp32": 15.7, "tf32": None, "bf16": None, "fp16": 125.0},
}

# How device names map onto the table (first match wins). Examples of reported names:
# "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA A100-SXM4-80GB",
# "NVIDIA A100-PCIE-40GB", "NVIDIA L4", "Tesla V100-SXM2-16GB". NVL parts, the Grace Hopper
# superchip ("NVIDIA GH200 480GB", "NVIDIA GH200 144G HBM3e": its own clocks and power, and
# no tabled peak) and other variants are left unknown on purpose. Model numbers are
# matched as whole words, so "GH200" is not read as "H200".
_NAME_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bNVL\b", re.I), ""),  # H100 NVL / H200 NVL: different peaks, not tabled
    (re.compile(r"\bGH\d+", re.I), ""),  # Grace Hopper (GH100 / GH200 superchips): not tabled
    (re.compile(r"\bH100\b.*PCI", re.I), "H100 PCIe"),
    (re.compile(r"\bH100\b.*(SXM|HBM3)", re.I), "H100 SXM"),
    (re.compile(r"\bH200\b", re.I), "H200"),
    (re.compile(r"\bA100\b", re.I), "A100"),  # not "RTX A1000"
    (re.compile(r"(^|\s)L4$", re.I), "L4"),
    (re.compile(r"\bV100\b.*SXM2", re.I), "V100 SXM2"),
]

# Size of the calibration GEMM: big enough to reach the BLAS's steady state, small enough
# to take well under a second (CPU: ~12 ms per 1024^3 at ~170 GFLOP/s on our 2-core box).
_CALIBRATION_N = {"cpu": 1024, "cuda": 8192}
_CALIBRATION_MIN_RUN_S = 0.3


def _table_key(gpu_name: str) -> str | None:
    for pattern, key in _NAME_RULES:
        if pattern.search(gpu_name.strip()):
            return key or None
    return None


def compute_dtype(cfg: RunConfig) -> str:
    """The dtype whose peak applies: the AMP dtype, else TF32 when allowed on CUDA, else fp32."""
    if cfg.amp != "off":
        return cfg.amp
    if cfg.tf32 and cfg.is_cuda:
        return "tf32"
    return "fp32"


def gpu_peak_tflops(gpu_name: str, dtype: str) -> float | None:
    """Datasheet dense peak for ``gpu_name`` in ``dtype``, or None when not known."""
    key = _table_key(gpu_name)
    if key is None:
        return None
    return GPU_PEAK_TFLOPS[key].get(dtype)


def calibrate(device: str = "cpu") -> dict[str, Any]:
    """Time an fp32 GEMM on ``device``: the run's calibration kernel and the CPU's peak.

    TF32 is forced off for the GEMM so the figure is a true fp32 one on GPUs too.
    """
    from bench.instruments.timing import summarize, timer_samples

    dev_type = torch.device(device).type
    n = _CALIBRATION_N.get(dev_type, 1024)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.mm(a, b)  # first call: BLAS/cuBLAS handle and workspace setup
        samples = timer_samples(lambda: torch.mm(a, b), min_run_time=_CALIBRATION_MIN_RUN_S, label="calibration")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    flop = 2 * n**3  # one multiply-add = 2 FLOPs, as FlopCounterMode counts
    med = summarize(samples).median
    return {
        "kernel": f"fp32 GEMM {n}x{n}x{n} on {device} (torch.mm, torch.utils.benchmark blocked_autorange)",
        "device": device,
        "gflops": flop / med / 1e9,
        "samples_s": samples,
        "threads": torch.get_num_threads(),
    }


def mfu_for(
    cfg: RunConfig, *, achieved_tflops: float, gpu_name: str | None, cpu_calibration: dict[str, Any] | None
) -> tuple[float | None, float | None, str | None]:
    """(mfu, peak_tflops, source) for a case; all None when no peak is known."""
    dtype = compute_dtype(cfg)
    if cfg.is_cuda:
        if not gpu_name:
            return None, None, None
        peak = gpu_peak_tflops(gpu_name, dtype)
        if peak is None:
            return None, None, None
        source = f"datasheet dense {dtype} peak of {_table_key(gpu_name)} ({peak:g} TFLOPS)"
        if dtype == "fp32":
            # cuDNN may pick Winograd/FFT convolutions that do fewer real operations than
            # FlopCounterMode counts, so fp32 "MFU" can pass 100%.
            source += "; fp32: Winograd/FFT convolutions can push this past 100%"
        return achieved_tflops / peak, peak, source
    if not cpu_calibration:
        return None, None, None
    peak = cpu_calibration["gflops"] / 1e3
    source = f"measured {cpu_calibration['kernel']}: {cpu_calibration['gflops']:.1f} GFLOP/s"
    if dtype != "fp32":
        source += f"; the case computes in {dtype}, the peak is fp32"
    return achieved_tflops / peak, peak, source
