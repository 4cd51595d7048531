"""MFU peaks, the calibration GEMM and the environment capture."""

from __future__ import annotations

import pytest

from alexnet.config import RunConfig
from bench.envinfo import machine_info
from bench.mfu import calibrate, compute_dtype, gpu_peak_tflops, mfu_for


@pytest.mark.parametrize(
    "name, dtype, peak",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
        ("NVIDIA H100 PCIe", "tf32", 378.0),
        ("NVIDIA H200", "fp16", 989.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A100-PCIE-40GB", "fp32", 19.5),
        ("NVIDIA L4", "tf32", 60.0),
        ("Tesla V100-SXM2-16GB", "fp16", 125.0),
        ("Tesla V100-SXM2-16GB", "bf16", None),  # no bf16 units: no MFU rather than a guess
        ("NVIDIA H100 NVL", "bf16", None),  # different part, not in the table
        ("NVIDIA GeForce RTX 4090", "bf16", None),
    ],
)
def test_datasheet_peaks_by_gpu_name(name: str, dtype: str, peak: float | None) -> None:
    assert gpu_peak_tflops(name, dtype) == peak


def test_compute_dtype_and_gpu_mfu() -> None:
    base = RunConfig(device="cuda", batch_size=256)
    assert compute_dtype(base) == "fp32"
    assert compute_dtype(base.replace(tf32=True)) == "tf32"
    assert compute_dtype(base.replace(tf32=True, amp="bf16")) == "bf16"
    mfu, peak, source = mfu_for(base.replace(amp="bf16"), achieved_tflops=98.9, gpu_name="NVIDIA H100 80GB HBM3",
                                cpu_calibration=None)
    assert peak == 989.0 and mfu == pytest.approx(0.1) and "H100 SXM" in source
    assert mfu_for(base, achieved_tflops=1.0, gpu_name="Unknown GPU", cpu_calibration=None) == (None, None, None)
    _, _, fp32_source = mfu_for(base, achieved_tflops=1.0, gpu_name="NVIDIA H200", cpu_calibration=None)
    assert "100%" in fp32_source  # fp32 MFU is labelled: Winograd/FFT can exceed the peak


def test_cpu_mfu_is_against_the_measured_gemm() -> None:
    cal = calibrate("cpu")
    assert cal["gflops"] > 0 and len(cal["samples_s"]) >= 1 and "GEMM" in cal["kernel"]
    cfg = RunConfig(device="cpu", batch_size=2, resolution=(65, 65))
    mfu, peak, source = mfu_for(cfg, achieved_tflops=cal["gflops"] / 2e3, gpu_name=None, cpu_calibration=cal)
    assert peak == pytest.approx(cal["gflops"] / 1e3)
    assert mfu == pytest.approx(0.5)
    assert "measured" in source


def test_machine_info_has_the_documented_fields_without_a_gpu() -> None:
    info = machine_info()
    for key in ("suite_schema_version", "torch_version", "torchvision_version", "cuda_version", "cudnn_version",
                "cuda_available", "gpu_name", "gpu_uuid", "gpu_driver", "gpu_power_limit_w",
                "gpu_max_sm_clock_mhz", "gpu_max_mem_clock_mhz", "cpu_model", "cpu_count",
                "torch_num_threads", "hostname"):
        assert key in info, key
    import torch

    assert info["torch_version"] == torch.__version__
    if not torch.cuda.is_available():
        assert info["gpu_name"] is None and info["gpu_uuid"] is None and info["cuda_available"] is False


@pytest.mark.gpu
def test_machine_info_names_the_gpu() -> None:
    info = machine_info()
    assert info["gpu_name"] and info["gpu_uuid"].startswith("GPU-")
