"""Model FLOPs utilisation: achieved FLOP/s against a peak.

MFU's denominator is always an upper bound from the hardware, never a moment's speed. On a GPU
it comes from a datasheet table keyed by the GPU name torch/NVML report and by the dtype the
case computes in; an unknown GPU, or a MIG slice (a fraction of the GPU's units under the full
GPU's name), gets no MFU rather than a guess. On a CPU it is FLOP per cycle per core x physical
cores in use x the maximum clock (`bench.instruments.cpu_peak`), per dtype; a CPU nothing
describes gets none.

An fp32 GEMM is still timed once per run (`calibrate`): the run's calibration kernel, a record
of how fast the machine was that day. A case's achieved rate over it is saved as its own figure,
``gemm_rate_fraction``, which can pass 1 and is not MFU.

Datasheet figures are dense (no sparsity) tensor-core peaks in TFLOPS, from NVIDIA's product
pages (listed in docs/measurement-notes.md, "GPU peaks for MFU"; the datasheets print sparsity
figures, which are 2x these).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from alexnet.config import RunConfig
from bench.instruments.cpu_peak import cpu_peak

__all__ = [
    "GPU_PEAK_TFLOPS",
    "calibrate",
    "compute_dtype",
    "gemm_rate_fraction",
    "gpu_peak_tflops",
    "is_mig",
    "mfu_for",
]

# name -> dtype -> dense peak TFLOPS. None where the GPU has no such unit (V100: no TF32/bf16).
GPU_PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    "H100 SXM": {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0, "fp16": 989.0},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H200": {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0, "fp16": 989.0},
    # The NVL (PCIe) parts run lower clocks and power: the datasheets print FP32 60 TFLOPS and,
    # with sparsity, TF32 835, BF16/FP16 1,671; dense is half of those.
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    "V100 SXM2": {"fp32": 15.7, "tf32": None, "bf16": None, "fp16": 125.0},
}

# How device names map onto the table (first match wins). Examples of reported names:
# "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA A100-SXM4-80GB",
# "NVIDIA A100-PCIE-40GB", "NVIDIA L4", "Tesla V100-SXM2-16GB", "NVIDIA H100 NVL",
# "NVIDIA H200 NVL". The Grace Hopper superchip ("NVIDIA GH200 480GB", "NVIDIA GH200 144G
# HBM3e": its own clocks and power, and no tabled peak), other variants and MIG slices ("...
# MIG 1g.18gb", `is_mig`) are left unknown on purpose. Model numbers are matched as whole
# words, so "GH200" is not read as "H200".
_NAME_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bMIG\b"), ""),  # a MIG slice: a fraction of the units, under the full GPU's name
    (re.compile(r"\bGH\d+", re.I), ""),  # Grace Hopper (GH100 / GH200 superchips): not tabled
    (re.compile(r"\bH100\b.*\bNVL\b", re.I), "H100 NVL"),
    (re.compile(r"\bH200\b.*\bNVL\b", re.I), "H200 NVL"),
    (re.compile(r"\bNVL\b", re.I), ""),  # other NVL parts: not tabled
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


def is_mig(gpu_name: str) -> bool:
    """Whether torch names a MIG slice (CUDA reports e.g. "NVIDIA H100 80GB HBM3 MIG 1g.10gb")."""
    return re.search(r"\bMIG\b", gpu_name) is not None


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
        **({"peak": cpu_peak(torch.get_num_threads())} if dev_type == "cpu" else {}),
    }


# Why an MFU above 1 can still be a real measurement (the FLOPs are FlopCounterMode's: 2 per
# multiply-add of a direct convolution). Never "the machine's load changed": the peak is a bound.
ABOVE_ONE_REASON = ("fp32 convolutions may run as Winograd or FFT algorithms (cuDNN, oneDNN), which do fewer "
                    "multiply-adds than the direct convolution FlopCounterMode counts")


def mfu_for(
    cfg: RunConfig, *, achieved_tflops: float, gpu_name: str | None, cpu_calibration: dict[str, Any] | None
) -> tuple[float | None, float | None, str | None]:
    """(mfu, peak_tflops, source) for a case; all None when no peak is known."""
    dtype = compute_dtype(cfg)
    if cfg.is_cuda:
        if not gpu_name:
            return None, None, None
        if is_mig(gpu_name):
            return None, None, None  # a slice: its share of the units is not its name's peak
        peak = gpu_peak_tflops(gpu_name, dtype)
        if peak is None:
            return None, None, None
        source = f"datasheet dense {dtype} peak of {_table_key(gpu_name)} ({peak:g} TFLOPS)"
        return achieved_tflops / peak, peak, source
    peak_info = (cpu_calibration or {}).get("peak") or {}
    peak = (peak_info.get("tflops") or {}).get(dtype)
    if not peak:
        return None, None, None
    inputs = peak_info["inputs"]
    source = (f"CPU {dtype} peak {peak * 1e3:.0f} GFLOP/s = {inputs[f'{dtype}_flop_per_cycle']} FLOP/cycle/core "
              f"({peak_info['sources'][dtype]}) x {inputs['cores']} cores x {inputs['clock_ghz']:.2f} GHz "
              f"({inputs['clock_source']})")
    return achieved_tflops / peak, peak, source


def gemm_rate_fraction(achieved_tflops: float, cpu_calibration: dict[str, Any] | None) -> float | None:
    """The case's rate over the run's fp32 calibration GEMM (CPU runs): not MFU, can pass 1."""
    if not cpu_calibration or not cpu_calibration.get("gflops"):
        return None
    return achieved_tflops * 1e3 / cpu_calibration["gflops"]
