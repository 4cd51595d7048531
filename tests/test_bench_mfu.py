"""MFU peaks, the calibration GEMM and the environment capture."""

from __future__ import annotations

import pytest
import torch

from alexnet.config import RunConfig
from bench.instruments.envinfo import machine_info
from bench.instruments.mfu import calibrate, compute_dtype, gpu_peak_tflops, mfu_for


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
        ("NVIDIA H200 NVL", "bf16", None),
        # Grace Hopper superchips: not the H200 (own clocks and power), not in the table.
        ("NVIDIA GH200 480GB", "bf16", None),
        ("NVIDIA GH200 144G HBM3e", "tf32", None),
        ("NVIDIA RTX A1000", "fp32", None),  # not an A100
        ("NVIDIA GeForce RTX 4090", "bf16", None),
    ],
)
def test_datasheet_peaks_by_gpu_name(name: str, dtype: str, peak: float | None) -> None:
    assert gpu_peak_tflops(name, dtype) == peak


def test_gh200_gets_no_mfu() -> None:
    cfg = RunConfig(device="cuda", batch_size=256, amp="bf16")
    assert mfu_for(cfg, achieved_tflops=100.0, gpu_name="NVIDIA GH200 480GB", cpu_calibration=None) == (None, None, None)
    mfu, peak, source = mfu_for(cfg, achieved_tflops=98.9, gpu_name="NVIDIA H200", cpu_calibration=None)
    assert peak == 989.0 and mfu == pytest.approx(0.1) and "H200" in source


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


# --- the pace kernel names the precision its GEMM really ran in (bench.instruments.timing.PaceKernel) ---


def _drop_mantissa_bits(t: torch.Tensor, bits: int, *, truncate: bool) -> torch.Tensor:
    """fp32 inputs as TF32 (drop 13 bits) or bf16 (drop 16) would see them."""
    i = t.contiguous().view(torch.int32)
    if not truncate:
        i = i + (1 << (bits - 1))  # round half up on the magnitude
    return (i & ~((1 << bits) - 1)).view(torch.float32)


@pytest.mark.parametrize("n", [512, 4096])
def test_pace_precision_classifier_tells_fp32_tf32_and_bf16_apart(n: int) -> None:
    from bench.instruments.timing import PaceKernel

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(8, n, generator=g), torch.randn(n, n, generator=g)
    ref = a.double() @ b.double()
    assert PaceKernel.classify(a @ b, ref) == "fp32"
    for truncate in (False, True):  # cuBLAS and oneDNN may round or truncate the inputs
        tf32 = _drop_mantissa_bits(a, 13, truncate=truncate) @ _drop_mantissa_bits(b, 13, truncate=truncate)
        bf16 = _drop_mantissa_bits(a, 16, truncate=truncate) @ _drop_mantissa_bits(b, 16, truncate=truncate)
        assert PaceKernel.classify(tf32, ref) == "tf32"
        assert PaceKernel.classify(bf16, ref) == "bf16"
    assert PaceKernel.classify(a.bfloat16().float() @ b.bfloat16().float(), ref) == "bf16"


def test_pace_kernel_reads_the_switches_at_call_time(monkeypatch) -> None:
    from bench.instruments.timing import PaceKernel

    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        pace = PaceKernel("cpu")
        pace()
        assert pace.precision == "fp32" and pace.record()["kernel"] == "mm 512x512 fp32"
        checks: list[tuple] = []
        real = PaceKernel.classify.__func__

        def spy(cls, result, reference):
            checks.append(PaceKernel.switches())
            return real(cls, result, reference)

        monkeypatch.setattr(PaceKernel, "classify", classmethod(spy))
        pace()
        assert checks == []  # same switches: no re-check
        torch.set_float32_matmul_precision("medium")
        pace()
        pace()
        assert len(checks) == 1 and checks[0][0] == "medium"  # re-checked once, after the change
        # Whatever the CPU did with "medium" (oneDNN bf16 on our AVX2 machine), it is measured.
        measured = real(PaceKernel, pace.c[:8], pace._ref)
        assert pace.precisions[-1] == measured
        rec = pace.record()
        assert rec["precision"] == ("fp32" if measured == "fp32" else f"mixed: fp32, {measured}")
        assert len(rec["samples"]) == len(pace.precisions) == 4
    finally:
        torch.set_float32_matmul_precision(saved)
