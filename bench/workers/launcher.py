"""The coordinator's side of the case workers: start a zygote, fork workers, talk, time out, kill.

Split as optimum-benchmark splits its *launcher* (how a process is started and watched) from
the *scenario* (what is measured, `bench.workloads.measure` in the worker): this module never imports
torch, so the pytest process and `alexnet-bench ab` coordinate without touching a device.

- `Zygote` starts ``python -m bench.workers.zygote`` (which imports torch once) and asks it to fork
  workers; it reads the zygote's reports of which worker ended, and how.
- `Worker` is one forked worker: plain-data requests over a Unix socket
  (`multiprocessing.connection.Connection`, pickled dicts of numbers and strings), with a
  deadline on each; a worker that dies or overruns is killed with its whole process group
  and raises `WorkerDied` / `WorkerTimeout` carrying its exit code or signal and the tail of
  its log (its stdout and stderr). Killing and describing go through the process toolkit
  (`bench.workers.proc`).
- `ZygotePool` keeps one zygote per set of import-time settings, and starts a fresh one when
  a case needs others.

What crosses is plain data only (numbers, dicts, strings), never tensors or modules
(docs/bench.md, "Every case in its own worker process").
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.workers.proc import describe_exit, group_alive, kill_tree, signal_name

__all__ = ["Worker", "WorkerDied", "WorkerError", "WorkerTimeout", "Zygote", "ZygoteDied", "ZygotePool", "IMPORT_TIME_SETTINGS",
           "fresh_cache_env"]

# Read when torch is imported, so they belong to the zygote (per process), not to a case:
# OpenMP/MKL thread pools are sized from these at first use by libraries loaded at import,
# and TORCH_LOGS is parsed when torch._logging is imported.
IMPORT_TIME_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_LOGS", "PYTORCH_NVML_BASED_CUDA_CHECK")
ZYGOTE_START_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 60.0
EXIT_REPORT_WAIT_S = 5.0
LOG_TAIL_CHARS = 4000


class WorkerError(RuntimeError):
    """A worker answered a request with an exception (the worker itself is still alive)."""

    def __init__(self, kind: str, message: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.kind = kind  # "oom" | "unsupported" | "fatal" | "error"
        self.traceback_text = traceback_text


class WorkerDied(RuntimeError):
    """The worker process ended (signal, exit, out-of-memory kill) or was killed."""

    def __init__(self, reason: str, *, pid: int, code: int | None, signal_: int | None, log_tail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pid = pid
        self.code = code
        self.signal = signal_
        self.log_tail = log_tail

    def record(self) -> dict[str, Any]:
        return {"reason": self.reason, "worker_pid": self.pid, "exit_code": self.code, "signal": self.signal,
                "signal_name": signal_name(self.signal) if self.signal else None,
                "stderr_tail": self.log_tail}


class WorkerTimeout(WorkerDied):
    """The worker exceeded its deadline and was killed with its process group."""


class ZygoteDied(WorkerDied):
    """No worker could be had: the zygote did not start, or died before (or while) forking one.

    It is a `WorkerDied` so that whoever runs a case records it as one (the case id, the reason,
    the zygote's log tail) and goes on; ``pid`` is the zygote's (-1 when it never reported one)."""

    def record(self) -> dict[str, Any]:
        return {**super().record(), "extra": {"process": "zygote"}}


def _zygote_died(zygote: "Zygote", what: str) -> ZygoteDied:
    """Describe the zygote's end (or failure to start) for `ZygoteDied`."""
    rc = zygote.proc.poll()
    code, sig = (None, -rc) if rc is not None and rc < 0 else (rc, None)
    how = f"the worker zygote (pid {zygote.proc.pid}) {what}"
    if rc is not None:
        how += ": " + describe_exit(code, sig)
    return ZygoteDied(how, pid=zygote.proc.pid, code=code, signal_=sig, log_tail=_tail(zygote.dir / "zygote.log", 1500))


def fresh_cache_env(root: str) -> dict[str, str]:
    """The per-worker environment every case worker (suite or duet) gets before torch touches a
    device: fresh, empty inductor and Triton cache folders under ``root`` (inductor writes
    ``TRITON_CACHE_DIR`` into ``os.environ`` at its first compile, so only a fresh process with
    empty folders compiles cold), and ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (torch and NVML then
    number GPUs alike; docs/measurement-notes.md, "NVML")."""
    return {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(root, "inductor"),
        "TRITON_CACHE_DIR": os.path.join(root, "triton"),
    }


def _describe(code: int | None, sig: int | None) -> str:
    # A worker raises its own oom_score_adj (bench.workers.zygote): a SIGKILL may be the kernel's.
    return "worker " + describe_exit(code, sig, oom_note=True)


def _tail(path: Path, limit: int = LOG_TAIL_CHARS) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", errors="replace")


# The zygote's start under an explicit PYTHONPATH (Zygote): without the working directory that
# ``-c`` puts first (``''``; absent under PYTHONSAFEPATH=1, which leaves nothing to drop).
_BOOT = ("import os, runpy, sys\n"
         "if sys.path and sys.path[0] in ('', os.getcwd()):\n"
         "    del sys.path[0]\n"
         "runpy.run_module('bench.workers.zygote', run_name='__main__', alter_sys=True)\n")


class Zygote:
    """``python -m bench.workers.zygote`` with the given environment, and the workers it forks."""

    def __init__(self, *, env: Mapping[str, str] | None = None, python: str | None = None,
                 pythonpath: Sequence[str] | None = None, cwd: str | Path | None = None,
                 workdir: str | Path | None = None, preload: str = "suite", wait: bool = True) -> None:
        self.python = python or sys.executable
        self._own_tmp = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="alexnet-workers-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # the socket lives here: only this user may connect
        self.address = str(self.dir / "workers.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.address)
        self._sock.listen(16)
        full_env = {**os.environ, **(env or {})}
        if pythonpath is not None:
            full_env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        self._exits: dict[int, dict[str, Any]] = {}
        self._forks: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self._cv = threading.Condition()
        self._counter = 0
        self._t0 = time.perf_counter()
        # With an explicit ``pythonpath`` the zygote imports from exactly that path (then the
        # interpreter's own): ``python -m`` would put the working directory first, ahead of
        # PYTHONPATH (docs.python.org, "The initialization of the sys.path module search path":
        # for ``-m`` and ``-c`` the current directory is prepended), and a duet side runs in its
        # ref's worktree with [this tool's instrument, the worktree]: the worktree's own `bench`
        # would shadow the tool's. `_BOOT` drops that entry, then runs the module as -m does.
        argv = ["-m", "bench.workers.zygote"] if pythonpath is None else ["-c", _BOOT]
        self.proc = subprocess.Popen(
            [self.python, *argv, preload], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.dir / "zygote.log", "ab"), env=full_env, cwd=cwd, start_new_session=True,
        )
        self.pid: int | None = None
        self.start_s: float | None = None
        if wait:
            self.wait_ready()

    def wait_ready(self) -> "Zygote":
        """Block until the zygote has imported what it preloads (started with ``wait=False``)."""
        if self.pid is not None:
            return self
        ready = self._read_line(ZYGOTE_START_TIMEOUT_S)
        if not ready or "ready" not in ready:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            died = _zygote_died(self, "did not start")
            self.close()
            raise died
        self.pid = int(ready["ready"])
        self.start_s = time.perf_counter() - self._t0
        self._reader = threading.Thread(target=self._read_loop, name="zygote-reader", daemon=True)
        self._reader.start()
        return self

    # --- the zygote's stdout ------------------------------------------------------------
    def _read_line(self, timeout: float) -> dict[str, Any] | None:
        import select

        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line.strip() else None

    def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.strip():
                continue
            msg = json.loads(line)
            if "forked" in msg:
                self._forks.put(msg)
            elif "exit" in msg:
                with self._cv:
                    self._exits[int(msg["exit"])] = msg
                    self._cv.notify_all()
        with self._cv:  # the zygote is gone
            self._cv.notify_all()

    def exit_status(self, pid: int, timeout: float = EXIT_REPORT_WAIT_S) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while pid not in self._exits:
                left = deadline - time.monotonic()
                reader = getattr(self, "_reader", None)
                if left <= 0 or (self.proc.poll() is not None and (reader is None or not reader.is_alive())):
                    break
                self._cv.wait(left)
            return self._exits.get(pid)

    # --- workers ----------------------------------------------------------------------
    def fork(self, *, tag: str, env: Mapping[str, str] | None = None, timeout: float = CONNECT_TIMEOUT_S) -> "Worker":
        """A new worker, connected and ready for its first request."""
        self.wait_ready()
        if self.proc.poll() is not None:
            raise _zygote_died(self, "had exited before this worker was asked for")
        self._counter += 1
        log = self.dir / f"worker-{self._counter:04d}.log"
        t0 = time.perf_counter()
        req = {"op": "fork", "tag": tag, "address": self.address, "env": dict(env or {}), "log": str(log),
               "t_request": time.time()}
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:  # a broken pipe: it died after the check above
            self.proc.wait(timeout=5)
            raise _zygote_died(self, "died before it could be asked for a worker") from None
        deadline = time.monotonic() + timeout
        while True:  # in short waits, so that a zygote that dies meanwhile is seen at once
            try:
                forked = self._forks.get(timeout=0.1)
                break
            except queue.Empty:
                if self.proc.poll() is not None:
                    self._reader.join(timeout=1.0)  # what it wrote before dying is read to the end
                    if self._forks.empty():
                        raise _zygote_died(self, "died while forking a worker") from None
                    continue
                if time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc.wait()
                    raise _zygote_died(self, f"did not fork a worker within {timeout:.0f} s (killed)") from None
        pid = int(forked["forked"])
        self._sock.settimeout(timeout)
        try:
            s, _ = self._sock.accept()
        except socket.timeout:
            status = self.exit_status(pid, timeout=0.5)
            raise WorkerDied("worker did not connect: " + _describe((status or {}).get("code"), (status or {}).get("signal")),
                             pid=pid, code=(status or {}).get("code"), signal_=(status or {}).get("signal"),
                             log_tail=_tail(log)) from None
        conn = Connection(s.detach())
        hello = conn.recv()
        ready_s = time.perf_counter() - t0
        return Worker(zygote=self, conn=conn, pid=int(hello["pid"]), log=log, start_s=ready_s, hello=hello)

    def close(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF: the zygote reaps its last children and leaves
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        try:
            self._sock.close()
        except OSError:
            pass
        if self._own_tmp:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Zygote":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Worker:
    """One forked case worker. `request` sends a plain dict and returns the worker's reply."""

    zygote: Zygote
    conn: Connection
    pid: int
    log: Path
    start_s: float
    hello: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() after which the worker is killed
    dead: bool = False

    def request(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        self.send(op, **args)
        return self.reply(op, timeout)

    def send(self, op: str, **args: Any) -> None:
        """The first half of `request`: the worker starts on ``op`` while the caller goes on
        (a duet builds both sides at once this way); `reply` waits for its answer."""
        if self.dead:
            raise RuntimeError("request to a worker that has ended")
        try:
            self.conn.send({"op": op, **args})
        except OSError:  # BrokenPipeError among them
            raise self._died(op) from None

    def reply(self, op: str, timeout: float | None = None) -> Any:
        """The answer to the request `send` made, within ``timeout`` and the worker's deadline."""
        limit = timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            limit = left if limit is None else min(limit, left)
        try:
            if limit is not None and not self.conn.poll(max(limit, 0.0)):
                self.kill()
                raise WorkerTimeout(f"worker exceeded its time limit during {op!r}; killed with its process group",
                                    pid=self.pid, code=None, signal_=signal.SIGKILL, log_tail=_tail(self.log))
            reply = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            raise self._died(op) from None
        if reply.get("ok"):
            return reply.get("result")
        raise WorkerError(reply.get("kind", "error"), reply.get("message", "worker error"), reply.get("traceback", ""))

    def _died(self, op: str) -> WorkerDied:
        self.dead = True
        # Whatever ended the worker, what it started (DataLoader workers, compile workers, a
        # test's child) must not outlive it: its whole process group goes, and any descendant
        # that left the group.
        kill_tree(self.pid)
        status = self.zygote.exit_status(self.pid) or {}
        code, sig = status.get("code"), status.get("signal")
        return WorkerDied(f"{_describe(code, sig)} during {op!r}", pid=self.pid, code=code, signal_=sig,
                          log_tail=_tail(self.log))

    def kill(self) -> None:
        """SIGKILL the worker's tree (its process group: it called setsid), and wait for its exit."""
        self.dead = True
        kill_tree(self.pid)
        self.zygote.exit_status(self.pid)
        try:
            self.conn.close()
        except OSError:
            pass

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        if self.dead:
            return
        try:
            self.conn.send({"op": "exit"})
        except OSError:
            pass
        status = self.zygote.exit_status(self.pid, timeout=10.0)
        if status is None or group_alive(self.pid):
            self.kill()
        self.dead = True
        try:
            self.conn.close()
        except OSError:
            pass


class ZygotePool:
    """One live zygote, restarted when a case asks for other import-time settings."""

    def __init__(self, *, env: Mapping[str, str] | None = None, **zygote_kwargs: Any) -> None:
        self._env = dict(env or {})
        self._kwargs = zygote_kwargs
        self._zygote: Zygote | None = None
        self._settings: dict[str, str] | None = None
        self.starts = 0

    def get(self, settings: Mapping[str, str] | None = None) -> Zygote:
        wanted = {k: v for k, v in (settings or {}).items() if k in IMPORT_TIME_SETTINGS}
        if self._zygote is not None and (wanted != self._settings or self._zygote.proc.poll() is not None):
            self._zygote.close()
            self._zygote = None
        if self._zygote is None:
            self._zygote = Zygote(env={**self._env, **wanted}, **self._kwargs)
            self._settings = wanted
            self.starts += 1
        return self._zygote

    def close(self) -> None:
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None
