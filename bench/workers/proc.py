"""The process toolkit: run a child with a time limit, kill a process tree, say how a process
ended, and classify a failure. One implementation for every command that starts processes
(the case workers' launcher, ``alexnet-bench ddp``, ``gpu-check`` and ``max-batch``).

Torch-free (the coordinator side, tests/test_layout.py): importing it imports neither torch
nor psutil; psutil is imported only when a process tree is walked, and where it is missing the
tree is read from Linux's /proc.

Killing a tree. A child started with ``start_new_session=True`` leads a process group of its
own, so ``killpg(pid, SIGKILL)`` reaches everything it started that stayed in that group
(setsid(2), killpg(3)). A descendant may leave the group (torchrun starts each worker in a
session of its own), so the tree is also walked by parent pid and every descendant is killed
by pid. The walk is made *before* anything is killed: a killed process's children are
reparented (to init or a subreaper) and can no longer be found from it. Each descendant is
recorded with its start time and killed only while that pid still has that start time, so a
pid the kernel reused meanwhile is left alone.

Failures. `is_oom` and `is_fatal_device_error` say which exceptions of a measurement are
expected (out of memory: the case is skipped and the sweep goes on) and which are fatal (a
*sticky* CUDA error: the process's CUDA context is unusable, so the process is discarded).
`is_oom` looks torch up only if the process has already imported it (an exception can only be
a ``torch.OutOfMemoryError`` then).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, Sequence

__all__ = [
    "FATAL_CUDA_ERRORS", "Finished", "classify_failure", "describe_exit", "descendants", "group_alive",
    "is_fatal_device_error", "is_oom", "kill_tree", "looks_like_oom", "run_limited", "signal_name",
]

# --- failures -------------------------------------------------------------------------------

# Substrings (lower case) of the messages of the CUDA errors after which "the process is in an
# inconsistent state and any further CUDA work will return the same error; to continue using
# CUDA, the process must be terminated and relaunched" (CUDA Runtime API, cudaError enum:
# cudaErrorIllegalAddress, cudaErrorAssert, cudaErrorLaunchFailure, cudaErrorIllegalInstruction,
# cudaErrorMisalignedAddress). PyTorch raises them as "CUDA error: <cudaGetErrorString>",
# e.g. "CUDA error: an illegal memory access was encountered", "CUDA error: device-side assert
# triggered", "CUDA error: unspecified launch failure", "CUDA error: misaligned address",
# "CUDA error: an illegal instruction was encountered" (c10/cuda/CUDAException.cpp,
# c10_cuda_check_implementation; pytorch/pytorch#32893, vllm-project/vllm#18045).
# cuBLAS reports a kernel that failed on the device as "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED
# when calling `cublasSgemm(...)`" (ATen/cuda/CUDABlas.cpp, TORCH_CUDABLAS_CHECK); it follows
# the same device faults.
FATAL_CUDA_ERRORS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "cublas_status_execution_failed",
)
# torch.OutOfMemoryError on CUDA; the CPU allocator raises a plain RuntimeError.
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")
# In a dead process's stderr: the above, a truncated allocator message, or Python's MemoryError.
_OOM_TEXT = (*_OOM_MESSAGES, "can't allocate", "memoryerror")


def is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # not imported: exc cannot be a torch.OutOfMemoryError
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def is_fatal_device_error(exc: BaseException | str) -> bool:
    """True for a sticky CUDA error: the process's CUDA context cannot be used any more."""
    return any(m in str(exc).lower() for m in FATAL_CUDA_ERRORS)


def classify_failure(exc: BaseException) -> str:
    """``"fatal"`` (sticky device error), ``"oom"`` or ``"error"``, in that order of precedence."""
    if is_fatal_device_error(exc):
        return "fatal"
    if is_oom(exc):
        return "oom"
    return "error"


def looks_like_oom(text: str) -> bool:
    """Whether a line of a dead process's output reads as running out of memory."""
    low = text.lower()
    return any(m in low for m in _OOM_TEXT)


# --- how a process ended --------------------------------------------------------------------

OOM_KILLER_NOTE = "the kernel's out-of-memory killer sends SIGKILL"


def signal_name(sig: int) -> str:
    """``"SIGKILL"`` for 9; ``"signal 77"`` for a number Python has no name for."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def describe_exit(code: int | None, sig: int | None = None, *, oom_note: bool = False) -> str:
    """How a process ended, to follow its name: ``"killed by SIGKILL (signal 9)"``,
    ``"ended with exit status 3"``.

    ``code`` is an exit status, or ``subprocess``'s returncode (``-N``: killed by signal N);
    ``sig`` a signal number from ``os.WTERMSIG``. ``oom_note`` adds, for SIGKILL, that the
    kernel's out-of-memory killer sends that signal (proc(5), oom_score_adj).
    """
    if not sig and code is not None and code < 0:
        sig = -code
    if sig:
        note = f"; {OOM_KILLER_NOTE}" if oom_note and sig == signal.SIGKILL else ""
        return f"killed by {signal_name(sig)} (signal {sig}{note})"
    if code is None:
        return "ended, exit status unknown"
    return f"ended with exit status {code}"


# --- process trees --------------------------------------------------------------------------


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, state) of every process, from /proc/PID/stat (proc(5))."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:  # ended meanwhile
            continue
        # Field 2 (the name) may hold spaces and parentheses: split after the last ')'. The rest
        # starts at field 3 (state); field 4 is the parent pid, field 22 the start time.
        rest = stat.rsplit(")", 1)[1].split()
        table[int(name)] = (int(rest[1]), rest[19], rest[0])
    return table


def _identity(pid: int) -> Any:
    """A token that changes when ``pid`` is reused (its start time); None when it has ended."""
    psutil = _psutil()
    if psutil is not None:
        try:
            p = psutil.Process(pid)
            return None if p.status() == psutil.STATUS_ZOMBIE else p.create_time()
        except psutil.Error:
            return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if rest[0] in ("Z", "X") else rest[19]


def _tree(pid: int) -> dict[int, Any]:
    """Every live descendant of ``pid`` -> its `_identity`, including those in other sessions."""
    psutil = _psutil()
    if psutil is not None:
        try:
            kids = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return {}
        out = {}
        for k in kids:
            try:
                if k.status() != psutil.STATUS_ZOMBIE:
                    out[k.pid] = k.create_time()
            except psutil.Error:
                pass
        return out
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(child)
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if table[c][2] not in ("Z", "X"):
                out[c] = table[c][1]
            todo.append(c)
    return out


def descendants(pid: int) -> list[int]:
    """The pids of every live descendant of ``pid`` (psutil, else /proc), whatever their group."""
    return sorted(_tree(pid))


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is left (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_known(family: dict[int, Any], sig: int) -> None:
    for pid, ident in family.items():
        if _identity(pid) == ident:  # still the process that was found, not a reused pid
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _still_ours(proc: subprocess.Popen | int, group: bool) -> bool:
    """Whether the root is still the process meant, so that its pid and its children are its own.

    A `Popen` is ours until it is reaped. A bare pid (a process another one started, e.g. a
    zygote's worker) must be alive, and, when it was said to lead a group, still lead it: a
    session leader cannot leave its group (setpgid(2)), so a pid that the kernel reused for
    some other process fails the check.
    """
    if isinstance(proc, subprocess.Popen):
        return proc.poll() is None
    if _identity(proc) is None:
        return False
    if not group:
        return True
    try:
        return os.getpgid(proc) == proc
    except ProcessLookupError:
        return False


def kill_tree(proc: subprocess.Popen | int, *, group: bool = True, grace_s: float = 0.0, wait_s: float = 5.0,
              grace_signal: int = signal.SIGTERM) -> None:
    """Kill ``proc``, its process group and every descendant, including those that left the group.

    ``group``: ``proc`` leads a process group of its own (started with ``start_new_session=True``
    or after ``setsid()``), which is then killed whole, even after its leader has ended.
    ``grace_s`` > 0: first send ``grace_signal`` (SIGTERM) to the root alone and give it that
    long to stop its children (torchrun stops its workers on SIGTERM; pytest saves its
    benchmarks on SIGINT), then SIGKILL whatever is left. A `Popen` is
    reaped; the call then waits up to ``wait_s`` for the descendants to be gone.
    """
    pid = proc.pid if isinstance(proc, subprocess.Popen) else int(proc)
    family = _tree(pid) if _still_ours(proc, group) else {}  # before any kill: orphans are reparented and lost
    if grace_s > 0 and _still_ours(proc, group):
        try:
            os.kill(pid, grace_signal)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if _still_ours(proc, group):
                family.update(_tree(pid))  # a worker may have started meanwhile
            elif not any(_identity(p) == i for p, i in family.items()):
                break
            time.sleep(0.05)
    if _still_ours(proc, group):
        family.update(_tree(pid))
    if group:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if _still_ours(proc, group):  # not a group leader after all, or not yet gone
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _kill_known(family, signal.SIGKILL)
    if isinstance(proc, subprocess.Popen):
        proc.wait()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_identity(p) == i for p, i in family.items()):
        time.sleep(0.02)


# --- a child with a time limit --------------------------------------------------------------


@dataclass
class Finished:
    """How a `run_limited` child ended. ``returncode`` as `subprocess` gives it (``-N``: signal
    N); ``timed_out``: it ran past its limit and its tree was killed. ``stdout`` / ``stderr``
    are the captured text (None when not captured)."""

    returncode: int
    timed_out: bool
    seconds: float
    stdout: str | None = None
    stderr: str | None = None

    @property
    def signal(self) -> int | None:
        """The signal that ended the child (``returncode`` -N), or None."""
        return -self.returncode if self.returncode < 0 else None

    def describe(self, *, oom_note: bool = False) -> str:
        if self.timed_out:
            return f"ran past its time limit and was killed after {self.seconds:.0f} s"
        return describe_exit(self.returncode, oom_note=oom_note)


def run_limited(cmd: Sequence[str], *, timeout_s: float, input: str | None = None, capture: bool = False,
                stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
                env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
                grace_s: float = 0.0, grace_signal: int = signal.SIGTERM) -> Finished:
    """Run ``cmd`` in a session of its own for at most ``timeout_s`` seconds.

    Past the limit, the child and everything it started are killed (`kill_tree`, after
    ``grace_s`` of ``grace_signal``, SIGTERM by default) and the result says ``timed_out``; on
    any exception here (Ctrl-C)
    the tree is killed the same way and the exception goes on. After a normal exit, whatever it
    left running in its process group is killed too. ``capture``: stdout and stderr come back
    as text; otherwise they go to ``stdout`` / ``stderr`` (a file, or inherited). stdin is
    ``input`` (text), or nothing.
    """
    if not timeout_s > 0:
        raise ValueError(f"time limit {timeout_s!r} is not valid; it must be > 0 seconds")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(c) for c in cmd], stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else stdout, stderr=subprocess.PIPE if capture else stderr,
        text=True, env=env, cwd=cwd, start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(input=input, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_tree(proc, grace_s=grace_s, grace_signal=grace_signal)
        try:  # what it wrote before it was killed (the pipes close with the tree)
            out, err = proc.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            out = err = None
    except BaseException:
        kill_tree(proc, grace_s=grace_s)
        raise
    else:
        try:  # anything left running in its group (its own session: nobody else's)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return Finished(proc.returncode, timed_out, time.monotonic() - t0, out, err)


def run_forwarding_signals(cmd: Sequence[str], *, signals: Sequence[int], cwd: str | os.PathLike | None = None,
                           kill_on_repeat: bool = False) -> tuple[int, str | None]:
    """Run ``cmd`` in a session of its own and pass each of ``signals`` sent to this process on to
    it once, as it came; wait for it to end. Returns (its exit status, the first signal's name or None).

    A session of its own: a terminal's Ctrl-C reaches this process only, which forwards it once
    (pytest, the suite's child, then saves what it measured). Its SIGINT is set to the default
    before exec: a command started in the background of a script inherits SIGINT ignored, an
    ignored signal stays ignored across exec (execve(2)), and Python then never raises
    KeyboardInterrupt. A repeated signal is not forwarded; with ``kill_on_repeat`` it kills the
    child's tree instead (an impatient second Ctrl-C). Any exception here kills the tree too."""
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, start_new_session=True, preexec_fn=default_sigint)
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) > 1:
            if kill_on_repeat:
                kill_tree(proc)
            return
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        rc = proc.wait()
    except BaseException:
        kill_tree(proc)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return rc, (signal.Signals(received[0]).name if received else None)

