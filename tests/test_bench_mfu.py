"""MFU peaks, the calibration GEMM and the environment capture."""

from __future__ import annotations

import platform

import pytest
import torch

from alexnet.config import RunConfig
from bench.instruments.envinfo import machine_info
from bench.instruments.cpu_peak import cpu_peak, flop_per_cycle, max_clock_ghz, measure_clock_ghz, read_cpuinfo
from bench.instruments.mfu import calibrate, compute_dtype, gemm_rate_fraction, gpu_peak_tflops, mfu_for


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
        # The NVL (PCIe) parts have their own, lower peaks; a MIG slice has none of its own.
        ("NVIDIA H100 NVL", "bf16", 835.5),
        ("NVIDIA H200 NVL", "fp32", 60.0),
        ("NVIDIA H200 NVL", "tf32", 417.5),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16", None),
        ("NVIDIA H200 MIG 3g.71gb", "bf16", None),
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
    assert mfu_for(base.replace(amp="bf16"), achieved_tflops=1.0, gpu_name="NVIDIA H200 MIG 1g.18gb",
                   cpu_calibration=None) == (None, None, None)


def test_cpu_mfu_is_against_the_hardware_peak_per_dtype_and_the_gemm_is_its_own_figure() -> None:
    cal = calibrate("cpu")
    assert cal["gflops"] > 0 and len(cal["samples_s"]) >= 1 and "GEMM" in cal["kernel"]
    peak = cal["peak"]
    cfg = RunConfig(device="cpu", batch_size=2, resolution=(65, 65))
    fp32 = peak["tflops"]["fp32"]
    if fp32 is None:  # a CPU nothing describes: no MFU, as an unknown GPU
        assert mfu_for(cfg, achieved_tflops=0.01, gpu_name=None, cpu_calibration=cal) == (None, None, None)
        return
    mfu, got, source = mfu_for(cfg, achieved_tflops=fp32 / 2, gpu_name=None, cpu_calibration=cal)
    assert got == fp32 and mfu == pytest.approx(0.5)
    inputs = peak["inputs"]
    assert fp32 == pytest.approx(inputs["fp32_flop_per_cycle"] * inputs["cores"] * inputs["clock_ghz"] / 1e3)
    assert "FLOP/cycle/core" in source and inputs["clock_source"] in source
    # The GEMM is a moment's speed, not a peak: it stays below the bound (with 10% for a clock
    # probe that read one core's boost while the GEMM's cores ran a little faster).
    assert cal["gflops"] / 1e3 < 1.1 * fp32
    assert gemm_rate_fraction(cal["gflops"] / 2e3, cal) == pytest.approx(0.5)
    bf16 = peak["tflops"]["bf16"]
    if bf16 is not None:
        _, got16, source16 = mfu_for(cfg.replace(amp="bf16"), achieved_tflops=0.01, gpu_name=None, cpu_calibration=cal)
        assert got16 == bf16 and "bf16" in source16


# /proc/cpuinfo of a 2-vCPU VM (this project's machine on 2026-12-03) and of others, trimmed.
def _cpuinfo(vendor: str, family: int, model: int, flags: str, cores: list[tuple[int, int]], name: str = "x") -> str:
    return "\n\n".join(f"processor\t: {i}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                       f"model name\t: {name}\nphysical id\t: {p}\ncore id\t\t: {c}\nflags\t\t: {flags}"
                       for i, (p, c) in enumerate(cores)) + "\n"


ZEN4_FLAGS = "fpu sse2 fma avx2 avx512f avx512_bf16 hypervisor"


@pytest.mark.parametrize(("vendor", "family", "model", "flags", "fp32", "bf16", "where"), [
    ("AuthenticAMD", 0x19, 0x11, ZEN4_FLAGS, 32, 64, "Zen 4"),  # EPYC 9004 (this machine)
    ("AuthenticAMD", 0x1A, 0x02, ZEN4_FLAGS, 64, 128, "Zen 5"),  # EPYC 9005: full-width AVX-512
    ("AuthenticAMD", 0x1A, 0x24, ZEN4_FLAGS, 32, 64, "Strix"),  # mobile Zen 5: 256-bit datapaths
    ("AuthenticAMD", 0x19, 0x01, "fma avx2", 32, None, "Zen 3"),  # Milan: bf16 is emulated, no peak
    ("GenuineIntel", 6, 0x8F, "fma avx2 avx512f avx512_bf16 amx_bf16", 64, 2048, "AMX"),
    ("GenuineIntel", 6, 0x55, "fma avx2 avx512f", 64, None, "Skylake-SP"),  # no avx512_bf16: not Cooper Lake
    ("GenuineIntel", 6, 0x55, "fma avx2 avx512f avx512_bf16", 64, 128, "Cooper Lake"),
    ("GenuineIntel", 6, 0x9A, "fma avx2", 32, None, "ISA bound"),  # not tabled: the instruction set's bound
    ("CentaurHauls", 7, 0x3B, "sse2", None, None, "no peak"),
])
def test_flop_per_cycle_by_vendor_family_and_model(vendor, family, model, flags, fp32, bf16, where) -> None:
    info = read_cpuinfo(_cpuinfo(vendor, family, model, flags, [(0, 0)]), cpus=None)
    got32, source = flop_per_cycle(info, "fp32")
    assert got32 == fp32 and where in source
    assert flop_per_cycle(info, "bf16")[0] == bf16


def test_physical_cores_count_smt_siblings_once_and_the_peak_names_its_inputs() -> None:
    # 4 logical CPUs on 2 cores (SMT): 4 threads still get 2 cores' units.
    text = _cpuinfo("AuthenticAMD", 0x19, 0x11, ZEN4_FLAGS, [(0, 0), (0, 0), (0, 1), (0, 1)])
    info = read_cpuinfo(text, cpus=None)
    assert (info.logical_cpus, info.physical_cores) == (4, 2)
    peak = cpu_peak(4, info=info, clock=(3.5, "test clock"))
    assert peak["inputs"]["cores"] == 2
    assert peak["tflops"]["fp32"] == pytest.approx(32 * 2 * 3.5 / 1e3)
    assert peak["tflops"]["bf16"] == pytest.approx(64 * 2 * 3.5 / 1e3)
    assert cpu_peak(1, info=info, clock=(3.5, "test clock"))["inputs"]["cores"] == 1
    assert read_cpuinfo(text, cpus={0, 1}).physical_cores == 1  # the affinity mask counts
    none = cpu_peak(2, info=info, clock=(None, "no clock"))
    assert none["tflops"] == {"fp32": None, "bf16": None}  # no clock: no peak, never a guess


def test_the_clock_comes_from_sysfs_where_it_exists_else_the_probe(tmp_path) -> None:
    (tmp_path / "cpu0").mkdir()
    (tmp_path / "cpu0" / "max").write_text("3700000\n")
    ghz, source = max_clock_ghz(0, sysfs=str(tmp_path / "cpu{}" / "max"))
    assert ghz == pytest.approx(3.7) and "sysfs" in source
    ghz, source = max_clock_ghz(0, sysfs=str(tmp_path / "nowhere{}"))
    if platform.machine() in ("x86_64", "AMD64"):
        # A real measurement of this machine's clock: any x86-64 core runs between 0.5 and 7 GHz.
        assert 0.5 < ghz < 7 and "dependent-add" in source
        # A second probe with chains half as long reads the same clock: the reading is adds per
        # second, not a function of the chain length. Many repeats, as the probe's own defaults,
        # because under CI's 3 test workers 2 repeats of 6 ms were both preempted (1.48 against 3.68).
        assert measure_clock_ghz(repeats=41, iterations=25_000) == pytest.approx(ghz, rel=0.25)
    else:
        assert ghz is None


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the clock probe is x86-64 machine code")
def test_the_clock_probe_holds_when_other_processes_keep_the_cores_busy() -> None:
    """With 3 busy processes on the cores, a repeat the scheduler interrupts reads a slower clock: the
    probe's many short repeats must still find a clean one (the earlier 7 repeats of 28 ms read half
    the clock here, and the peak fell below the GEMM it bounds). Two readings in the same test."""
    import subprocess
    import sys
    import time

    from tests import machine

    with machine.exclusive():  # the quiet reading needs the cores; the loaded one brings its own load
        quiet = measure_clock_ghz()
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
        try:
            time.sleep(0.3)
            loaded = measure_clock_ghz()
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
    assert loaded > 0.85 * quiet, (loaded, quiet)


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


def test_nvml_spells_a_mig_slice_uuid_with_its_own_prefix() -> None:
    from bench.instruments.envinfo import nvml_uuid

    raw = "3f2b9c1e-0000-4000-8000-1234567890ab"
    assert nvml_uuid(raw, "NVIDIA H200") == f"GPU-{raw}"
    assert nvml_uuid(raw, "NVIDIA H100 80GB HBM3 MIG 1g.10gb") == f"MIG-{raw}"
    assert nvml_uuid(f"MIG-{raw}", "NVIDIA H200") == f"MIG-{raw}"  # already spelled: kept
    assert nvml_uuid(None, "NVIDIA H200") is None


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
