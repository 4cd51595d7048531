"""tests/machine.py: an exclusive section waits for the running test on the other worker, and a
test does not start while an exclusive section runs (two real processes sharing the lock files)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

# A process that holds the machine the way a test or an exclusive section does, and logs when.
HOLDER = """
import contextlib, sys, time
from tests import machine
machine.setup(sys.argv[1])
what, hold, log = sys.argv[2], float(sys.argv[3]), sys.argv[4]
with machine.hold_shared():  # every test holds the machine shared; an exclusive section is inside one
    open(log, "a").write(f"{what} asking {time.time()}\\n")  # the next line blocks until it may start
    with machine.exclusive() if what == "exclusive" else contextlib.nullcontext():
        open(log, "a").write(f"{what} start {time.time()}\\n")
        time.sleep(hold)
        open(log, "a").write(f"{what} end {time.time()}\\n")
"""


def _start(run_id: str, what: str, hold: float, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, run_id, what, str(hold), str(log)], cwd=REPO)


def _events(log: Path) -> list[tuple[str, str, float]]:
    rows = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return sorted(((w, e, float(t)) for w, e, t in rows), key=lambda r: r[2])


def _wait_for(log: Path, event: tuple[str, str], timeout: float = 60.0) -> None:
    """Until the log has ``event``: a process's start-up takes seconds on a loaded CI machine, so
    the order of the steps below is made by the processes' own lines, not by sleeps."""
    deadline = time.monotonic() + timeout
    while (event not in [(w, e) for w, e, _ in _events(log)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert event in [(w, e) for w, e, _ in _events(log)], (event, _events(log))


def test_exclusive_waits_for_a_running_test_and_holds_off_the_next(tmp_path: Path) -> None:
    run_id = f"selftest-{tmp_path.name}-{time.time_ns()}"
    log = tmp_path / "log"
    first = _start(run_id, "shared", 1.5, log)  # a test already running on the other worker
    _wait_for(log, ("shared", "start"))
    excl = _start(run_id, "exclusive", 1.0, log)
    _wait_for(log, ("exclusive", "asking"))
    time.sleep(0.3)  # it is now blocked on the lock files (a few system calls after its line)
    late = _start(run_id, "shared", 0.1, log)  # a test that asks while the exclusive one waits
    for p in (first, excl, late):
        assert p.wait(timeout=60) == 0
    order = [(w, e) for w, e, _ in _events(log) if e != "asking"]
    # The exclusive section starts only after the running test ended, and the late test only
    # after the exclusive section ended (the turnstile: it does not slip in ahead).
    assert order == [("shared", "start"), ("shared", "end"), ("exclusive", "start"), ("exclusive", "end"),
                     ("shared", "start"), ("shared", "end")], order
