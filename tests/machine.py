"""Sharing the machine between pytest-xdist workers: most tests overlap, timing checks do not.

`tox -e test` runs the tests in 3 xdist workers (``-n 3 --dist loadfile``): most of the
suite's time is real runs that wait on their workers, so several at a time fill the 2 cores. A
check that judges one timing against another (the duet's A/A, two runs of the same code, the
suite's median against `torch.utils.benchmark`) must not share the machine with another
test's work, or it measures that work. Such a section runs inside `exclusive()`.

The protocol is a readers-writer lock on two files (``flock(2)``), shared by the workers of
one test run:

- every test holds ``main`` shared while it runs (`hold_shared`, from ``pytest_runtest_protocol``);
- `exclusive()` drops its own test's shared hold, takes the ``gate`` (so no new test starts
  its shared hold: a turnstile, which keeps a stream of short tests from starving it), then
  ``main`` exclusively, which waits for the test running on the other worker to finish;
  afterwards it gives both back and takes its shared hold again.

Without xdist (a plain ``pytest``), there is nobody to share with and both are no-ops.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator

_state: dict[str, object] = {"dir": None, "main": None}


def setup(run_id: str | None) -> None:
    """Called once per xdist worker with the test run's id (None: not under xdist)."""
    if run_id is None:
        return
    d = Path(tempfile.gettempdir()) / f"alexnet-tests-{run_id}"
    d.mkdir(exist_ok=True)
    _state["dir"] = d


def _open(name: str) -> int:
    return os.open(_state["dir"] / name, os.O_RDWR | os.O_CREAT, 0o600)  # type: ignore[operator]


def _shared_on() -> None:
    gate = _open("gate")
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)  # through the turnstile: waits while an exclusive section is pending
        fcntl.flock(gate, fcntl.LOCK_UN)
    finally:
        os.close(gate)
    fd = _open("main")
    fcntl.flock(fd, fcntl.LOCK_SH)
    _state["main"] = fd


def _shared_off() -> None:
    fd = _state["main"]
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)  # type: ignore[arg-type]
        os.close(fd)  # type: ignore[arg-type]
        _state["main"] = None


@contextlib.contextmanager
def hold_shared() -> Iterator[None]:
    """A test's own shared hold, for as long as it runs (setup, call and teardown)."""
    if _state["dir"] is None:
        yield
        return
    _shared_on()
    try:
        yield
    finally:
        _shared_off()


@contextlib.contextmanager
def exclusive(*, all_cores: bool = False) -> Iterator[None]:
    """Run the block with no other test running on the machine.

    ``all_cores``: the processes the block starts get one intra-op thread per core this process
    may run on (``OMP_NUM_THREADS``, put back afterwards), instead of the one thread a test's
    share of the machine gets (tests/conftest.py): with the machine to itself, a block that
    starts real runs would otherwise leave a core idle while every other test waits for it.
    Only what the block starts sees it; this process's own torch keeps its threads. Not for runs
    judged on pace-normalised rounds (`compare` of two single runs): a two-thread pace GEMM
    slows by up to x1.5 when anything touches the second core, where a tiny case's step barely
    notices, so the pace stops tracking the step. The duet judges adjacent rounds without the
    pace, and its A/A uses it."""
    if _state["dir"] is None:
        with _threads(all_cores):
            yield
        return
    had = _state["main"] is not None
    _shared_off()
    gate, fd = _open("gate"), _open("main")
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with _threads(all_cores):
            yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.flock(gate, fcntl.LOCK_UN)
        os.close(fd)
        os.close(gate)
        if had:
            _shared_on()


@contextlib.contextmanager
def _threads(all_cores: bool) -> Iterator[None]:
    if not all_cores:
        yield
        return
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before
