"""The background telemetry sampler: psutil on CPU (tested here), NVML on CUDA (gpu-marked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from bench.instruments.telemetry import Sampler, throttle_reason_names
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
    code = "import os, bench.instruments.telemetry; print(os.environ['CUDA_DEVICE_ORDER'])"
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
    assert summ["energy_j"] > 0 and summ["energy_source"] == "counter"
    assert summ["energy_j_per_image"] == pytest.approx(summ["energy_j"] / images)
    # Mean power from the counter over the window; the samples from the instant field if the driver has it.
    assert 1.4 < r["window_s"] <= summ["duration_s"]
    assert summ["power_mean_w"] == pytest.approx(summ["energy_j"] / r["window_s"])
    assert summ["power_sample_source"] in ("field_instant", "power_usage"), r["unavailable"]
    assert summ["sm_clock_mean_mhz"] > 0 and summ["mem_clock_mean_mhz"] > 0
    assert summ["temperature_max_c"] > 0
    assert summ["device_memory_used_bytes"] >= x.numel() * 4
    assert isinstance(summ["throttle_reasons"], list)
    assert len(r["series"]) >= 10
    json.dumps(r)


# --- the NVML path, with a fake pynvml (the mechanism; untested on a real GPU) -----------------
import types  # noqa: E402

import pynvml as real_nvml  # noqa: E402  (constants, error classes and ctypes structs only)

import bench.instruments.telemetry as telemetry_mod  # noqa: E402

FAKE_WATTS = 200.0  # what the fake energy counter accumulates, in W
INSTANT_MW = 300_000  # the instant-power field, different from the 1 s average below
AVERAGE_MW = 250_000


class FakeNvml(types.SimpleNamespace):
    """A pynvml stand-in: real constants, error classes and field-value structs, fake queries.

    ``fail`` maps a pynvml function name to the exception it raises (every call, or only the
    first ``fail_times[name]`` calls); ``calls`` counts the calls per function.
    """

    def __init__(self, *, fail=None, fail_times=None, drop=(), field_return=0, field_type=1):
        super().__init__()
        for name in dir(real_nvml):
            if name.startswith(("NVML_", "NVMLError", "NVMLLibraryMismatchError", "nvmlClocksEventReason")):
                setattr(self, name, getattr(real_nvml, name))
        for name in drop:  # an older nvidia-ml-py: the name does not exist
            if hasattr(self, name):
                delattr(self, name)
        self.fail = dict(fail or {})
        self.fail_times = dict(fail_times or {})
        self.calls: dict[str, int] = {}
        self.energy_reads: list[int] = []
        self.field_return, self.field_type = field_return, field_type
        self.shutdowns = 0
        self._t_ref = time.perf_counter()
        queries = {
            "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(gpu=87, memory=41),
            "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(used=5 * 2**30),
            "nvmlDeviceGetPowerUsage": lambda h: AVERAGE_MW,
            "nvmlDeviceGetFieldValues": self._field_values,
            "nvmlDeviceGetTotalEnergyConsumption": self._energy,
            "nvmlDeviceGetClockInfo": lambda h, clk: {real_nvml.NVML_CLOCK_SM: 1980, real_nvml.NVML_CLOCK_MEM: 2619}[clk],
            "nvmlDeviceGetTemperature": lambda h, sensor: 55,
            "nvmlDeviceGetComputeRunningProcesses": lambda h: [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=3 * 2**30)],
            "nvmlDeviceGetComputeRunningProcesses_v2": lambda h: [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=2 * 2**30)],
            "nvmlDeviceGetCurrentClocksEventReasons": lambda h: real_nvml.nvmlClocksEventReasonSwPowerCap,
        }
        for name, fn in queries.items():
            if name not in drop:
                setattr(self, name, self._counted(name, fn))

    def _counted(self, name, fn):
        def call(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.fail and self.calls[name] <= self.fail_times.get(name, 10**9):
                raise self.fail[name]
            return fn(*args)
        return call

    def _energy(self, handle):
        # Millijoules since "driver load", rising at FAKE_WATTS.
        mj = 10**9 + int(FAKE_WATTS * 1000 * (time.perf_counter() - self._t_ref))
        self.energy_reads.append(mj)
        return mj

    def _field_values(self, handle, ids):
        fv = real_nvml.c_nvmlFieldValue_t()
        fv.fieldId, fv.nvmlReturn, fv.valueType = ids[0], self.field_return, self.field_type
        if self.field_type == real_nvml.NVML_VALUE_TYPE_DOUBLE:
            fv.value.dVal = float(INSTANT_MW)
        elif self.field_type == real_nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
            fv.value.ullVal = INSTANT_MW
        else:
            fv.value.uiVal = INSTANT_MW
        return [fv]

    def nvmlShutdown(self):
        self.shutdowns += 1


def _not_supported():
    return real_nvml.NVMLError(real_nvml.NVML_ERROR_NOT_SUPPORTED)


def _run_fake(monkeypatch, fake, *, seconds=0.25, interval=0.02, images=100):
    monkeypatch.setattr(telemetry_mod, "open_nvml", lambda device: (fake, "handle"))
    with Sampler("cuda:0", interval_s=interval) as s:
        time.sleep(seconds)
    r = s.result(images=images)
    json.dumps(r)
    return r


def test_one_unsupported_query_turns_off_that_field_only(monkeypatch):
    fake = FakeNvml(fail={"nvmlDeviceGetTemperature": _not_supported()})
    r = _run_fake(monkeypatch, fake)
    assert r["kind"] == "nvml" and r["reason"] is None
    assert list(r["unavailable"]) == ["temperature"]
    assert "NVMLError_NotSupported" in r["unavailable"]["temperature"]
    assert fake.calls["nvmlDeviceGetTemperature"] == 1  # asked once, then dropped
    summ = r["summary"]
    assert summ["temperature_max_c"] is None
    assert summ["gpu_util_mean"] == 87 and summ["sm_clock_mean_mhz"] == 1980 and summ["mem_clock_mean_mhz"] == 2619
    assert summ["throttle_reasons"] == ["sw_power_cap"]
    assert summ["process_memory_used_bytes"] == 3 * 2**30
    assert len(r["series"]) >= 5 and all(p["gpu_util"] == 87 for p in r["series"])
    assert fake.shutdowns == 1


def test_library_mismatch_is_one_field_and_the_process_list_falls_back_to_v2(monkeypatch):
    mismatch = real_nvml.NVMLLibraryMismatchError("Unversioned function called and the pyNVML version does not match")
    # The process list: pynvml's unversioned call raises the mismatch; _v2 answers.
    fake = FakeNvml(fail={"nvmlDeviceGetComputeRunningProcesses": mismatch,
                          "nvmlDeviceGetUtilizationRates": mismatch})
    r = _run_fake(monkeypatch, fake)
    assert r["summary"]["process_memory_used_bytes"] == 2 * 2**30  # from the _v2 struct
    assert list(r["unavailable"]) == ["utilization"]
    assert "NVMLLibraryMismatchError" in r["unavailable"]["utilization"]
    assert r["summary"]["gpu_util_mean"] is None and r["summary"]["power_max_w"] == INSTANT_MW / 1000
    # No _v2 either: the process memory alone is unavailable.
    fake = FakeNvml(fail={"nvmlDeviceGetComputeRunningProcesses": mismatch},
                    drop=("nvmlDeviceGetComputeRunningProcesses_v2",))
    r = _run_fake(monkeypatch, fake)
    assert list(r["unavailable"]) == ["process_memory"] and r["summary"]["gpu_util_mean"] == 87


def test_a_passing_error_is_recorded_once_and_the_field_keeps_being_sampled(monkeypatch):
    unknown = real_nvml.NVMLError(real_nvml.NVML_ERROR_UNKNOWN)
    fake = FakeNvml(fail={"nvmlDeviceGetUtilizationRates": unknown}, fail_times={"nvmlDeviceGetUtilizationRates": 1})
    r = _run_fake(monkeypatch, fake)
    n = fake.calls["nvmlDeviceGetUtilizationRates"]
    assert n == len(r["series"]) >= 5
    assert r["unavailable"] == {"utilization": f"nvmlDeviceGetUtilizationRates: NVMLError_Unknown: Unknown Error "
                                               f"(failed 1 of {n} queries)"}
    assert r["series"][0]["gpu_util"] is None and r["series"][-1]["gpu_util"] == 87


def test_energy_is_the_counter_difference_over_the_window(monkeypatch):
    fake = FakeNvml()
    r = _run_fake(monkeypatch, fake, seconds=0.4, images=64)
    summ = r["summary"]
    assert len(fake.energy_reads) == 2  # entry and exit only, never per sample
    assert summ["energy_j"] == pytest.approx((fake.energy_reads[1] - fake.energy_reads[0]) / 1000)
    assert summ["energy_source"] == "counter"
    assert summ["energy_j_per_image"] == pytest.approx(summ["energy_j"] / 64)
    assert r["window_s"] == summ["window_s"] and 0.39 <= r["window_s"] <= summ["duration_s"]
    # Mean power is energy / window (the fake's 200 W), not the mean of the samples (300 W).
    assert summ["power_mean_w"] == pytest.approx(FAKE_WATTS, rel=0.01)
    assert summ["power_mean_source"] == "energy_counter"
    # The samples are the instant field value.
    assert summ["power_sample_source"] == "field_instant" and summ["power_max_w"] == INSTANT_MW / 1000
    assert fake.calls.get("nvmlDeviceGetPowerUsage") is None
    # 0.4 s is far below what the counter resolves well: said so.
    assert any("shorter than 3 s" in n for n in r["notes"])


@pytest.mark.parametrize("field_type", [real_nvml.NVML_VALUE_TYPE_DOUBLE, real_nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG])
def test_instant_power_reads_the_union_member_its_value_type_names(monkeypatch, field_type):
    r = _run_fake(monkeypatch, FakeNvml(field_type=field_type), seconds=0.05)
    assert r["summary"]["power_max_w"] == INSTANT_MW / 1000 and r["unavailable"] == {}


@pytest.mark.parametrize("how", ["no constant in the bindings", "field not supported by the driver"])
def test_instant_power_falls_back_to_power_usage_with_a_note(monkeypatch, how):
    if how.startswith("no constant"):
        fake = FakeNvml(drop=("NVML_FI_DEV_POWER_INSTANT",))
    else:
        fake = FakeNvml(field_return=real_nvml.NVML_ERROR_NOT_SUPPORTED)
    r = _run_fake(monkeypatch, fake)
    summ = r["summary"]
    assert summ["power_sample_source"] == "power_usage"
    assert summ["power_max_w"] == AVERAGE_MW / 1000
    assert all(p["power_w"] == AVERAGE_MW / 1000 for p in r["series"])
    assert "power_instant" in r["unavailable"]
    assert any("average over 1 s" in n for n in r["notes"])
    assert fake.calls.get("nvmlDeviceGetFieldValues", 0) <= 1  # probed once at most
    assert summ["energy_source"] == "counter"  # the energy window does not depend on it


def test_without_the_energy_counter_there_is_no_energy_and_power_comes_from_samples(monkeypatch):
    fake = FakeNvml(fail={"nvmlDeviceGetTotalEnergyConsumption": _not_supported()})
    r = _run_fake(monkeypatch, fake)
    summ = r["summary"]
    assert summ["energy_j"] is None and summ["energy_j_per_image"] is None and summ["energy_source"] is None
    assert "energy" in r["unavailable"]
    assert summ["power_mean_w"] == pytest.approx(INSTANT_MW / 1000) and summ["power_mean_source"] == "samples"
    assert r["window_s"] == summ["duration_s"]


def test_module_and_nvml_path_work_without_psutil(monkeypatch):
    code = ("import sys; sys.modules['psutil'] = None; import bench.instruments.telemetry as t; "
            "s = t.Sampler('cpu'); s.__enter__(); s.__exit__(); print(s.result(images=1)['reason'])")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "psutil is not importable" in out.stdout
