"""Every case in its own worker process (bench/suite/runner.py, bench/workers/launcher.py, bench/workers/worker.py).

Real runs of the suite, as a user starts them, with the documented test-only fault hooks of
`bench.workers.faults` to kill, hang, leak and slow real workers (enabled by `FAULTS_ON`).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

TINY_INFERENCE = "inference-d2l-b2-65x65-fp32-cpu"
TINY_CL = "inference-d2l-b2-65x65-fp32-cl-cpu"
TINY_TRAIN = "train-d2l-b2-65x65-fp32-cpu"
# The fault hooks do nothing without it (bench/workers/faults.py).
FAULTS_ON = {"ALEXNET_BENCH_TEST_FAULTS": "1"}


def _bench(*args: str, storage: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", "-rs",
         f"--benchmark-storage=file://{storage}", "--benchmark-save=iso", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def _run(storage: Path) -> dict:
    files = sorted(storage.glob("*/*_iso.json"))
    assert len(files) == 1, list(storage.rglob("*"))
    return json.loads(files[0].read_text())


def _group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (from /proc/PID/stat, field 5)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def leak_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    """The tiny preset, its first case leaking a global and 500 MB, and every rounds reply delayed 1 s."""
    storage = tmp_path_factory.mktemp("leak")
    proc = _bench("--preset", "tiny", storage=storage,
                  env={**FAULTS_ON, "ALEXNET_BENCH_TEST_FAULT": json.dumps({TINY_TRAIN: "leak"}),
                       "ALEXNET_BENCH_TEST_REPLY_DELAY_S": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, _run(storage)


@pytest.mark.slow
def test_every_case_runs_in_its_own_worker_and_the_step_sees_that_pid(leak_run) -> None:
    _, run = leak_run
    benches = run["benchmarks"]
    assert len(benches) == 3
    iso = [b["extra_info"]["isolation"] for b in benches]
    assert all(i["mode"] == "process" for i in iso)
    pids = [i["worker_pid"] for i in iso]
    assert len(set(pids)) == 3, "a different worker for every case"
    assert all(i["step_pid"] == i["worker_pid"] for i in iso), "the step itself ran in the recorded worker"
    assert all(0 < i["worker_start_s"] < 30 for i in iso)
    assert all(i["cuda_initialized_before_build"] is False for i in iso)


@pytest.mark.slow
def test_a_case_leaves_nothing_behind_for_the_next(leak_run) -> None:
    """The first case sets a module-level global and keeps 500 MB; the next cases see neither."""
    _, run = leak_run
    by_case = {b["extra_info"]["case_id"]: b["extra_info"] for b in run["benchmarks"]}
    first = by_case[TINY_TRAIN]
    assert run["benchmarks"][0]["extra_info"]["case_id"] == TINY_TRAIN  # it ran first
    # It did leak: its own peak during the rounds includes the 500 MB.
    assert first["peak_memory_bytes"] - first["idle_rss_bytes"] > 450 * 2**20
    for case in (TINY_INFERENCE, TINY_CL):
        e = by_case[case]
        assert e["isolation"]["test_leak_seen"] is False
        assert e["idle_rss_bytes"] < first["idle_rss_bytes"] + 200 * 2**20
        assert e["memory_rise_bytes"] < 200 * 2**20


@pytest.mark.slow
def test_the_round_trip_stays_out_of_the_saved_rounds(leak_run) -> None:
    """Every rounds reply was delayed 1 s; the saved rounds are the worker's own timings."""
    _, run = leak_run
    for b in run["benchmarks"]:
        data = b["stats"]["data"]
        assert len(data) == run["alexnet"]["rounds"]
        assert max(data) < 1.0, data  # a tiny step is ~0.01-0.3 s here; a leaked delay adds >= 1 s
        assert b["extra_info"]["step_time_s"] == pytest.approx(statistics.median(data))
        assert b["options"]["timer"] == "replay_clock"


@pytest.mark.slow
def test_a_worker_killed_from_outside_costs_its_case_only(tmp_path: Path) -> None:
    storage = tmp_path / "s"
    pidfile = tmp_path / "worker.pid"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not pidfile.exists():
            time.sleep(0.1)
        time.sleep(0.3)
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGKILL)  # from outside, mid-case (it is in its rounds)
        killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    proc = _bench("--preset", "tiny", storage=storage,
                  env={**FAULTS_ON, "ALEXNET_BENCH_TEST_FAULT": json.dumps({TINY_INFERENCE: "hang"}),
                       "ALEXNET_BENCH_TEST_PIDFILE": str(pidfile)})
    t.join(5)
    assert killed, "the worker never reached its rounds"
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "1 failed, 2 passed" in proc.stdout
    run = _run(storage)
    assert sorted(b["extra_info"]["case_id"] for b in run["benchmarks"]) == sorted([TINY_TRAIN, TINY_CL])
    [failed] = run["alexnet"]["failed"]
    assert failed["case_id"] == TINY_INFERENCE and failed["worker_pid"] == killed[0]
    assert failed["signal"] == signal.SIGKILL and failed["signal_name"] == "SIGKILL"
    assert "killed by SIGKILL" in failed["reason"]
    assert "stderr_tail" in failed
    assert not _group_members(killed[0]), "the hung worker's child must not outlive it"


@pytest.mark.slow
def test_a_zygote_killed_while_starting_during_a_case_or_while_forking_loses_no_case(tmp_path: Path) -> None:
    """The zygote is killed three ways in one tiny run; every selected case is accounted for.

    1. The first zygote is killed from outside while it starts (importing torch): the first
       case (train) gets no worker and is recorded as failed, with the zygote's pid and signal.
    2. The second zygote is killed by the inference case's own worker during its rounds: that
       case still finishes and is saved; the next case finds the zygote dead between cases.
    3. The third zygote dies when asked to fork the channels_last case's worker: recorded.
    The run-level probe then gets a fourth zygote, and the run is saved.
    """
    storage = tmp_path / "s"
    zpids = tmp_path / "zygotes"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (zpids.exists() and zpids.read_text().strip()):
            time.sleep(0.02)
        pid = int(zpids.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)  # mid-import: it has not reported ready yet
        killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    proc = _bench("--preset", "tiny", storage=storage,
                  env={**FAULTS_ON, "ALEXNET_BENCH_TEST_ZYGOTE_PIDFILE": str(zpids),
                       "ALEXNET_BENCH_TEST_FAULT": json.dumps({TINY_INFERENCE: "killzygote"}),
                       "ALEXNET_BENCH_TEST_ZYGOTE_DIE_ON_FORK": TINY_CL})
    t.join(5)
    assert killed, "the first zygote never started"
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    zygotes = [int(x) for x in zpids.read_text().split()]
    assert len(zygotes) == 4 and len(set(zygotes)) == 4, zygotes
    run = _run(storage)
    assert [b["extra_info"]["case_id"] for b in run["benchmarks"]] == [TINY_INFERENCE]
    failed = {f["case_id"]: f for f in run["alexnet"]["failed"]}
    assert sorted(failed) == sorted([TINY_TRAIN, TINY_CL])
    assert all(f["extra"] == {"process": "zygote"} for f in failed.values())
    first = failed[TINY_TRAIN]
    assert first["worker_pid"] == killed[0] and first["signal_name"] == "SIGKILL", first
    assert "did not start" in first["reason"]
    third = failed[TINY_CL]
    assert third["worker_pid"] == zygotes[2] and "while forking a worker" in third["reason"], third
    assert "probe_failed" not in run["machine_info"] and run["machine_info"]["torch_version"]
    assert not any(_group_members(pid) for pid in zygotes), "no zygote's process group outlives the run"


@pytest.mark.slow
def test_a_hanging_worker_is_stopped_by_the_case_timeout(tmp_path: Path) -> None:
    storage = tmp_path / "s"
    t0 = time.monotonic()
    # The limit starts once the worker is forked from the zygote (torch already imported,
    # bench/suite/runner.py CaseRunner.worker); the tiny case reaches its rounds, where it hangs,
    # well within 4 s.
    proc = _bench("--preset", "tiny", "-k", TINY_INFERENCE + "]", "--case-timeout", "4", storage=storage,
                  env={**FAULTS_ON, "ALEXNET_BENCH_TEST_FAULT": json.dumps({TINY_INFERENCE: "hang"})})
    took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert took < 120
    assert "time limit" in proc.stdout
    # Nothing measured: pytest-benchmark saves no file; the failure is on the console.
    assert not list(storage.glob("*/*.json"))
    pid = int(proc.stdout.split("worker_pid=")[1].split(")")[0])
    assert not _group_members(pid), "no process of the killed worker's group is left"


@pytest.mark.slow
def test_isolation_none_runs_in_process_and_says_so(tmp_path: Path) -> None:
    storage = tmp_path / "s"
    proc = _bench("--preset", "tiny", "-k", TINY_INFERENCE + "]", "--isolation", "none", storage=storage)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [b] = _run(storage)["benchmarks"]
    assert b["extra_info"]["isolation"]["mode"] == "none"


def test_bad_isolation_options_are_usage_errors(tmp_path: Path, bench_inline) -> None:
    for args, needle in ((["--isolation", "thread"], "choose from process, none"),
                         (["--case-timeout", "0"], "--case-timeout"),
                         (["--telemetry-seconds", "-1"], "--telemetry-seconds")):
        proc = bench_inline("--preset", "tiny", *args, f"--benchmark-storage=file://{tmp_path / 's'}")
        assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
        assert needle in proc.stderr


@pytest.mark.slow
def test_deterministic_case_env_is_set_in_the_worker_before_torch_touches_a_device(tmp_path: Path) -> None:
    """CUBLAS_WORKSPACE_CONFIG and fresh compile cache dirs are in the worker's environment
    at build time, before any device work (cuBLAS reads the variable once, at the first GEMM)."""
    from alexnet.config import RunConfig
    from bench.workers.launcher import Zygote
    from bench.suite.runner import case_env

    cfg = RunConfig(mode="inference", batch_size=2, resolution=(65, 65), device="cpu", deterministic=True)
    env = case_env(cfg, str(tmp_path / "cache"))
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert env["TORCHINDUCTOR_CACHE_DIR"] != env["TRITON_CACHE_DIR"]
    with Zygote(cwd=REPO, pythonpath=[str(REPO)]) as z:
        w = z.fork(tag="det", env=env)
        built = w.request("build", timeout=120, config=cfg.flat(), options={"warmup": 1, "telemetry_interval_s": None})
        # The kernel's OOM killer takes the worker, not the suite (proc(5): -1000..1000).
        assert Path(f"/proc/{w.pid}/oom_score_adj").read_text().strip() == "1000"
        w.close()
        assert w.pid != os.getpid() and built["worker_pid"] == w.pid
    assert built["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert built["env"]["TORCHINDUCTOR_CACHE_DIR"] == env["TORCHINDUCTOR_CACHE_DIR"]
    assert built["cuda_initialized_before_build"] is False


@pytest.mark.slow
def test_cpu_memory_rise_is_the_cases_own(tmp_path: Path) -> None:
    """Batch 16 at 96x96: its rise over the idle worker agrees within 15% alone and after batch 32
    (126.6 and 126.7 MiB here; batch 32 rose 146 MiB)."""
    common = ("--preset", "tiny", "--modes", "train", "--resolutions", "96", "--rounds", "10", "--warmup-rounds", "1",
              "-k", "fp32-cpu]")
    alone = _bench(*common, "--batch-sizes", "16", storage=tmp_path / "alone")
    after = _bench(*common, "--batch-sizes", "32,16", storage=tmp_path / "after")
    assert alone.returncode == 0 and after.returncode == 0, alone.stdout[-2000:] + after.stdout[-2000:]
    rise_alone = {b["extra_info"]["config"]["batch_size"]: b["extra_info"]["memory_rise_bytes"]
                  for b in _run(tmp_path / "alone")["benchmarks"]}
    after_run = _run(tmp_path / "after")["benchmarks"]
    assert [b["extra_info"]["config"]["batch_size"] for b in after_run] == [32, 16]
    rise_after = {b["extra_info"]["config"]["batch_size"]: b["extra_info"]["memory_rise_bytes"] for b in after_run}
    assert rise_after[32] > rise_after[16]
    assert rise_after[16] == pytest.approx(rise_alone[16], rel=0.15), (rise_alone, rise_after)


def test_cuda_skips_are_decided_from_worker_facts_without_touching_the_device() -> None:
    """The coordinator decides CUDA skips from facts a worker gathered (it never initialises CUDA);
    torchvision + deterministic + train on CUDA is skipped: adaptive_avg_pool2d_backward_cuda has
    no deterministic implementation."""
    import torch

    from alexnet.config import RunConfig
    from alexnet.runtime import unsupported_reason

    facts = {"available": True, "count": 1, "devices": [{"index": 0, "name": "NVIDIA H200", "bf16": True}]}
    tv = RunConfig(variant="torchvision", mode="train", deterministic=True, device="cuda", batch_size=2,
                   resolution=(65, 65))
    assert "adaptive_avg_pool2d_backward_cuda" in unsupported_reason(tv, cuda_facts=facts)
    assert unsupported_reason(tv.replace(mode="inference"), cuda_facts=facts) is None
    assert unsupported_reason(tv.replace(variant="d2l"), cuda_facts=facts) is None
    assert "only 1 GPU" in unsupported_reason(tv.replace(variant="d2l", device="cuda:1"), cuda_facts=facts)
    old = {**facts, "devices": [{"index": 0, "name": "Tesla V100", "bf16": False}]}
    assert "no bf16 support" in unsupported_reason(tv.replace(variant="d2l", amp="bf16"), cuda_facts=old)
    assert "not available" in unsupported_reason(tv.replace(variant="d2l"), cuda_facts={"count": 0, "devices": []})
    assert not torch.cuda.is_initialized()


@pytest.mark.slow
def test_import_time_settings_belong_to_the_zygote_and_a_change_starts_a_fresh_one(tmp_path: Path) -> None:
    """OMP_NUM_THREADS is read when torch starts its thread pool: a worker inherits its zygote's
    value, so a case that needs another value gets a fresh zygote (bench.workers.launcher.ZygotePool)."""
    from bench.workers.launcher import ZygotePool

    pool = ZygotePool(cwd=REPO, pythonpath=[str(REPO)])
    try:
        seen = []
        for threads in ("1", "2", "2"):
            w = pool.get({"OMP_NUM_THREADS": threads, "HOME": "ignored"}).fork(tag=f"t{threads}")
            seen.append(w.request("probe", timeout=120)["machine_info"]["torch_num_threads"])
            w.close()
        assert seen == [1, 2, 2]
        assert pool.starts == 2  # a fresh zygote for the change, the same one for the same value
    finally:
        pool.close()
