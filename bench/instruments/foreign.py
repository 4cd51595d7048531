"""Foreign load: what *other* processes and tenants took from the machine while a case ran.

`ForeignLoad(device, own_pids)` is started right before a case's timed rounds and stopped
right after them (`bench.workloads.measure` does this in the case worker). ``stop()`` returns a plain,
JSON-ready dict, and `foreign_warnings` turns it into warning lines when the load was large
enough to move the timings.

What it measures:

- **CPU time of other processes** (psutil, every process on the machine): user + system CPU
  seconds each process used between ``start()`` and ``stop()``, summed over the processes
  that are not the suite's own. ``own_pids()`` is called at both ends and gives the suite's
  pids *and their children* (the caller decides what is its own; the probe's own process is
  always counted as own). Processes are keyed by ``(pid, create_time)`` so a reused pid is a
  new process. A process that started during the window counts with all its CPU time; one
  that exited during the window is counted in ``exited`` but its last CPU time is not seen
  (psutil cannot read a process that is gone), so short-lived foreign processes are
  undercounted. Processes psutil may not read (``AccessDenied``) are counted in
  ``inaccessible``. Reported as seconds, as cores (seconds / window: 1.0 = one core busy the
  whole window) and as a share of the machine (seconds / (window x logical cores)).
- **Steal time** (``/proc/stat``, the aggregate ``cpu`` line's 8th column, in clock ticks of
  ``os.sysconf("SC_CLK_TCK")``, summed over CPUs; proc(5)): time the hypervisor ran other
  tenants while this VM wanted a CPU. No process list shows it. ``steal_share`` is the steal
  ticks over all ticks of the window (user, nice, system, idle, iowait, irq, softirq, steal;
  guest time is already inside user and nice, proc(5)).
- **On a GPU** (NVML): the processes holding a compute context on the device
  (``nvmlDeviceGetComputeRunningProcesses``, read at both ends), minus the suite's own, with
  pid and used memory. Inside a container with its own PID namespace NVML reports host pids,
  which match none of ours; then ``pids_comparable`` is False and the list cannot be split
  into own and foreign: `foreign_notices` says so (once per run, by the suite), and
  `foreign_warnings` counts the contexts beyond the worker's own. The GPU part is **untested on GPU** (written without one).

Why the default thresholds of `foreign_warnings` (`ForeignThreshold`):

- ``cpu_cores = 0.10``: other processes used more than 10% of one core over the window. The
  suite's cases use every core (torch's threads = cores), so each foreign CPU second is taken
  from the timed rounds; on the 2-core machines 10% of a core is 5% of the machine, the size
  of the rounds' own spread (2-15% IQR/median; docs/measurement-notes.md, "Noise on the 2-core CPU machine"), and a busy neighbour is
  known to widen the spread to 71%.
- ``steal_share = 0.05``: the hypervisor withheld more than 5% of the VM's CPU time, again
  the size of the spread we can resolve.
- ``gpu_processes = 1``: any other compute context shares the SMs, memory bandwidth and
  clocks (and power budget) of the device; no amount is harmless for a timing.

Cost: ``start()`` and ``stop()`` each read every process's ``/proc/<pid>/stat`` once (one
psutil ``process_iter``) and ``/proc/stat`` once; ``cost_s`` in the result says what they
took (docs/profiling.md gives the figure measured on this machine).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "DEFAULT_THRESHOLD",
    "PROC_STAT",
    "ForeignLoad",
    "ForeignThreshold",
    "foreign_notices",
    "foreign_warnings",
    "parse_proc_stat",
    "process_tree",
]

PROC_STAT = "/proc/stat"
# Columns of the aggregate "cpu" line of /proc/stat, in order (proc(5)). Older kernels have
# fewer (steal since 2.6.11, guest since 2.6.24, guest_nice since 2.6.33): missing ones are 0.
_STAT_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
# All the time there was: guest and guest_nice are already counted inside user and nice.
_TOTAL_COLUMNS = _STAT_COLUMNS[:8]
# psutil's create_time is boot time + the process's start ticks, and Linux gives boot time
# (/proc/stat btime) in whole seconds: a process born in the window can look up to ~1 s older.
CREATE_TIME_SLACK_S = 2.0
# How many foreign processes the result names, largest CPU time first.
TOP_PROCESSES = 5


@dataclass(frozen=True)
class ForeignThreshold:
    """When foreign load is worth a warning; the module docstring says why these values."""

    cpu_cores: float = 0.10  # foreign CPU seconds per second of window (1.0 = one core)
    steal_share: float = 0.05  # steal ticks / all ticks over the window
    gpu_processes: int = 1  # foreign compute contexts on the device


DEFAULT_THRESHOLD = ForeignThreshold()


def parse_proc_stat(text: str) -> dict[str, int]:
    """The aggregate ``cpu`` line of /proc/stat as ``{column: clock ticks}`` (all CPUs summed)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:1 + len(_STAT_COLUMNS)]]
            values += [0] * (len(_STAT_COLUMNS) - len(values))
            return dict(zip(_STAT_COLUMNS, values))
    raise ValueError("no aggregate 'cpu' line in /proc/stat text")


def process_tree(pid: int) -> set[int]:
    """``pid`` and every live descendant of it (empty if ``pid`` is gone): an ``own_pids`` helper."""
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


class ForeignLoad:
    """Foreign CPU time, steal time and foreign GPU contexts between ``start()`` and ``stop()``.

    >>> probe = ForeignLoad("cpu", lambda: process_tree(coordinator_pid))
    >>> probe.start(); run_rounds(); result = probe.stop()
    >>> foreign_warnings(result)
    """

    def __init__(self, device: str, own_pids: Callable[[], set[int]], *, proc_stat: str | Path = PROC_STAT) -> None:
        self.device = str(device)
        self._own_pids = own_pids
        self._proc_stat = Path(proc_stat)
        self._started = False
        self.result: dict[str, Any] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.perf_counter()
        self._own = set(self._own_pids()) | {os.getpid()}
        self._cpu_error: str | None = None
        self._steal_error: str | None = None
        self._gpu_error: str | None = None
        self._start_epoch = time.time()
        self._cpu0 = self._cpu_snapshot()
        self._stat0 = self._read_stat()
        self._nvml: tuple[Any, Any] | None = None
        self._gpu: dict[int, int | None] = {}
        if self.device.startswith("cuda"):
            self._open_gpu()
            self._gpu_snapshot()
        self._t0 = time.perf_counter()
        self._start_cost = self._t0 - t0
        self._started = True
        self.result = None

    def stop(self) -> dict[str, Any]:
        """The result (also kept as ``.result``); see the module docstring for its fields."""
        if not self._started:
            raise RuntimeError("ForeignLoad.stop() before start()")
        self._started = False
        t1 = time.perf_counter()
        window = t1 - self._t0
        own = self._own | set(self._own_pids())
        cpu1 = self._cpu_snapshot()
        stat1 = self._read_stat()
        gpu = None
        if self.device.startswith("cuda"):
            self._gpu_snapshot()
            gpu = self._gpu_result(own)
            self._close_gpu()
        self.result = {
            "device": self.device,
            "window_s": window,
            "cpu": self._cpu_result(self._cpu0, cpu1, own, window),
            "steal": self._steal_result(self._stat0, stat1, window),
            "gpu": gpu,
            "cost_s": {"start": self._start_cost, "stop": time.perf_counter() - t1},
        }
        return self.result

    def __enter__(self) -> "ForeignLoad":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.stop()

    # --- CPU time of every process ----------------------------------------------------------
    def _cpu_snapshot(self) -> dict[tuple[int, float], tuple[float, str]] | None:
        """``{(pid, create_time): (user + system CPU seconds, name)}`` of every readable process."""
        try:
            import psutil
        except ImportError as exc:
            self._cpu_error = f"psutil is not importable ({exc})"
            return None
        snap: dict[tuple[int, float], tuple[float, str]] = {}
        self._inaccessible = 0
        # process_iter skips processes that vanish while it reads; an attribute it may not read
        # comes back as None (ad_value), which is what AccessDenied looks like here.
        for p in psutil.process_iter(["name", "create_time", "cpu_times"]):
            info = p.info
            times, created = info.get("cpu_times"), info.get("create_time")
            if times is None or created is None:
                self._inaccessible += 1
                continue
            snap[(p.pid, created)] = (times.user + times.system, info.get("name") or "")
        return snap

    def _cpu_result(self, before: Any, after: Any, own: set[int], window: float) -> dict[str, Any]:
        if before is None or after is None:
            return {"unavailable": self._cpu_error or "no process snapshot"}
        import psutil

        per_process: list[tuple[float, int, str]] = []
        started = 0
        for key, (cpu_s, name) in after.items():
            pid, created = key
            if pid in own:
                continue
            if key in before:
                used = cpu_s - before[key][0]
            elif created >= self._start_epoch - CREATE_TIME_SLACK_S:
                used, started = cpu_s, started + 1  # born in the window: all its time is in it
            else:
                continue  # existed well before but was unreadable then: its share is unknown
            if used > 0:
                per_process.append((used, pid, name))
        exited = sum(1 for key in before if key not in after and key[0] not in own)
        foreign_s = sum(u for u, _, _ in per_process)
        cores = psutil.cpu_count() or 1
        per_process.sort(reverse=True)
        return {
            "foreign_cpu_s": foreign_s,
            "foreign_cpu_cores": foreign_s / window if window > 0 else None,
            "foreign_cpu_share": foreign_s / (window * cores) if window > 0 else None,
            "cores": cores,
            "processes": len(after),
            "started": started,
            "exited": exited,
            "inaccessible": self._inaccessible,
            "top": [{"pid": pid, "name": name, "cpu_s": used} for used, pid, name in per_process[:TOP_PROCESSES]],
        }

    # --- steal time ------------------------------------------------------------------------
    def _read_stat(self) -> dict[str, int] | None:
        try:
            return parse_proc_stat(self._proc_stat.read_text())
        except (OSError, ValueError) as exc:
            self._steal_error = f"{self._proc_stat} is not readable ({type(exc).__name__}: {exc}); not Linux?"
            return None

    def _steal_result(self, before: dict[str, int] | None, after: dict[str, int] | None, window: float) -> dict[str, Any]:
        if before is None or after is None:
            return {"unavailable": self._steal_error or "no /proc/stat reading"}
        tick = os.sysconf("SC_CLK_TCK")  # clock ticks per second, the unit of /proc/stat
        steal = after["steal"] - before["steal"]
        total = sum(after[c] - before[c] for c in _TOTAL_COLUMNS)
        return {
            "steal_s": steal / tick,
            "steal_share": steal / total if total > 0 else None,
            "ticks": total,
            "clock_ticks_per_s": tick,
        }

    # --- GPU compute contexts (untested on GPU) ---------------------------------------------
    def _open_gpu(self) -> None:
        from bench.instruments.telemetry import Unavailable, open_nvml

        try:
            self._nvml = open_nvml(self.device)
        except Unavailable as exc:
            self._gpu_error = str(exc)

    def _gpu_snapshot(self) -> None:
        if self._nvml is None:
            return
        from bench.instruments.telemetry import nvml_compute_processes

        nvml, handle = self._nvml
        try:
            procs = nvml_compute_processes(nvml, handle)
        except Exception as exc:  # noqa: BLE001 - recorded; the probe never breaks a case
            self._gpu_error = self._gpu_error or f"nvmlDeviceGetComputeRunningProcesses: {type(exc).__name__}: {exc}"
            return
        for p in procs:
            used = None if p.usedGpuMemory is None else int(p.usedGpuMemory)
            prev = self._gpu.get(p.pid)
            self._gpu[p.pid] = used if prev is None else max(prev, used or 0)

    def _close_gpu(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml[0].nvmlShutdown()
            except Exception:  # noqa: BLE001 - the library is going away anyway
                pass
            self._nvml = None

    def _gpu_result(self, own: set[int]) -> dict[str, Any]:
        if self._gpu_error is not None and not self._gpu:
            return {"unavailable": self._gpu_error}
        import sys

        torch = sys.modules.get("torch")
        holds_context = bool(torch is not None and torch.cuda.is_initialized())
        # This process has a context, so NVML must list it; if no listed pid is ours, NVML's
        # pids are from another PID namespace (a container) and cannot be matched.
        comparable = not (holds_context and self._gpu and not own & set(self._gpu))
        foreign = [{"pid": pid, "used_memory_bytes": used} for pid, used in sorted(self._gpu.items())
                   if pid not in own]
        out = {"processes": foreign, "pids_comparable": comparable, "listed": len(self._gpu)}
        if self._gpu_error is not None:
            out["error"] = self._gpu_error  # one of the two reads failed; the other's list is above
        return out


def foreign_warnings(result: dict[str, Any] | None, *, threshold: ForeignThreshold = DEFAULT_THRESHOLD) -> list[str]:
    """Human-readable warnings for foreign load above ``threshold`` (see `ForeignThreshold`)."""
    if not result:
        return []
    out: list[str] = []
    cpu = result.get("cpu") or {}
    cores = cpu.get("foreign_cpu_cores")
    if cores is not None and cores > threshold.cpu_cores:
        top = ", ".join(f"{p['name'] or '?'} (pid {p['pid']}) {p['cpu_s']:.2f} s" for p in cpu.get("top", [])[:3])
        out.append(f"foreign load: other processes used {cores:.2f} cores ({cpu['foreign_cpu_s']:.2f} CPU s in "
                   f"{result['window_s']:.2f} s, {cpu['foreign_cpu_share']:.0%} of the machine's {cpu['cores']} cores), "
                   f"above {threshold.cpu_cores:g} of a core: they took CPU from the timed rounds"
                   + (f"; largest: {top}" if top else ""))
    steal = result.get("steal") or {}
    share = steal.get("steal_share")
    if share is not None and share > threshold.steal_share:
        out.append(f"foreign load: the hypervisor gave {share:.1%} of this VM's CPU time to other tenants "
                   f"(steal {steal['steal_s']:.2f} s), above {threshold.steal_share * 100:g}%")
    gpu = result.get("gpu") or {}
    if gpu.get("pids_comparable") is False:
        # The pids cannot be matched (`foreign_notices` says so, once per run), but the count
        # still tells: only the case's worker of ours holds a context during the rounds.
        others = (gpu.get("listed") or 0) - 1
        if others >= threshold.gpu_processes > 0:
            out.append(f"foreign load: NVML lists {gpu.get('listed')} compute contexts on {result.get('device')} "
                       f"during the rounds, and this case's worker holds one: {others} other(s) share its SMs, "
                       "memory bandwidth and power (their pids are of another PID namespace)")
    elif len(gpu.get("processes") or []) >= threshold.gpu_processes > 0:
        procs = "; ".join(f"pid {p['pid']}" + ("" if p["used_memory_bytes"] is None else
                                                f" {p['used_memory_bytes'] / 2**30:.1f} GiB")
                          for p in gpu["processes"])
        out.append(f"foreign load: {len(gpu['processes'])} other process(es) held compute contexts on "
                   f"{result.get('device')} during the rounds ({procs}); they share its SMs, memory bandwidth and power")
    return out


def foreign_notices(result: dict[str, Any] | None) -> list[str]:
    """What holds for the whole run rather than for a case, said once per run (not a warning).

    In a container with its own PID namespace (the lent GPU machines' sandbox may be one) NVML
    reports host pids, which match none of the suite's: the GPU's other users cannot be named,
    only counted (`foreign_warnings` counts them). That is a fact about the machine, not a
    fault of the case, so ``--strict-isolation`` does not fail a case for it.
    """
    gpu = (result or {}).get("gpu") or {}
    if gpu.get("pids_comparable") is False:
        return [f"NVML's process ids on {result.get('device')} are not this machine's (a container's own PID "
                "namespace?): other users of the GPU are counted, not named"]
    return []
