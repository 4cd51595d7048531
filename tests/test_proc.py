"""The process toolkit (bench/workers/proc.py), on real processes: trees killed whole, exits
described, a child's time limit, failures classified, and no torch or psutil at import."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.workers import proc as P
from tests.conftest import REPO

PY = sys.executable


def _gone(pid: int) -> bool:
    """True when ``pid`` has ended (no process, or a zombie waiting for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _gone(pid)


def _family_script(pidfile: Path, *, ignore_term: bool = False) -> str:
    """A parent with a grandchild in its process group (a) and one that left it (b, a session
    of its own, as torchrun's workers do); it writes "a b" to ``pidfile`` and sleeps."""
    return textwrap.dedent(f"""
        import signal, subprocess, sys, time
        if {ignore_term!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        open({str(pidfile)!r}, "w").write(f"{{a.pid}} {{b.pid}}")
        time.sleep(120)
    """)


def _start_family(tmp_path: Path, **kw) -> tuple[subprocess.Popen, list[int]]:
    pidfile = tmp_path / "pids"
    proc = subprocess.Popen([PY, "-c", _family_script(pidfile, **kw)], start_new_session=True)
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and len(pidfile.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the test's processes did not start"
        assert proc.poll() is None, proc.returncode
        time.sleep(0.05)
    return proc, [int(p) for p in pidfile.read_text().split()]


@pytest.fixture(params=["psutil", "proc"])
def backend(request, monkeypatch) -> str:
    """Both ways of walking the tree: psutil, and /proc as where psutil is not installed."""
    if request.param == "proc":
        monkeypatch.setattr(P, "_psutil", lambda: None)
    return request.param


def test_kill_tree_kills_the_group_and_the_descendant_that_left_it(tmp_path: Path, backend: str) -> None:
    proc, (in_group, left_group) = _start_family(tmp_path)
    assert sorted(P.descendants(proc.pid)) == sorted([in_group, left_group])
    assert not _gone(in_group) and not _gone(left_group)
    P.kill_tree(proc)
    assert proc.returncode == -signal.SIGKILL
    for pid in (in_group, left_group):
        assert _wait_gone(pid), f"process {pid} outlived kill_tree ({backend})"


def test_kill_tree_with_grace_terms_first_then_kills_a_root_that_ignores_it(tmp_path: Path) -> None:
    proc, kids = _start_family(tmp_path, ignore_term=True)
    t0 = time.monotonic()
    P.kill_tree(proc, grace_s=1.0)
    took = time.monotonic() - t0
    assert 1.0 <= took < 10, took  # waited out the grace, then SIGKILL
    assert proc.returncode == -signal.SIGKILL
    assert all(_wait_gone(p) for p in kids)


def test_kill_tree_does_not_wait_out_the_grace_when_the_tree_stops(tmp_path: Path) -> None:
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"], start_new_session=True)
    time.sleep(0.3)
    t0 = time.monotonic()
    P.kill_tree(proc, grace_s=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == -signal.SIGTERM


def test_describe_exit_names_the_signal_or_the_code() -> None:
    assert P.describe_exit(-9) == "killed by SIGKILL (signal 9)"
    assert P.describe_exit(None, signal.SIGTERM) == "killed by SIGTERM (signal 15)"
    assert P.describe_exit(3) == "ended with exit status 3"
    assert P.describe_exit(0) == "ended with exit status 0"
    assert P.describe_exit(None) == "ended, exit status unknown"
    assert "out-of-memory killer" in P.describe_exit(-9, oom_note=True)
    assert "out-of-memory killer" not in P.describe_exit(-15, oom_note=True)
    assert P.signal_name(77) == "signal 77"  # no name in Python's enum: no ValueError either


def test_describe_exit_of_real_processes() -> None:
    killed = subprocess.run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert P.describe_exit(killed.returncode) == "killed by SIGKILL (signal 9)"
    exited = subprocess.run([PY, "-c", "raise SystemExit(3)"])
    assert P.describe_exit(exited.returncode) == "ended with exit status 3"


def test_run_limited_kills_a_child_that_overruns_with_its_tree(tmp_path: Path, backend: str) -> None:
    pidfile = tmp_path / "pids"
    t0 = time.monotonic()
    # The family script imports no torch: it has written its pids well within 1.5 s.
    done = P.run_limited([PY, "-c", _family_script(pidfile)], timeout_s=1.5, capture=True)
    took = time.monotonic() - t0
    assert done.timed_out and 1.5 <= took < 1.5 + 10, took
    assert done.returncode == -signal.SIGKILL and done.signal == signal.SIGKILL
    assert "ran past its time limit" in done.describe()
    for pid in map(int, pidfile.read_text().split()):
        assert _wait_gone(pid), f"process {pid} outlived its time limit ({backend})"


def test_run_limited_returns_output_and_status_within_the_limit(tmp_path: Path) -> None:
    code = "import sys; data = sys.stdin.read(); print(data.upper()); print('err', file=sys.stderr); sys.exit(4)"
    done = P.run_limited([PY, "-c", code], timeout_s=60, input="hello", capture=True)
    assert not done.timed_out and done.returncode == 4 and done.signal is None
    assert done.stdout.strip() == "HELLO" and done.stderr.strip() == "err"
    assert done.describe() == "ended with exit status 4"
    with open(tmp_path / "log", "w") as fh:
        assert P.run_limited([PY, "-c", "print(42)"], timeout_s=60, stdout=fh, stderr=subprocess.STDOUT).returncode == 0
    assert (tmp_path / "log").read_text().strip() == "42"
    with pytest.raises(ValueError, match="time limit 0 is not valid"):
        P.run_limited([PY, "-c", "pass"], timeout_s=0)


def test_run_limited_kills_what_a_finished_child_left_in_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))")
    assert P.run_limited([PY, "-c", code], timeout_s=60).returncode == 0
    assert _wait_gone(int(pidfile.read_text()))


@pytest.mark.parametrize(("message", "kind"), [
    ("CUDA error: an illegal memory access was encountered", "fatal"),
    ("CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes", "oom"),
    ("Expected canUse32BitIndexMath(input) to be true, but got false.", "error"),
])
def test_classify_failure(message: str, kind: str) -> None:
    assert P.classify_failure(RuntimeError(message)) == kind


def test_looks_like_oom_reads_a_dead_process_output() -> None:
    assert P.looks_like_oom("MemoryError")
    assert P.looks_like_oom("RuntimeError: DefaultCPUAllocator: can't allocate")
    assert not P.looks_like_oom("RuntimeError: shapes do not match")


def test_the_toolkit_imports_neither_torch_nor_psutil() -> None:
    code = ("import sys; import bench.workers.proc as p; assert not p.is_oom(RuntimeError('x')); "
            "print('torch' in sys.modules, 'psutil' in sys.modules)")
    out = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_run_limited_sends_the_grace_signal_at_its_limit_and_the_child_may_finish(tmp_path: Path) -> None:
    """gpu-check stops its suite run with SIGINT (pytest then saves what it measured): past the
    limit the grace signal goes first, and a child that handles it and exits is not killed."""
    code = ("import signal, sys, time\n"
            "def stop(s, f):\n    open(sys.argv[1], 'w').write(signal.Signals(s).name); sys.exit(7)\n"
            "signal.signal(signal.SIGINT, stop)\ntime.sleep(60)\n")
    t0 = time.monotonic()
    done = P.run_limited([PY, "-c", code, str(tmp_path / "got")], timeout_s=1.0, grace_s=10.0,
                         grace_signal=signal.SIGINT)
    assert done.timed_out and done.returncode == 7 and time.monotonic() - t0 < 8
    assert (tmp_path / "got").read_text() == "SIGINT"

