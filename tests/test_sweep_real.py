"""A real sweep of the tiny preset in 2 shards: submitted as a Slurm array to a one-node cluster started
here (munged, slurmctld, slurmd on localhost, in a temp folder), or, where Slurm cannot be installed or
started, run shard by shard on this machine; then merged and reported. docs/sweeps.md.

One test, so that CI pays for one sweep (two shards of 1-2 tiny cases: about 40 s on the 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.workers.proc import kill_tree

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "bench"]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _slurm_conf(folder: Path, host: str) -> str:
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    node = " ".join(w for w in node.split() if not w.startswith(("NodeName=", "UpTime=")))
    return "\n".join([
        "ClusterName=local", f"SlurmctldHost={host}", "SlurmUser=root", "AuthType=auth/munge",
        f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "MpiDefault=none", "ReturnToService=2",
        f"NodeName={host} {node} NodeAddr=127.0.0.1 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm cluster on localhost: the environment for its clients, or the reason there is none.
    Every daemon started here is stopped by its pid at teardown, whatever the test did."""
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(t) is None]
    if missing:
        yield None, f"Slurm is not installed ({', '.join(missing)} missing; .ci/run installs it)"
        return
    if os.geteuid() != 0:
        yield None, "the local Slurm cluster needs root (slurmd runs jobs as their user)"
        return
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, host))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pids: list[int] = []
    munge_pid = Path("/run/munge/munged.pid")  # the munge user cannot reach pytest's temp folder (0700)
    try:
        subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge"], check=True, timeout=30)
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"],
                       check=True, timeout=30, capture_output=True)
        pids.append(_pid(munge_pid))
        subprocess.run(["slurmctld", "-i"], env=env, check=True, timeout=30)
        subprocess.run(["slurmd"], env=env, check=True, timeout=30)
        for _ in range(100):
            for name in ("slurmctld", "slurmd"):
                p = _pid(folder / f"{name}.pid")
                if p and p not in pids:
                    pids.append(p)
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30)
            if out.stdout.strip() == "idle":
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the node is not idle: {out.stdout.strip() or out.stderr.strip()}")
        yield env, None
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        yield None, f"the local Slurm cluster did not start: {str(exc).splitlines()[0]}"
    finally:  # the pid files again: a daemon may have written its own after the node went idle
        pids += [_pid(folder / f"{name}.pid") for name in ("slurmctld", "slurmd")]
        for pid in reversed(list(dict.fromkeys(p for p in pids if p))):
            kill_tree(pid, group=False, grace_s=5.0)  # daemons: each its own pid, not a group leader


def _wait_for_array(job: str, env: dict, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and not out.stdout.strip():
            return
        time.sleep(1)
    raise AssertionError(f"the array job {job} did not finish in {timeout:.0f} s")


@pytest.mark.slow
def test_tiny_sweep_in_two_shards_merged_and_reported(slurm, tmp_path):
    env, why_not = slurm
    plan, sweep, merged = tmp_path / "plan.json", tmp_path / "sweep", tmp_path / "merged"
    r = _cli("sweep", "plan", "--preset", "tiny", "--devices", "cpu", "--shards", "2", "--out", str(plan))
    assert r.returncode == 0, r.stderr
    doc = json.loads(plan.read_text())
    if env is not None:  # the Slurm path: one sbatch --array, each task one shard
        r = subprocess.run([*CLI, "sweep", "submit", str(plan), "--slurm", "--storage", str(sweep), "--time", "600"],
                           cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        job = r.stdout.split("submitted job ")[1].split(":")[0]
        _wait_for_array(job, env, 240)
        logs = "\n".join(p.read_text() for p in sorted((sweep / "slurm").glob("*.out")))
    else:  # no engine: the shards one after another
        print(f"local path: {why_not}")
        logs = ""
        for k in range(2):
            r = _cli("sweep", "run", str(plan), "--shard", str(k), "--storage", str(sweep))
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    st = _cli("sweep", "status", str(sweep), "--json")
    rows = json.loads(st.stdout)
    assert [row["state"] for row in rows] == ["done", "done"], (rows, logs[-3000:])
    r = _cli("sweep", "merge", str(sweep), "--out", str(merged))
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = merged.glob("*/*.json")
    saved = json.loads(run.read_text())
    ids = [b["extra_info"]["case_id"] for b in saved["benchmarks"]]
    assert sorted(ids) == sorted(c["case_id"] for c in doc["cases"]) and len(ids) == len(set(ids))
    assert {b["extra_info"]["sweep"]["shard"] for b in saved["benchmarks"]} == {0, 1}
    assert saved["alexnet"]["preset"] == "tiny" and len(saved["alexnet"]["sweep"]["shards"]) == 2
    # A shard with nothing left exits 0 and says so (resume matches the code: on a tree being edited
    # meanwhile, its uncommitted diff differs and the shard rightly runs again; CI's tree is clean).
    from bench.sweep.shard import code_state

    if not code_state(REPO)["dirty"]:
        again = _cli("sweep", "run", str(plan), "--shard", "1", "--storage", str(sweep), "--resume")
        assert again.returncode == 0 and "nothing left to run" in again.stdout, again.stdout + again.stderr
    rep = _cli("report", str(run), "--out", str(tmp_path / "report"))
    assert rep.returncode == 0 and (tmp_path / "report" / "index.html").is_file(), rep.stderr
