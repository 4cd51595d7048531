"""What the device was doing while a case ran: a background-thread sampler.

`Sampler(device, interval_s=0.1)` is a context manager. Around a block of work it samples,
every ``interval_s`` seconds (default 100 ms) plus once at entry and once at exit:

- on a CUDA device, NVML (``pynvml`` from nvidia-ml-py): GPU and memory-controller
  utilisation, memory used by this process and by the whole device, power, SM and memory
  clocks, temperature and the clocks-event ("throttle") reasons; the energy counter is read
  at entry and exit for joules per image;
- on the CPU, psutil: this process's CPU utilisation and resident set size (RSS), and the
  whole machine's CPU utilisation.

``result(images=N)`` returns the ``telemetry`` dict of docs/saved-run-format.md::

    {"kind": "nvml" | "psutil" | "unavailable", "reason": str | None, "interval_s": float,
     "summary": {...}, "series": [{"t": seconds_since_start, ...}, ...]}

With no GPU, no NVML, or a failing query, the result is ``kind="unavailable"`` with the
reason, and nothing raises: telemetry must never break the measurement it watches.

What NVML's numbers mean (read these before drawing conclusions from them):

- ``gpu_util`` (``nvmlDeviceGetUtilizationRates().gpu``) is the percentage of time, over
  the driver's last sample period (1/6 s to 1 s depending on the product), during which *at
  least one kernel* was running. It is **not** SM occupancy or a share of the GPU's compute:
  one tiny kernel on one SM that runs all the time reads 100%. It says "the GPU was never
  idle waiting for the host", nothing more.
- ``mem_util`` (``.memory``) is the percentage of that period in which device memory was
  being read or written; likewise not a bandwidth fraction.
- Each reading averages over the *past* window, so the first samples of a case still
  include time from before it started; summaries use every sample in the block.
- ``device_memory_used_bytes`` is NVML's "used" memory for the whole device, which includes
  what PyTorch's caching allocator has reserved (and other processes); report
  ``torch.cuda.max_memory_allocated`` beside it for what tensors really needed.
- ``process_memory_used_bytes`` comes from NVML's running-process list; inside a container
  with its own PID namespace this process may not be found, and it is then ``None``.
- Power is in watts (NVML gives milliwatts). Energy comes from
  ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and
  later), differenced over the block; where that counter is not supported the energy is the
  time integral of the power samples and ``energy_source`` says so.

Which GPU: importing this module sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (unless the user set
it) so that torch and NVML number GPUs the same way; that only takes effect if it happens
before CUDA is initialised. The NVML handle is looked up by the device's UUID as torch
reports it, which is right whatever the numbering or ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

# Before anything initialises CUDA, so torch's device N is NVML's device N.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

__all__ = ["DEFAULT_INTERVAL_S", "Sampler", "throttle_reason_names"]

DEFAULT_INTERVAL_S = 0.1

# NVML clocks-event reason bits -> readable names. Names follow nvidia-ml-py's constants
# (nvmlClocksEventReason*; the older nvmlClocksThrottleReason* are the same bits).
_REASON_BITS: dict[str, int] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}


def throttle_reason_names(mask: int) -> list[str]:
    """Names of the bits set in an NVML clocks-event reason mask (unknown bits as hex)."""
    names = [name for name, bit in _REASON_BITS.items() if mask & bit]
    rest = mask & ~sum(_REASON_BITS.values())
    if rest:
        names.append(f"0x{rest:x}")
    return names


def _mean(values: list[float | int | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _max(values: list[float | int | None]) -> float | int | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


class _Unavailable(Exception):
    """Telemetry cannot run here; the message is the recorded reason."""


class _PsutilSource:
    kind = "psutil"

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError as exc:  # psutil is a dependency, but telemetry must not crash
            raise _Unavailable(f"psutil is not importable ({exc})") from exc
        self._psutil = psutil
        self._proc = psutil.Process()
        # cpu_percent() measures since its previous call; the first call only primes it.
        self._proc.cpu_percent(None)
        psutil.cpu_percent(None)

    def start(self) -> None:
        pass

    def sample(self) -> dict[str, Any]:
        return {
            # 100 = one core busy for the whole interval; can exceed 100 with threads.
            "cpu_percent": self._proc.cpu_percent(None),
            "system_cpu_percent": self._psutil.cpu_percent(None),
            "rss_bytes": self._proc.memory_info().rss,
        }

    def summarize(self, series: list[dict[str, Any]], *, duration_s: float, images: int) -> dict[str, Any]:
        # The entry sample's cpu_percent covers the time *before* the block; leave it out.
        body = series[1:] or series
        return {
            "cpu_percent_mean": _mean([s["cpu_percent"] for s in body]),
            "system_cpu_percent_mean": _mean([s["system_cpu_percent"] for s in body]),
            "cpu_count": self._psutil.cpu_count(),
            "rss_peak_bytes": _max([s["rss_bytes"] for s in series]),
            "rss_start_bytes": series[0]["rss_bytes"] if series else None,
        }

    def close(self) -> None:
        pass


class _NvmlSource:
    kind = "nvml"

    def __init__(self, device: str) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise _Unavailable(f"pynvml (nvidia-ml-py) is not importable ({exc})") from exc
        import torch

        if not torch.cuda.is_available():
            raise _Unavailable(f"device {device} requested but CUDA is not available on this machine")
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        if index >= torch.cuda.device_count():
            raise _Unavailable(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) visible")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise _Unavailable(f"NVML could not be initialised: {exc}") from exc
        self._nvml = pynvml
        try:
            self._handle = self._find_handle(torch.cuda.get_device_properties(index), index)
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            raise _Unavailable(f"NVML has no handle for {device}: {exc}") from exc
        self._pid = os.getpid()
        self._energy_start_mj: int | None = None
        self._energy_end_mj: int | None = None

    def _find_handle(self, props: Any, index: int) -> Any:
        uuid = str(getattr(props, "uuid", "") or "")
        if uuid:
            # torch prints the UUID without NVML's "GPU-" prefix.
            nvml_uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
            try:
                return self._nvml.nvmlDeviceGetHandleByUUID(nvml_uuid)
            except self._nvml.NVMLError:
                pass  # fall back to the index, made consistent by CUDA_DEVICE_ORDER
        return self._nvml.nvmlDeviceGetHandleByIndex(index)

    def _query(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One NVML query; None when this product does not support it."""
        try:
            return fn(self._handle, *args)
        except self._nvml.NVMLError:
            return None

    def _energy_mj(self) -> int | None:
        return self._query(self._nvml.nvmlDeviceGetTotalEnergyConsumption)

    def start(self) -> None:
        self._energy_start_mj = self._energy_mj()

    def stop(self) -> None:
        self._energy_end_mj = self._energy_mj()

    def _process_memory(self) -> int | None:
        procs = self._query(self._nvml.nvmlDeviceGetComputeRunningProcesses) or []
        for p in procs:
            if p.pid == self._pid and p.usedGpuMemory is not None:
                return int(p.usedGpuMemory)
        return None

    def sample(self) -> dict[str, Any]:
        nv = self._nvml
        util = self._query(nv.nvmlDeviceGetUtilizationRates)
        mem = self._query(nv.nvmlDeviceGetMemoryInfo)
        power_mw = self._query(nv.nvmlDeviceGetPowerUsage)
        reasons_fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return {
            "gpu_util": None if util is None else util.gpu,
            "mem_util": None if util is None else util.memory,
            "power_w": None if power_mw is None else power_mw / 1000.0,
            "sm_clock_mhz": self._query(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": self._query(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_MEM),
            "temperature_c": self._query(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
            "device_memory_used_bytes": None if mem is None else int(mem.used),
            "process_memory_used_bytes": self._process_memory(),
            "throttle_mask": self._query(reasons_fn),
        }

    def summarize(self, series: list[dict[str, Any]], *, duration_s: float, images: int) -> dict[str, Any]:
        energy_j: float | None = None
        source = None
        if self._energy_start_mj is not None and self._energy_end_mj is not None:
            energy_j = (self._energy_end_mj - self._energy_start_mj) / 1000.0
            source = "counter"
        else:
            # Trapezoid integral of the power samples over the block.
            pts = [(s["t"], s["power_w"]) for s in series if s["power_w"] is not None]
            if len(pts) >= 2:
                energy_j = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(pts, pts[1:]))
                source = "power_integral"
        mask = 0
        for s in series:
            mask |= s["throttle_mask"] or 0
        return {
            "gpu_util_mean": _mean([s["gpu_util"] for s in series]),
            "mem_util_mean": _mean([s["mem_util"] for s in series]),
            "power_mean_w": _mean([s["power_w"] for s in series]),
            "power_max_w": _max([s["power_w"] for s in series]),
            "energy_j": energy_j,
            "energy_j_per_image": None if energy_j is None or images <= 0 else energy_j / images,
            "energy_source": source,
            "sm_clock_mean_mhz": _mean([s["sm_clock_mhz"] for s in series]),
            "mem_clock_mean_mhz": _mean([s["mem_clock_mhz"] for s in series]),
            "temperature_max_c": _max([s["temperature_c"] for s in series]),
            # Union of every reason seen during the block ("gpu_idle" at the edges is normal).
            "throttle_reasons": throttle_reason_names(mask),
            "process_memory_used_bytes": _max([s["process_memory_used_bytes"] for s in series]),
            "device_memory_used_bytes": _max([s["device_memory_used_bytes"] for s in series]),
        }

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass  # shutting down a library that is already gone: nothing to keep


class Sampler:
    """Sample device telemetry in a background thread while a block runs.

    >>> with Sampler("cpu", interval_s=0.1) as s:
    ...     run_the_case()
    >>> s.result(images=rounds * batch_size)["summary"]["cpu_percent_mean"]
    """

    def __init__(self, device: str, *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise ValueError(f"telemetry interval {interval_s!r} is not valid; it must be a number of seconds > 0")
        self.device = str(device)
        self.interval_s = float(interval_s)
        self._source: _PsutilSource | _NvmlSource | None = None
        self._reason: str | None = None
        self._series: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._duration_s = 0.0
        self._error: str | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "Sampler":
        self._series = []
        self._error = None
        self._stop.clear()
        try:
            kind = self.device.split(":")[0]
            if kind == "cuda":
                self._source = _NvmlSource(self.device)
            elif kind == "cpu":
                self._source = _PsutilSource()
            else:
                raise _Unavailable(f"device {self.device!r} is not sampled; telemetry knows cpu and cuda[:N]")
        except _Unavailable as exc:
            self._source, self._reason = None, str(exc)
            return self
        self._t0 = time.perf_counter()
        self._source.start()
        self._take()
        self._thread = threading.Thread(target=self._loop, name="alexnet-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._source is None or self._thread is None:
            return  # unavailable, or already exited
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._take()
        if isinstance(self._source, _NvmlSource):
            self._source.stop()
        self._duration_s = time.perf_counter() - self._t0
        # Release NVML now: summarising needs only the recorded numbers.
        self._source.close()

    def _loop(self) -> None:
        # Event.wait returns early on stop, so exit is never delayed by a whole interval.
        while not self._stop.wait(self.interval_s):
            self._take()

    def _take(self) -> None:
        assert self._source is not None
        try:
            sample = self._source.sample()
        except Exception as exc:  # noqa: BLE001 - recorded as the reason, never raised into the case
            self._error = f"sampling failed: {type(exc).__name__}: {exc}"
            self._stop.set()
            return
        sample["t"] = round(time.perf_counter() - self._t0, 6)
        self._series.append(sample)

    # --- output --------------------------------------------------------------------------
    def result(self, *, images: int) -> dict[str, Any]:
        """The saved-run ``telemetry`` dict; ``images`` processed in the block give J/image."""
        if self._source is None or self._error is not None or not self._series:
            reason = self._reason or self._error or "the sampler was never entered"
            return {"kind": "unavailable", "reason": reason, "interval_s": self.interval_s, "summary": {}, "series": []}
        summary = self._source.summarize(self._series, duration_s=self._duration_s, images=images)
        summary["duration_s"] = self._duration_s
        summary["samples"] = len(self._series)
        series = [{"t": s["t"], **{k: v for k, v in s.items() if k != "t"}} for s in self._series]
        return {"kind": self._source.kind, "reason": None, "interval_s": self.interval_s, "summary": summary, "series": series}
