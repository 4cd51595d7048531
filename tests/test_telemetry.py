"""The background telemetry sampler: psutil on CPU (tested here), NVML on CUDA (gpu-marked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from bench.telemetry import Sampler, throttle_reason_names
from tests.conftest import REPO

NO_CUDA = not torch.cuda.is_available()


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    a = torch.randn(128, 128)
    while time.perf_counter() < end:
        a = (a @ a).tanh_()


def test_psutil_sampler_records_cpu_and_rss_over_time():
    with Sampler("cpu", interval_s=0.05) as s:
        _busy(0.3)
        # 64 MiB, written so its pages are resident, held across several sampling intervals.
        big = torch.ones(16 * 2**20, dtype=torch.float32)
        _busy(0.3)
        del big
    r = s.result(images=40)
    assert r["kind"] == "psutil" and r["reason"] is None and r["interval_s"] == 0.05
    ts = [p["t"] for p in r["series"]]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert ts[0] < 0.05 and ts[-1] >= 0.55
    # One sample at entry, one at exit, and about one per interval between (lenient: shared CPU).
    assert len(ts) >= 5
    summ = r["summary"]
    assert summ["samples"] == len(ts)
    assert summ["cpu_percent_mean"] > 0
    assert summ["rss_peak_bytes"] - summ["rss_start_bytes"] >= 48 * 2**20
    assert summ["rss_peak_bytes"] == max(p["rss_bytes"] for p in r["series"])
    json.dumps(r)  # it goes into extra_info verbatim


def test_interval_is_configurable():
    with Sampler("cpu", interval_s=0.2) as s:
        _busy(0.9)
    slow = s.result(images=1)
    gaps = [b["t"] - a["t"] for a, b in zip(slow["series"], slow["series"][1:-1])]
    assert slow["interval_s"] == 0.2
    assert gaps and min(gaps) >= 0.19  # never sooner than asked
    assert len(slow["series"]) <= 0.9 / 0.2 + 2


def test_exit_does_not_wait_for_the_next_interval():
    t0 = time.perf_counter()
    with Sampler("cpu", interval_s=30.0) as s:
        pass
    assert time.perf_counter() - t0 < 5.0  # far from the 30 s interval
    s.__exit__(None, None, None)  # a second exit is harmless and records nothing
    assert s.result(images=1)["summary"]["samples"] == 2  # entry + exit


@pytest.mark.skipif(not NO_CUDA, reason="this checks the no-GPU path; a GPU is visible here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu_is_unavailable_with_a_reason(device):
    with Sampler(device) as s:
        _busy(0.05)
    r = s.result(images=8)
    assert r["kind"] == "unavailable"
    assert "CUDA is not available" in r["reason"]
    assert r["summary"] == {} and r["series"] == []
    json.dumps(r)


def test_unknown_device_kind_is_unavailable_not_an_error():
    with Sampler("mps") as s:
        pass
    r = s.result(images=1)
    assert r["kind"] == "unavailable" and "'mps'" in r["reason"]


def test_result_before_running_is_unavailable():
    r = Sampler("cpu").result(images=1)
    assert r["kind"] == "unavailable" and "never entered" in r["reason"]


@pytest.mark.parametrize("bad", [0, -0.1, "fast", True])
def test_bad_interval_is_rejected_naming_the_value(bad):
    with pytest.raises(ValueError, match=f"interval {bad!r} is not valid"):
        Sampler("cpu", interval_s=bad)


def test_throttle_reason_names_match_nvml_bits():
    import pynvml

    mask = pynvml.nvmlClocksEventReasonSwPowerCap | pynvml.nvmlClocksEventReasonHwThermalSlowdown
    assert throttle_reason_names(mask) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert throttle_reason_names(pynvml.nvmlClocksEventReasonGpuIdle) == ["gpu_idle"]
    assert throttle_reason_names(0) == []
    assert throttle_reason_names(0x10000) == ["0x10000"]


def test_import_sets_pci_bus_order_unless_the_user_chose():
    code = "import os, bench.telemetry; print(os.environ['CUDA_DEVICE_ORDER'])"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_DEVICE_ORDER"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "PCI_BUS_ID"
    env["CUDA_DEVICE_ORDER"] = "FASTEST_FIRST"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "FASTEST_FIRST"


@pytest.mark.gpu
def test_nvml_sampler_on_a_real_gpu():
    x = torch.randn(4096, 4096, device="cuda")
    images = 0
    with Sampler("cuda", interval_s=0.05) as s:
        end = time.perf_counter() + 1.5
        while time.perf_counter() < end:
            for _ in range(20):
                x = (x @ x).tanh_()
            torch.cuda.synchronize()
            images += 1
    r = s.result(images=images)
    assert r["kind"] == "nvml", r["reason"]
    summ = r["summary"]
    assert summ["gpu_util_mean"] > 0
    assert summ["power_mean_w"] > 0
    assert summ["energy_j"] > 0
    assert summ["energy_j_per_image"] == pytest.approx(summ["energy_j"] / images)
    assert summ["sm_clock_mean_mhz"] > 0 and summ["mem_clock_mean_mhz"] > 0
    assert summ["temperature_max_c"] > 0
    assert summ["device_memory_used_bytes"] >= x.numel() * 4
    assert isinstance(summ["throttle_reasons"], list)
    assert len(r["series"]) >= 10
    json.dumps(r)
