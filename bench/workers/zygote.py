"""The zygote: a process that has imported torch and the subject, and forks case workers.

Why a zygote (docs/measurement-notes.md, "Cost of a fresh worker"): a fresh ``python`` takes
about 4.4 s here to import torch and build the net; a child forked from a process that has
already imported torch builds it in 0.35-0.43 s and steps at full speed. But a forked child
inherits its parent's CUDA and OpenMP state, so the process that forks must never have
initialised CUDA or run a parallel op. The pytest process does both (it may have asked the
device for its name, and pytest-benchmark calibrates its timer); so it never forks workers
itself. It starts this process, which only imports modules, stays single-threaded, and forks
on request.

Protocol (one JSON object per line):

- stdin, from the coordinator: ``{"op": "fork", "tag": str, "address": path, "env": {...},
  "log": path}``. The child starts a new session (its own process group, so a timeout can
  kill it with everything it started), sets ``env`` *before* torch touches any device (per
  case: ``CUBLAS_WORKSPACE_CONFIG``, fresh ``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR``),
  sends its stdout and stderr to ``log``, raises its ``oom_score_adj`` and connects to
  ``address`` (a Unix socket of the coordinator) to serve requests (`bench.workers.worker.serve`).
- stdout, to the coordinator: ``{"forked": pid, "tag": tag}`` right after each fork, and
  ``{"exit": pid, "code": int | None, "signal": int | None}`` when a child ends (the zygote
  is the parent, so only it can reap the child and read its exit status).

Settings read when torch is *imported* (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``TORCH_LOGS``, ...) are the zygote's, hence per process, not per case: the coordinator
starts a fresh zygote when a case needs other values (`bench.workers.launcher.ZygotePool`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time

# Raising a process's own oom_score_adj needs no privilege (proc(5)). 1000 is the maximum:
# under memory pressure the kernel kills the worker, not the suite or the zygote.
WORKER_OOM_SCORE_ADJ = 1000
# How often the zygote reaps finished workers while it waits for requests.
REAP_INTERVAL_S = 0.05


def preload(kind: str = "suite") -> None:
    """Import what every worker needs, and nothing that starts threads or touches a device.

    Importing torch neither creates a CUDA context nor starts the OpenMP pool: both happen at
    first use (PyTorch's "Poison fork" note in torch.multiprocessing's docs concerns processes
    that have *initialised* CUDA). `bench.workers.worker` imports the instruments lazily per
    case too; what is imported here is only paid once.

    torch._dynamo is preloaded: every train step imports it (torch.optim's `_disable_dynamo`
    wrappers, torch/_compile.py) and so does every compiled case, 1.5-2 s a worker on the 2-core
    VM, which was most of a duet train session's build (2.4 s a side). `_preload_dynamo` keeps
    what a forked case gets its own: the import writes the default inductor cache folder into
    ``os.environ`` (torch/_inductor/runtime/cache_dir_utils.py, ``cache_dir()``), which is put
    back, and every worker sets its own folders before it compiles (`fresh_cache_env`). The
    module-level ``DynamoCache`` (torch/_dynamo/package.py, torch 2.14) reads its folder from the
    environment at each use (``DiskDynamoCache.path_prefix``) and is used only under the
    experimental ``TORCH_CACHING_PRECOMPILE=1`` (``torch._dynamo.config.caching_precompile``,
    read in torch/_dynamo/eval_frame.py and convert_frame.py before any use). Releases whose
    ``DiskDynamoCache`` has no ``path_prefix`` fix that folder when the module is imported, so
    in a forked worker it is the default folder, not the worker's own: harmless while
    ``caching_precompile`` is off (its default; the suite never turns it on).
    The import starts no thread and queries no CUDA device (`tests/test_zygote_preload.py`
    checks both on the CPU); untested on GPU.
    """
    import torch  # noqa: F401
    import torch.nn  # noqa: F401

    _preload_dynamo()

    import bench.instruments.timing  # noqa: F401
    import bench.workers.worker  # noqa: F401

    if kind == "subject":
        # A duet side: the ref's subject entry point only (`alexnet.subject`), beside this
        # tool's instrument; nothing else of the ref is assumed.
        import alexnet.subject  # noqa: F401

        return
    import alexnet.model  # noqa: F401
    import alexnet.runtime  # noqa: F401
    import bench.workloads.measure  # noqa: F401


_CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def _preload_dynamo() -> None:
    """Import torch._dynamo (and torch.optim), then put back the cache variables its import set."""
    before = {k: os.environ.get(k) for k in _CACHE_ENV}
    try:
        import torch._dynamo  # noqa: F401
        import torch.optim  # noqa: F401
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _child(req: dict, ctl_fds: tuple[int, ...]) -> None:
    """In the forked child: isolate, set the per-case environment, then serve. Never returns."""
    code = 1
    try:
        os.setsid()  # own session and process group: killpg(pid) reaches all it starts
        for fd in ctl_fds:  # the zygote's pipes are not the worker's business
            try:
                os.close(fd)
            except OSError:
                pass
        # fd 0 was the zygote's stdin (closed above): /dev/null takes its place, so that nothing
        # the worker opens later (its log, its socket) lands on fd 0 and is inherited as stdin
        # by what the worker starts (inductor's compile workers, DataLoader workers).
        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)
        log_fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        if log_fd > 2:  # it may itself be fd 1 (the zygote's stdout was closed above)
            os.close(log_fd)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        try:
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write(str(WORKER_OOM_SCORE_ADJ))
        except OSError as exc:  # not Linux, or a restricted container: note it and go on
            print(f"worker: could not raise oom_score_adj: {exc}", file=sys.stderr)
        os.environ.update(req.get("env") or {})
        # Restore default signal handling: the zygote ignores SIGINT (the coordinator owns it).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

        from multiprocessing.connection import Connection

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(req["address"])
        conn = Connection(sock.detach())
        from bench.workers.worker import serve

        code = serve(conn, tag=req.get("tag", ""), forked_at=req.get("t_request"))
    except BaseException as exc:  # noqa: BLE001 - the worker's last word goes to its log
        import traceback

        traceback.print_exc()
        print(f"worker: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)  # no atexit handlers of the zygote's, no flushing of its buffers


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)
        if os.WIFSIGNALED(status):
            _emit({"exit": pid, "code": None, "signal": os.WTERMSIG(status)})
        else:
            _emit({"exit": pid, "code": os.waitstatus_to_exitcode(status), "signal": None})


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the coordinator, which stops us
    from bench.workers import faults  # torch-free; inert unless the test hooks are enabled

    faults.zygote_started()
    t0 = time.perf_counter()
    preload(sys.argv[1] if len(sys.argv) > 1 else "suite")
    _emit({"ready": os.getpid(), "preload_s": time.perf_counter() - t0})
    children: set[int] = set()
    stdin_fd = sys.stdin.fileno()
    buf = b""
    while True:
        ready, _, _ = select.select([stdin_fd], [], [], REAP_INTERVAL_S)
        _reap(children)
        if not ready:
            continue
        chunk = os.read(stdin_fd, 65536)
        if not chunk:  # the coordinator is gone: so are we (workers are killed by it)
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            req = json.loads(line)
            if req.get("op") != "fork":
                _emit({"error": f"unknown op {req.get('op')!r}"})
                continue
            faults.zygote_fork_fault(req.get("tag", ""))
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(req, (stdin_fd, sys.stdout.fileno()))
            children.add(pid)
            _emit({"forked": pid, "tag": req.get("tag", "")})
    # Wait briefly for the last children so their exit is reported, then leave.
    deadline = time.monotonic() + 2.0
    while children and time.monotonic() < deadline:
        _reap(children)
        time.sleep(REAP_INTERVAL_S)
    return 0


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's teardown: with torch imported it took about 1 s a zygote
    # (measured on the 2-core VM), and a duet restarts two zygotes every few sessions. The zygote
    # has nothing of its own to finish: its reports are flushed here, and each worker flushes its
    # own files (what it forked is never finalised through this path, `_child` leaves by os._exit).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
