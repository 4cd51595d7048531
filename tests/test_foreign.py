"""The foreign-load probe (bench.instruments.foreign): other processes' CPU time, steal time, GPU contexts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import pytest

import bench.instruments.foreign as foreign
from tests import machine
import bench.instruments.telemetry as telemetry
from bench.instruments.foreign import ForeignLoad, ForeignThreshold, foreign_warnings, parse_proc_stat, process_tree

# A busy loop that runs until killed (or 60 s), started as a plain Python child: no torch import.
BUSY = "import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass\n"
BUSY_S = 1.0


def _busy_child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUSY])


def _stop_child(child: subprocess.Popen) -> None:
    child.kill()
    child.wait(timeout=10)


@pytest.fixture
def every_process(monkeypatch):
    """Name every foreign process in the result, so a pid's absence from it means something."""
    monkeypatch.setattr(foreign, "TOP_PROCESSES", 10_000)


def test_a_busy_child_started_in_the_window_is_foreign_load(every_process):
    # With the machine to itself (tests/machine.py): the check ranks every process's CPU time in
    # the window, and the other test workers' processes would outrank the child.
    with machine.exclusive():
        probe = ForeignLoad("cpu", lambda: set())  # the probe's own process is always its own
        probe.start()
        child = _busy_child()
        try:
            time.sleep(BUSY_S)
            r = probe.stop()
        finally:
            _stop_child(child)
    json.dumps(r)
    cpu = r["cpu"]
    mine = [p for p in cpu["top"] if p["pid"] == child.pid]
    assert mine, cpu["top"]
    # A busy loop on a shared 2-core machine gets at least a fair part of one core.
    assert mine[0]["cpu_s"] > 0.3 * BUSY_S
    assert cpu["started"] >= 1 and cpu["foreign_cpu_s"] >= mine[0]["cpu_s"]
    assert cpu["foreign_cpu_cores"] == pytest.approx(cpu["foreign_cpu_s"] / r["window_s"])
    assert cpu["foreign_cpu_share"] == pytest.approx(cpu["foreign_cpu_cores"] / cpu["cores"])
    assert os.getpid() not in {p["pid"] for p in cpu["top"]}
    warnings = foreign_warnings(r)
    assert warnings and "above 0.1 of a core" in warnings[0] and f"pid {child.pid}" in warnings[0]


def test_the_same_work_in_an_own_pid_is_not_foreign(every_process):
    holder: dict[str, int] = {}
    probe = ForeignLoad("cpu", lambda: {holder["pid"]} if "pid" in holder else set())
    probe.start()
    child = _busy_child()
    holder["pid"] = child.pid  # own_pids is asked again at stop: children born in the window count
    try:
        time.sleep(BUSY_S)
        r = probe.stop()
    finally:
        _stop_child(child)
    assert child.pid not in {p["pid"] for p in r["cpu"]["top"]}
    assert not any(f"pid {child.pid}" in w for w in foreign_warnings(r))


def test_process_tree_gives_a_pid_and_its_children():
    child = _busy_child()
    try:
        assert process_tree(os.getpid()) >= {os.getpid(), child.pid}
    finally:
        _stop_child(child)
    assert process_tree(child.pid) == set()  # gone


def test_a_process_that_exits_in_the_window_is_counted_as_exited():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    time.sleep(0.1)  # it exists when the probe starts
    probe = ForeignLoad("cpu", lambda: set())
    probe.start()
    child.wait(timeout=10)
    r = probe.stop()
    assert r["cpu"]["exited"] >= 1


STAT_BEFORE = """cpu  1000 10 500 8000 40 0 5 100 0 0
cpu0 500 5 250 4000 20 0 3 50 0 0
cpu1 500 5 250 4000 20 0 2 50 0 0
intr 123 0
"""
STAT_AFTER = """cpu  1150 10 560 8150 40 0 5 185 30 0
cpu0 575 5 280 4075 20 0 3 92 15 0
cpu1 575 5 280 4075 20 0 2 93 15 0
intr 456 0
"""


def test_proc_stat_parsing_reads_the_aggregate_cpu_line():
    cols = parse_proc_stat(STAT_BEFORE)
    assert cols["user"] == 1000 and cols["steal"] == 100 and cols["guest_nice"] == 0
    # An old kernel's line without steal/guest columns: they read 0.
    assert parse_proc_stat("cpu  1 2 3 4\n")["steal"] == 0
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        parse_proc_stat("cpu0 1 2 3 4\n")


def test_steal_is_the_steal_column_difference_in_seconds_and_as_a_share(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(STAT_BEFORE)
    probe = ForeignLoad("cpu", lambda: set(), proc_stat=stat)
    probe.start()
    stat.write_text(STAT_AFTER)
    r = probe.stop()
    tick = os.sysconf("SC_CLK_TCK")
    # Steal: 185 - 100 = 85 ticks; all ticks: user 150 + system 60 + idle 150 + steal 85 = 445
    # (guest's 30 ticks are already inside user, proc(5)).
    assert r["steal"]["steal_s"] == pytest.approx(85 / tick)
    assert r["steal"]["steal_share"] == pytest.approx(85 / 445)
    assert r["steal"]["ticks"] == 445
    assert any("hypervisor gave 19.1%" in w and "above 5%" in w for w in foreign_warnings(r))


def test_without_proc_stat_steal_is_unavailable_with_the_reason(tmp_path):
    r = ForeignLoad("cpu", lambda: set(), proc_stat=tmp_path / "missing")
    r.start()
    out = r.stop()
    assert "missing is not readable" in out["steal"]["unavailable"]
    assert "foreign_cpu_s" in out["cpu"]  # the CPU part does not depend on it


def test_stop_without_start_is_an_error():
    with pytest.raises(RuntimeError, match=r"stop\(\) before start\(\)"):
        ForeignLoad("cpu", lambda: set()).stop()


def test_start_and_stop_are_cheap():
    with ForeignLoad("cpu", lambda: {os.getpid()}) as probe:
        pass
    cost = probe.result["cost_s"]
    # Measured about 3-9 ms each on the 2-core machine (docs/profiling.md); 0.5 s catches a
    # probe that has become expensive without failing on a busy shared machine.
    assert 0 < cost["start"] < 0.5 and 0 < cost["stop"] < 0.5


def _result(**parts):
    base = {"device": "cpu", "window_s": 2.0,
            "cpu": {"foreign_cpu_s": 0.1, "foreign_cpu_cores": 0.05, "foreign_cpu_share": 0.025, "cores": 2, "top": []},
            "steal": {"steal_s": 0.0, "steal_share": 0.01}, "gpu": None}
    base.update(parts)
    return base


def test_warnings_only_above_the_thresholds_and_the_threshold_is_a_parameter():
    assert foreign_warnings(_result()) == []
    assert foreign_warnings(None) == []
    strict = ForeignThreshold(cpu_cores=0.01, steal_share=0.005)
    lines = foreign_warnings(_result(), threshold=strict)
    assert len(lines) == 2 and "above 0.01 of a core" in lines[0] and lines[1].endswith("above 0.5%")
    gpu = {"processes": [{"pid": 4242, "used_memory_bytes": 3 * 2**30}], "pids_comparable": True, "listed": 2}
    (line,) = foreign_warnings(_result(device="cuda:0", gpu=gpu))
    assert "1 other process(es) held compute contexts on cuda:0" in line and "pid 4242 3.0 GiB" in line


# --- the GPU part, with a fake NVML (the mechanism; untested on a real GPU) --------------------
def _fake_nvml(pids_and_memory):
    calls = {"shutdown": 0}

    def processes(handle):
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in pids_and_memory]

    def shutdown():
        calls["shutdown"] += 1

    fake = types.SimpleNamespace(nvmlDeviceGetComputeRunningProcesses=processes, nvmlShutdown=shutdown,
                                 NVMLLibraryMismatchError=type("NVMLLibraryMismatchError", (Exception,), {}))
    return fake, calls


def test_gpu_compute_processes_other_than_ours_are_foreign(monkeypatch, tmp_path):
    fake, calls = _fake_nvml([(os.getpid(), 2 * 2**30), (4242, 5 * 2**30), (4343, None)])
    monkeypatch.setattr(telemetry, "open_nvml", lambda device: (fake, "handle"))
    r = ForeignLoad("cuda:0", lambda: set(), proc_stat=tmp_path / "none").__enter__().stop()
    json.dumps(r)
    assert r["gpu"]["processes"] == [{"pid": 4242, "used_memory_bytes": 5 * 2**30},
                                     {"pid": 4343, "used_memory_bytes": None}]
    assert r["gpu"]["pids_comparable"] is True and calls["shutdown"] == 1
    (line,) = [w for w in foreign_warnings(r) if "compute contexts" in w]
    assert "2 other process(es)" in line and "pid 4242 5.0 GiB; pid 4343" in line


def test_gpu_pids_from_another_namespace_are_a_notice_and_only_extra_contexts_warn(monkeypatch):
    """In a container NVML's pids match none of ours: a notice (said once per run), not a
    warning, so --strict-isolation does not fail every case; a context beyond the worker's own
    is still foreign load, counted."""
    import torch

    from bench.instruments.foreign import foreign_notices

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # this process holds a context
    results = []
    for listed in ([(91234, 2 * 2**30)], [(91234, 2 * 2**30), (95555, 2**30)]):  # host pids: ours alone, then one more
        fake, _ = _fake_nvml(listed)
        monkeypatch.setattr(telemetry, "open_nvml", lambda device, fake=fake: (fake, "handle"))
        probe = ForeignLoad("cuda:0", lambda: set())
        probe.start()
        results.append(probe.stop())
    alone, shared = results
    assert alone["gpu"]["pids_comparable"] is False and shared["gpu"]["pids_comparable"] is False
    (notice,) = foreign_notices(alone)
    assert "PID namespace" in notice and foreign_notices(shared) == [notice]
    gpu_lines = [[w for w in foreign_warnings(r) if "compute contexts" in w] for r in (alone, shared)]
    assert gpu_lines[0] == []  # nothing but this worker on the device: nothing to warn of
    (line,) = gpu_lines[1]
    assert "NVML lists 2 compute contexts" in line and "1 other(s)" in line
    assert foreign_notices(_result()) == []


def test_a_notice_is_said_once_per_run(capsys):
    from bench.suite.runner import note_once

    notices: list[str] = []
    for _ in range(3):
        note_once(notices, ["the pids cannot be matched"])
    note_once(notices, ["another fact"])
    assert notices == ["the pids cannot be matched", "another fact"]
    assert capsys.readouterr().err.count("the pids cannot be matched") == 1


def test_gpu_without_nvml_is_unavailable_with_the_reason(monkeypatch):
    def no_nvml(device):
        raise telemetry.Unavailable(f"device {device} requested but CUDA is not available on this machine")

    monkeypatch.setattr(telemetry, "open_nvml", no_nvml)
    with ForeignLoad("cuda:1", lambda: set()) as probe:
        pass
    assert "CUDA is not available" in probe.result["gpu"]["unavailable"]
    assert "foreign_cpu_s" in probe.result["cpu"]
