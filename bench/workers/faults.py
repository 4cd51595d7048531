"""Test-only fault hooks: make real workers die, hang, leak or answer slowly, and max-batch tries fail.

They exist so the tests can show, on real processes, what the suite and ``alexnet-bench
max-batch`` do when a process dies, hangs or fails (tests/test_isolation.py,
tests/test_bench_max_batch.py). **They do nothing unless ``ALEXNET_BENCH_TEST_FAULTS=1`` is set**
in the environment of the run; the variables below are read only then (docs/bench.md, "Test-only
fault hooks"):

- ``ALEXNET_BENCH_TEST_FAULT``: a JSON object mapping a substring of a case id to an action
  taken by that case's worker at the start of its timed rounds: ``"kill"`` (the worker SIGKILLs
  itself), ``"hang"`` (it sleeps forever, with a child in its process group that sleeps too),
  ``"exit"`` (``os._exit(3)``), ``"leak"`` (a module-level global is set and 500 MB allocated
  and kept). With it set, every case's build reports ``test_leak_seen``: whether its worker
  saw such a global (saved as ``isolation.test_leak_seen``).
- ``ALEXNET_BENCH_TEST_PIDFILE``: with ``"hang"``, the process first writes its pid there, so a
  test can kill it from outside, then its child's pid to the same path with ``.child`` added.
- ``ALEXNET_BENCH_TEST_REPLY_DELAY_S``: the worker waits that long before replying to each
  ``rounds`` request (the round trip must stay out of the saved rounds).
- ``ALEXNET_BENCH_TEST_ZYGOTE_PIDFILE``: every zygote appends its pid to that file as it starts,
  before it imports anything, so that a test can kill one from outside while it starts.
- ``ALEXNET_BENCH_TEST_ZYGOTE_DIE_ON_FORK``: a zygote asked to fork a worker whose tag contains
  this string SIGKILLs itself instead (a zygote that dies during a fork).
- The case action ``"killzygote"`` (in ``ALEXNET_BENCH_TEST_FAULT``): the case's worker
  SIGKILLs the zygote that forked it, then carries on with its case.
- ``ALEXNET_BENCH_TEST_MAX_BATCH_FAULT="ACTION:N"``: every max-batch try at a batch above N fails
  in its child process before it runs anything: ``raise`` raises the RuntimeError PyTorch gives
  for an int32 index overflow, ``fatal`` a sticky CUDA error's message, ``kill`` makes the child
  SIGKILL itself, ``hang`` makes it sleep (with a child in its process group) until its time
  limit kills it.

Torch-free; nothing here runs unless the hooks are enabled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

__all__ = [
    "CASE_FAULT_ENV", "ENABLE_ENV", "MAX_BATCH_FAULT_ENV", "PIDFILE_ENV", "REPLY_DELAY_ENV", "ZYGOTE_DIE_ON_FORK_ENV",
    "ZYGOTE_PIDFILE_ENV", "apply_case_fault", "case_fault", "enabled", "leak_seen", "max_batch_fault", "reply_delay_s",
    "zygote_fork_fault", "zygote_started",
]

ENABLE_ENV = "ALEXNET_BENCH_TEST_FAULTS"
CASE_FAULT_ENV = "ALEXNET_BENCH_TEST_FAULT"
PIDFILE_ENV = "ALEXNET_BENCH_TEST_PIDFILE"
REPLY_DELAY_ENV = "ALEXNET_BENCH_TEST_REPLY_DELAY_S"
MAX_BATCH_FAULT_ENV = "ALEXNET_BENCH_TEST_MAX_BATCH_FAULT"
ZYGOTE_PIDFILE_ENV = "ALEXNET_BENCH_TEST_ZYGOTE_PIDFILE"
ZYGOTE_DIE_ON_FORK_ENV = "ALEXNET_BENCH_TEST_ZYGOTE_DIE_ON_FORK"
LEAK_BYTES = 500 * 2**20
CASE_ACTIONS = ("kill", "hang", "exit", "leak", "killzygote")
MAX_BATCH_ACTIONS = ("raise", "fatal", "kill", "hang")

# Set by the "leak" action: a later case in the same process would see it.
_TEST_LEAK: bytearray | None = None


def enabled() -> bool:
    """Whether the hooks are on: ``ALEXNET_BENCH_TEST_FAULTS=1``, and nothing else, turns them on."""
    return os.environ.get(ENABLE_ENV) == "1"


def case_fault(case_id: str) -> str | None:
    """The action for this case (``ALEXNET_BENCH_TEST_FAULT``), or None."""
    spec = os.environ.get(CASE_FAULT_ENV) if enabled() else None
    if not spec:
        return None
    for needle, action in json.loads(spec).items():
        if needle in case_id:
            if action not in CASE_ACTIONS:
                raise ValueError(f"{CASE_FAULT_ENV} action {action!r} is not valid; use {', '.join(CASE_ACTIONS)}")
            return action
    return None


def _hang() -> None:
    """Sleep forever, with a child in this process group: a kill must reach both."""
    pidfile = os.environ.get(PIDFILE_ENV)
    if pidfile:
        with open(pidfile, "w") as fh:
            fh.write(str(os.getpid()))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    if pidfile:
        with open(pidfile + ".child", "w") as fh:
            fh.write(str(child.pid))
    while True:
        time.sleep(3600)


def apply_case_fault(action: str) -> None:
    """Take ``action`` (a `case_fault`) in this worker."""
    global _TEST_LEAK
    if not enabled():
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(3)
    elif action == "hang":
        _hang()
    elif action == "killzygote":
        os.kill(os.getppid(), signal.SIGKILL)
    elif action == "leak":
        _TEST_LEAK = bytearray(LEAK_BYTES)
        _TEST_LEAK[:: 4096] = b"x" * len(range(0, LEAK_BYTES, 4096))  # touch every page: real RSS


def leak_seen() -> bool | None:
    """Whether this process holds a "leak" action's global; None unless case faults are set."""
    if not (enabled() and os.environ.get(CASE_FAULT_ENV)):
        return None
    return _TEST_LEAK is not None


def reply_delay_s(op: str) -> float:
    """Seconds to wait before replying to ``op`` (``ALEXNET_BENCH_TEST_REPLY_DELAY_S``, ``rounds`` only)."""
    if op != "rounds" or not enabled() or not os.environ.get(REPLY_DELAY_ENV):
        return 0.0
    return float(os.environ[REPLY_DELAY_ENV])


def max_batch_fault(batch: int) -> None:
    """In a max-batch try's child: fail as ``ALEXNET_BENCH_TEST_MAX_BATCH_FAULT`` says, above its batch."""
    spec = os.environ.get(MAX_BATCH_FAULT_ENV) if enabled() else None
    if not spec:
        return
    action, _, above = spec.partition(":")
    if action not in MAX_BATCH_ACTIONS or not above.isdigit():
        raise ValueError(f"{MAX_BATCH_FAULT_ENV}={spec!r} is not valid; use ACTION:N with ACTION one of "
                         f"{', '.join(MAX_BATCH_ACTIONS)}")
    if batch <= int(above):
        return
    if action == "raise":
        raise RuntimeError(f"test fault at batch {batch}: Expected canUse32BitIndexMath(input) to be true, but got false")
    if action == "fatal":
        raise RuntimeError("test fault: CUDA error: an illegal memory access was encountered")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":
        _hang()


def zygote_started() -> None:
    """In a zygote, first thing: append its pid to ``ALEXNET_BENCH_TEST_ZYGOTE_PIDFILE``."""
    path = os.environ.get(ZYGOTE_PIDFILE_ENV) if enabled() else None
    if path:
        with open(path, "a") as fh:
            fh.write(f"{os.getpid()}\n")


def zygote_fork_fault(tag: str) -> None:
    """In a zygote asked to fork a worker tagged ``tag``: die if ``ALEXNET_BENCH_TEST_ZYGOTE_DIE_ON_FORK`` says so."""
    needle = os.environ.get(ZYGOTE_DIE_ON_FORK_ENV) if enabled() else None
    if needle and needle in tag:
        os.kill(os.getpid(), signal.SIGKILL)
