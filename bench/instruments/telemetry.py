"""What the device was doing while a case ran: a background-thread sampler.

`Sampler(device, interval_s=0.1)` is a context manager around a *window* of back-to-back
steps. It samples every ``interval_s`` seconds (default 100 ms) plus once at entry and once
at exit:

- on a CUDA device, NVML (``pynvml`` from nvidia-ml-py): GPU and memory-controller
  utilisation, memory used by this process and by the whole device, power, SM and memory
  clocks, temperature and the clocks-event ("throttle") reasons; the energy counter is read
  once at entry and once at exit (below);
- on the CPU, psutil: this process's CPU utilisation and resident set size (RSS), and the
  whole machine's CPU utilisation.

``result(images=N)`` returns the ``telemetry`` dict of docs/saved-run-format.md::

    {"kind": "nvml" | "psutil" | "unavailable", "reason": str | None, "interval_s": float,
     "window_s": float | None, "summary": {...}, "series": [{"t": seconds_since_start, ...}, ...],
     "unavailable": {field: why}, "notes": [str, ...]}

With no GPU or no NVML the result is ``kind="unavailable"`` with the reason, and nothing
raises: telemetry must never break the measurement it watches. One NVML query that fails
(a field this product does not support, an NVML library older than the bindings) turns off
that field only: ``unavailable`` names it with the first error, once, and the other fields
keep being sampled.

**Energy and power come from a window sized for NVML.** NVML averages what it reports:
utilisation over 1/6 s to 1 s depending on the product, and on Ampere (except GA100) and
newer ``nvmlDeviceGetPowerUsage`` over 1 s (NVML API reference, ``nvmlDeviceGetPowerUsage``;
docs/measurement-notes.md, "NVML"). So:

- ``energy_j`` is the difference of ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules
  since the driver loaded; Volta and later) between entry and exit, not an integral of
  sampled power; ``energy_j_per_image = energy_j / images``; ``power_mean_w = energy_j /
  window_s`` where ``window_s`` is the time between the two counter reads. A window shorter
  than `ENERGY_MIN_WINDOW_S` gets a note: the counter only resolves several seconds of
  steady work well.
- The power *samples* (``power_w`` in the series, ``power_max_w``) are the instantaneous
  field value ``nvmlDeviceGetFieldValues(handle, [NVML_FI_DEV_POWER_INSTANT])`` where the
  bindings and the driver have it, else ``nvmlDeviceGetPowerUsage`` with a note that those
  readings are 1 s averages. ``power_sample_source`` says which.
- Without the energy counter, ``energy_j`` is None (``unavailable["energy"]`` says why) and
  ``power_mean_w`` is the mean of the samples (``power_mean_source: "samples"``).

What NVML's other numbers mean (read these before drawing conclusions from them):

- ``gpu_util`` (``nvmlDeviceGetUtilizationRates().gpu``) is the percentage of time, over
  the driver's last sample period, during which *at least one kernel* was running. It is
  **not** SM occupancy or a share of the GPU's compute: one tiny kernel on one SM that runs
  all the time reads 100%. It says "the GPU was never idle waiting for the host", nothing
  more. ``mem_util`` (``.memory``) is the share of that period in which device memory was
  read or written; likewise not a bandwidth fraction.
- Each reading averages over the *past* period, so the first samples of a window still
  include time from before it started; summaries use every sample in the window.
- ``device_memory_used_bytes`` is NVML's "used" memory for the whole device, which includes
  what PyTorch's caching allocator has reserved (and other processes); report
  ``torch.cuda.max_memory_allocated`` beside it for what tensors really needed.
- ``process_memory_used_bytes`` comes from NVML's running-process list; inside a container
  with its own PID namespace this process may not be found, and it is then ``None``.

Which GPU: importing this module sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (unless the user set
it) so that torch and NVML number GPUs the same way; that only takes effect if it happens
before CUDA is initialised. The NVML handle is looked up by the device's UUID as torch
reports it, which is right whatever the numbering or ``CUDA_VISIBLE_DEVICES``.

The NVML path is **untested on GPU** (written without one); its mechanism (per-query
failures, the energy window, the instant-power field and its fallback) is tested on the CPU
with a fake ``pynvml`` module in tests/test_telemetry.py.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

# Before anything initialises CUDA, so torch's device N is NVML's device N.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

__all__ = [
    "DEFAULT_INTERVAL_S",
    "ENERGY_MIN_WINDOW_S",
    "Sampler",
    "Unavailable",
    "nvml_compute_processes",
    "open_nvml",
    "throttle_reason_names",
]

DEFAULT_INTERVAL_S = 0.1
# Shortest window whose energy-counter difference is worth a J/image figure without a note.
# NVML averages power over 1 s on Hopper and the counter is meant to be differenced across
# several seconds of steady work (docs/measurement-notes.md, "NVML"); 3 s keeps the averaging at
# the edges to about a third of the window at worst.
ENERGY_MIN_WINDOW_S = 3.0
# nvmlDeviceGetPowerUsage averages over this on Ampere (except GA100) and newer (NVML docs).
POWER_USAGE_AVERAGE_S = 1.0

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

# nvmlValue_t is a union; nvmlFieldValue_t.valueType says which member holds the value
# (pynvml.py: c_nvmlValue_t, NVML_VALUE_TYPE_*). The power fields' type varies by driver.
_VALUE_MEMBERS: tuple[tuple[str, int, str], ...] = (
    ("NVML_VALUE_TYPE_DOUBLE", 0, "dVal"),
    ("NVML_VALUE_TYPE_UNSIGNED_INT", 1, "uiVal"),
    ("NVML_VALUE_TYPE_UNSIGNED_LONG", 2, "ulVal"),
    ("NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3, "ullVal"),
    ("NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4, "sllVal"),
    ("NVML_VALUE_TYPE_SIGNED_INT", 5, "siVal"),
    ("NVML_VALUE_TYPE_UNSIGNED_SHORT", 6, "usVal"),
)
# Errors that will not go away by asking again: the field is dropped after the first one.
# NVMLLibraryMismatchError is not an NVMLError: pynvml raises it from unversioned functions
# whose versioned symbol the installed driver lacks (pynvml.py, throwOnVersionMismatch).
_PERMANENT_ERRORS = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission",
                     "NVMLLibraryMismatchError")


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


class Unavailable(Exception):
    """Telemetry cannot run here; the message is the recorded reason."""


# --- NVML helpers (also used by bench.instruments.foreign) ---------------------------------------------------
def open_nvml(device: str) -> tuple[Any, Any]:
    """``(pynvml, handle)`` for torch's CUDA ``device``, NVML initialised; `Unavailable` if not.

    The caller owes one ``pynvml.nvmlShutdown()``: NVML counts initialisations, and each
    ``nvmlInit`` needs its own shutdown (NVML API reference, nvmlInit_v2 / nvmlShutdown).
    """
    try:
        import pynvml
    except ImportError as exc:
        raise Unavailable(f"pynvml (nvidia-ml-py) is not importable ({exc})") from exc
    import torch

    if not torch.cuda.is_available():
        raise Unavailable(f"device {device} requested but CUDA is not available on this machine")
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    if index >= torch.cuda.device_count():
        raise Unavailable(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) visible")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise Unavailable(f"NVML could not be initialised: {exc}") from exc
    try:
        handle = _find_handle(pynvml, torch.cuda.get_device_properties(index), index)
    except pynvml.NVMLError as exc:
        pynvml.nvmlShutdown()
        raise Unavailable(f"NVML has no handle for {device}: {exc}") from exc
    return pynvml, handle


def _find_handle(nvml: Any, props: Any, index: int) -> Any:
    from bench.instruments.envinfo import nvml_uuid as spell

    uuid = spell(getattr(props, "uuid", None) or None, props.name)  # "GPU-..." or, for a MIG slice, "MIG-..."
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except nvml.NVMLError:
            pass  # fall back to the index, made consistent by CUDA_DEVICE_ORDER
    return nvml.nvmlDeviceGetHandleByIndex(index)


def nvml_compute_processes(nvml: Any, handle: Any) -> list[Any]:
    """The processes with a compute context on the device (objects with ``pid``, ``usedGpuMemory``).

    pynvml's ``nvmlDeviceGetComputeRunningProcesses`` calls the ``_v3`` symbol and raises
    ``NVMLLibraryMismatchError`` where the driver's NVML predates it (pynvml.py,
    ``throwOnVersionMismatch``); the ``_v2`` struct is then asked for instead.
    ``usedGpuMemory`` is None where NVML cannot tell (pynvml maps NVML_VALUE_NOT_AVAILABLE).
    """
    mismatch = getattr(nvml, "NVMLLibraryMismatchError", None)
    try:
        return list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    except Exception as exc:
        v2 = getattr(nvml, "nvmlDeviceGetComputeRunningProcesses_v2", None)
        if isinstance(mismatch, type) and isinstance(exc, mismatch) and v2 is not None:
            return list(v2(handle))
        raise


def _field_value(nvml: Any, fv: Any) -> float:
    """The number in one ``nvmlFieldValue_t``; raises the field's own NVML error if it failed.

    ``nvmlDeviceGetFieldValues`` succeeds as a call even when a field does not: each value
    carries its own ``nvmlReturn`` (nvml.h, nvmlFieldValue_t).
    """
    if fv.nvmlReturn != getattr(nvml, "NVML_SUCCESS", 0):
        raise nvml.NVMLError(fv.nvmlReturn)
    for const, default, member in _VALUE_MEMBERS:
        if fv.valueType == getattr(nvml, const, default):
            return float(getattr(fv.value, member))
    raise ValueError(f"NVML field value type {fv.valueType} is not one this code reads")


def _is_permanent(nvml: Any, exc: BaseException) -> bool:
    classes = tuple(c for c in (getattr(nvml, n, None) for n in _PERMANENT_ERRORS) if isinstance(c, type))
    return isinstance(exc, classes)


# --- sources -------------------------------------------------------------------------------------
class _PsutilSource:
    kind = "psutil"

    def __init__(self) -> None:
        try:
            import psutil  # lazily: the module imports (and NVML works) without psutil
        except ImportError as exc:  # psutil is a dependency, but telemetry must not crash
            raise Unavailable(f"psutil is not importable ({exc})") from exc
        self._psutil = psutil
        self._proc = psutil.Process()
        # cpu_percent() measures since its previous call; the first call only primes it.
        self._proc.cpu_percent(None)
        psutil.cpu_percent(None)
        self.unavailable: dict[str, str] = {}
        self.notes: list[str] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def window_s(self) -> float | None:
        return None  # the sampler's own entry-to-exit time

    def sample(self) -> dict[str, Any]:
        return {
            # 100 = one core busy for the whole interval; can exceed 100 with threads.
            "cpu_percent": self._proc.cpu_percent(None),
            "system_cpu_percent": self._psutil.cpu_percent(None),
            "rss_bytes": self._proc.memory_info().rss,
        }

    def summarize(self, series: list[dict[str, Any]], *, window_s: float, images: int) -> dict[str, Any]:
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
    """NVML queries for one device; every query fails on its own (untested on GPU)."""

    kind = "nvml"

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml = nvml
        self._handle = handle
        self._pid = os.getpid()
        # field -> the first error, recorded once; fields whose error is permanent are dropped.
        self.unavailable: dict[str, str] = {}
        self.notes: list[str] = []
        self._dropped: set[str] = set()
        self._failures: dict[str, int] = {}
        self._queries: dict[str, int] = {}
        # (perf_counter at the read, millijoules) at entry and exit.
        self._energy: list[tuple[float, int] | None] = [None, None]
        self._power_source: str | None = None  # decided by the first sample, for a consistent series
        self._power_field: int | None = None
        # nvmlDeviceGetCurrentClocksEventReasons in newer bindings; ...ThrottleReasons is the
        # deprecated name of the same query (NVML API reference; docs/measurement-notes.md, "NVML").
        self._reasons_fn = ("nvmlDeviceGetCurrentClocksEventReasons"
                            if hasattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons")
                            else "nvmlDeviceGetCurrentClocksThrottleReasons")

    # --- one query, failing alone -------------------------------------------------------------
    def _fail(self, field: str, why: str, *, permanent: bool) -> None:
        self.unavailable.setdefault(field, why)
        self._failures[field] = self._failures.get(field, 0) + 1
        if permanent:
            self._dropped.add(field)

    def _query(self, field: str, fn_name: str, *args: Any, call: Callable[..., Any] | None = None) -> Any:
        """``pynvml.<fn_name>(handle, *args)``, or None with the field's failure recorded."""
        if field in self._dropped:
            return None
        fn = call or getattr(self._nvml, fn_name, None)
        if fn is None:
            self._fail(field, f"pynvml has no {fn_name} (nvidia-ml-py older than this code expects)", permanent=True)
            return None
        self._queries[field] = self._queries.get(field, 0) + 1
        try:
            return fn(self._handle, *args) if call is None else fn(self._nvml, self._handle)
        except Exception as exc:  # noqa: BLE001 - recorded per field; the other fields go on
            self._fail(field, f"{fn_name}: {type(exc).__name__}: {exc}", permanent=_is_permanent(self._nvml, exc))
            return None

    # --- the energy window ----------------------------------------------------------------------
    def _read_energy(self) -> tuple[float, int] | None:
        t0 = time.perf_counter()
        mj = self._query("energy", "nvmlDeviceGetTotalEnergyConsumption")
        t1 = time.perf_counter()
        # The read's midpoint: one call can take milliseconds.
        return None if mj is None else ((t0 + t1) / 2, int(mj))

    def start(self) -> None:
        self._energy[0] = self._read_energy()

    def stop(self) -> None:
        self._energy[1] = self._read_energy()

    def window_s(self) -> float | None:
        a, b = self._energy
        return None if a is None or b is None else b[0] - a[0]

    # --- samples --------------------------------------------------------------------------------
    def _instant_power_w(self) -> float | None:
        assert self._power_field is not None
        values = self._query("power_instant", "nvmlDeviceGetFieldValues", [self._power_field])
        if values is None:
            return None
        try:
            # The field is milliwatts, like nvmlDeviceGetPowerUsage (zeus's getInstantPowerUsage
            # reads this field as mW; nvml.h: "Current GPU power, supported on all architectures").
            return _field_value(self._nvml, values[0]) / 1000.0
        except Exception as exc:  # noqa: BLE001 - recorded for this field only
            self._fail("power_instant", f"NVML_FI_DEV_POWER_INSTANT: {type(exc).__name__}: {exc}",
                       permanent=_is_permanent(self._nvml, exc) or isinstance(exc, ValueError))
            return None

    def _power_w(self) -> float | None:
        if self._power_source is None:
            self._power_source = "power_usage"
            field = getattr(self._nvml, "NVML_FI_DEV_POWER_INSTANT", None)
            if field is None:
                why = "pynvml has no NVML_FI_DEV_POWER_INSTANT (nvidia-ml-py older than this code expects)"
                self.unavailable.setdefault("power_instant", why)
            else:
                self._power_field = int(field)
                watts = self._instant_power_w()
                if watts is not None:
                    self._power_source = "field_instant"
                    return watts
            self.notes.append(
                f"power samples are nvmlDeviceGetPowerUsage readings, which average over {POWER_USAGE_AVERAGE_S:g} s "
                "on Ampere (except GA100) and newer; the instant-power field is unavailable here "
                f"({self.unavailable.get('power_instant')})")
        if self._power_source == "field_instant":
            return self._instant_power_w()
        mw = self._query("power", "nvmlDeviceGetPowerUsage")
        return None if mw is None else mw / 1000.0

    def _process_memory(self) -> int | None:
        procs = self._query("process_memory", "nvmlDeviceGetComputeRunningProcesses", call=nvml_compute_processes)
        for p in procs or []:
            if p.pid == self._pid and p.usedGpuMemory is not None:
                return int(p.usedGpuMemory)
        return None

    def sample(self) -> dict[str, Any]:
        nv = self._nvml
        util = self._query("utilization", "nvmlDeviceGetUtilizationRates")
        mem = self._query("device_memory", "nvmlDeviceGetMemoryInfo")
        return {
            "gpu_util": None if util is None else util.gpu,
            "mem_util": None if util is None else util.memory,
            "power_w": self._power_w(),
            "sm_clock_mhz": self._query("sm_clock", "nvmlDeviceGetClockInfo", getattr(nv, "NVML_CLOCK_SM", 1)),
            "mem_clock_mhz": self._query("mem_clock", "nvmlDeviceGetClockInfo", getattr(nv, "NVML_CLOCK_MEM", 2)),
            "temperature_c": self._query("temperature", "nvmlDeviceGetTemperature", getattr(nv, "NVML_TEMPERATURE_GPU", 0)),
            "device_memory_used_bytes": None if mem is None else int(mem.used),
            "process_memory_used_bytes": self._process_memory(),
            "throttle_mask": self._query("throttle_reasons", self._reasons_fn),
        }

    def summarize(self, series: list[dict[str, Any]], *, window_s: float, images: int) -> dict[str, Any]:
        a, b = self._energy
        energy_j = (b[1] - a[1]) / 1000.0 if a is not None and b is not None else None
        powers = [s["power_w"] for s in series]
        if energy_j is not None and window_s > 0:
            power_mean, power_mean_source = energy_j / window_s, "energy_counter"
        else:
            power_mean, power_mean_source = _mean(powers), ("samples" if _mean(powers) is not None else None)
        if energy_j is not None and window_s < ENERGY_MIN_WINDOW_S:
            self.notes.append(
                f"energy window {window_s:.2f} s is shorter than {ENERGY_MIN_WINDOW_S:g} s: NVML's energy counter and "
                "power readings resolve several seconds of steady work, so energy_j and J/image are rough")
        mask = 0
        for s in series:
            mask |= s["throttle_mask"] or 0
        return {
            "gpu_util_mean": _mean([s["gpu_util"] for s in series]),
            "mem_util_mean": _mean([s["mem_util"] for s in series]),
            "power_mean_w": power_mean,
            "power_mean_source": power_mean_source,
            "power_max_w": _max(powers),
            "power_sample_source": self._power_source,
            "energy_j": energy_j,
            "energy_j_per_image": None if energy_j is None or images <= 0 else energy_j / images,
            "energy_source": None if energy_j is None else "counter",
            "sm_clock_mean_mhz": _mean([s["sm_clock_mhz"] for s in series]),
            "mem_clock_mean_mhz": _mean([s["mem_clock_mhz"] for s in series]),
            "temperature_max_c": _max([s["temperature_c"] for s in series]),
            # Union of every reason seen during the block ("gpu_idle" at the edges is normal).
            "throttle_reasons": throttle_reason_names(mask),
            "process_memory_used_bytes": _max([s["process_memory_used_bytes"] for s in series]),
            "device_memory_used_bytes": _max([s["device_memory_used_bytes"] for s in series]),
        }

    def unavailable_report(self) -> dict[str, str]:
        """Each failed field once, with how often it failed where it was not dropped."""
        out = {}
        for field, why in self.unavailable.items():
            n, of = self._failures.get(field, 0), self._queries.get(field, 0)
            if field not in self._dropped and of and n < of:
                why = f"{why} (failed {n} of {of} queries)"
            out[field] = why
        return out

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a library that is already gone: nothing to keep
            pass


def _open_source(device: str) -> _PsutilSource | _NvmlSource:
    kind = device.split(":")[0]
    if kind == "cuda":
        return _NvmlSource(*open_nvml(device))
    if kind == "cpu":
        return _PsutilSource()
    raise Unavailable(f"device {device!r} is not sampled; telemetry knows cpu and cuda[:N]")


class Sampler:
    """Sample device telemetry in a background thread while a window of steps runs.

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
            self._source = _open_source(self.device)
        except Unavailable as exc:
            self._source, self._reason = None, str(exc)
            return self
        self._t0 = time.perf_counter()
        self._take()  # the entry sample (its first power query also picks the power source)
        self._source.start()  # then the energy counter: the window starts as late as it can
        self._thread = threading.Thread(target=self._loop, name="alexnet-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._source is None or self._thread is None:
            return  # unavailable, or already exited
        # The energy counter first, so the window ends where the block did; NVML is
        # thread-safe, so this may overlap the sampling thread's last query (NVML API reference).
        self._source.stop()
        self._duration_s = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._take()
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
        """The saved-run ``telemetry`` dict; ``images`` processed in the window give J/image."""
        if self._source is None or self._error is not None or not self._series:
            reason = self._reason or self._error or "the sampler was never entered"
            return {"kind": "unavailable", "reason": reason, "interval_s": self.interval_s, "window_s": None,
                    "summary": {}, "series": [], "unavailable": {}, "notes": []}
        window = self._source.window_s()
        window_s = self._duration_s if window is None else window
        summary = self._source.summarize(self._series, window_s=window_s, images=images)
        summary["window_s"] = window_s
        summary["duration_s"] = self._duration_s
        summary["samples"] = len(self._series)
        series = [{"t": s["t"], **{k: v for k, v in s.items() if k != "t"}} for s in self._series]
        unavailable = (self._source.unavailable_report() if isinstance(self._source, _NvmlSource)
                       else dict(self._source.unavailable))
        return {"kind": self._source.kind, "reason": None, "interval_s": self.interval_s, "window_s": window_s,
                "summary": summary, "series": series, "unavailable": unavailable,
                "notes": list(dict.fromkeys(self._source.notes))}
