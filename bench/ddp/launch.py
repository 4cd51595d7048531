"""Launching and stopping the runs of ``alexnet-bench ddp``: torchrun for the N ranks, a plain
process for the 1-process baseline, each within ``--timeout``.

torchrun and DDP do all the launching and communicating; this module only builds their command
lines and environment, runs each launch through the process toolkit (`bench.workers.proc`) and
turns a failure into one line. A launch that overruns is stopped: SIGTERM to torchrun first (it
stops its workers), then, after `TERMINATE_GRACE_S`, SIGKILL to whatever is left, including the
workers, which torchrun starts in sessions of their own (found as its descendants). A failing
launch names the rank that failed first, from the ``rank<R>.error`` line each rank writes
(`bench.ddp.rank`).

Torch-free: the command line parses and validates without importing torch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from alexnet.config import RunConfig
from bench.workers.proc import describe_exit, run_limited

__all__ = ["Launch", "RunFailed", "TERMINATE_GRACE_S", "child_env", "free_port", "launch", "plan", "run_launch",
           "torchrun_command", "worker_args"]

# After SIGTERM, torchrun takes up to 30 s to stop its workers; then they are killed.
TERMINATE_GRACE_S = 35.0
LOG_TAIL_LINES = 15
REPO = Path(__file__).resolve().parents[2]


class RunFailed(RuntimeError):
    """A launched process failed or timed out; the message names which and why (one line).
    ``log_tail`` holds the last lines of the launch's output, when there are any."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def free_port() -> int:
    # Asked of the OS on loopback; torchrun's store binds it a moment later.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_args(cfg: RunConfig, *, steps: int, warmup: int, threads: int, timeout_s: float, result: Path,
                error_dir: Path) -> list[str]:
    """The rank worker's arguments (``python -m bench.ddp.rank ...``)."""
    return [
        "--config", json.dumps(cfg.flat()), "--steps", str(steps), "--warmup", str(warmup),
        "--threads", str(threads), "--timeout", f"{timeout_s:g}", "--result", str(result), "--error-dir", str(error_dir),
    ]


def torchrun_command(nproc: int, worker_args: Sequence[str], *, port: int) -> list[str]:
    """The single-node torchrun command line (loopback rendezvous) for the worker module."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(port),
        "-m", "bench.ddp.rank", *worker_args,
    ]


def child_env(threads: int, *, gloo: bool) -> dict[str, str]:
    env = dict(os.environ)
    # torchrun sets OMP_NUM_THREADS=1 per rank when N > 1 unless it is already set: set it
    # for both launches so the baseline gets exactly what each rank gets.
    env["OMP_NUM_THREADS"] = str(threads)
    # Every rank samples its own GPU with NVML: number GPUs the same way in torch and NVML
    # (docs/measurement-notes.md, "NVML"), unless the user chose an order (the sampler matches GPUs by UUID anyway).
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if gloo and "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # single machine: keep gloo's traffic on loopback
    return env


def _root_cause(error_dir: Path, log: Path) -> str:
    """The first rank's error line (by time written), else the log's last line."""
    errors = sorted(error_dir.glob("rank*.error"), key=lambda p: p.stat().st_mtime)
    if errors:
        first = errors[0]
        line = f"{first.stem.replace('rank', 'rank ')}: {first.read_text().strip()}"
        others = [e.stem.replace("rank", "") for e in errors[1:]]
        return line + (f" (rank(s) {', '.join(others)} failed too)" if others else "")
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return tail[-1].strip() if tail else "no output"


def _log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def launch(cmd: list[str], *, what: str, env: dict[str, str], timeout_s: float, log: Path, error_dir: Path,
           grace_s: float = TERMINATE_GRACE_S) -> None:
    """Run one launch to completion (output to ``log``); RunFailed (naming the failing rank when
    known) otherwise. Past ``timeout_s`` it is stopped: SIGTERM, ``grace_s``, then SIGKILL to its
    whole tree; on Ctrl-C the same, and the interrupt goes on."""
    error_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        done = run_limited(cmd, timeout_s=timeout_s, stdout=out, stderr=subprocess.STDOUT, env=env, grace_s=grace_s)
    if done.timed_out:
        raise RunFailed(f"{what} did not finish within --timeout {timeout_s:g} s and was stopped",
                        log_tail=_log_tail(log))
    if done.returncode != 0:
        raise RunFailed(f"{what} failed ({describe_exit(done.returncode)}): {_root_cause(error_dir, log)}",
                        log_tail=_log_tail(log))


@dataclass(frozen=True)
class Launch:
    """One launch of the command: the N ranks under torchrun, or the plain 1-process baseline."""

    key: str  # "ddp" | "baseline": the file names of its result, errors and log
    what: str  # how messages name it
    cfg: RunConfig

    def command(self, args: Sequence[str]) -> list[str]:
        if self.cfg.dist_backend == "none":  # the baseline: no process group, no torchrun
            return [sys.executable, "-m", "bench.ddp.rank", *args]
        return torchrun_command(self.cfg.world_size, args, port=free_port())


def plan(base: RunConfig, cfg: RunConfig) -> list[Launch]:
    """The N-process run first (a failing rank then fails the command without a wasted baseline),
    then the baseline."""
    return [Launch("ddp", f"the {cfg.world_size}-process torchrun run", cfg),
            Launch("baseline", "the 1-process baseline", base)]


def run_launch(item: Launch, *, steps: int, warmup: int, threads: int, timeout_s: float, workdir: Path,
               grace_s: float = TERMINATE_GRACE_S) -> dict[str, Any]:
    """Run ``item`` to completion in ``workdir`` and return rank 0's result (every rank's raw
    timings, `bench.ddp.rank.run_worker`); RunFailed otherwise."""
    result, error_dir, log = workdir / f"{item.key}.json", workdir / f"{item.key}-errors", workdir / f"{item.key}.log"
    args = worker_args(item.cfg, steps=steps, warmup=warmup, threads=threads, timeout_s=timeout_s, result=result,
                       error_dir=error_dir)
    launch(item.command(args), what=item.what, env=child_env(threads, gloo=item.cfg.dist_backend == "gloo"),
           timeout_s=timeout_s, log=log, error_dir=error_dir, grace_s=grace_s)
    try:
        return json.loads(result.read_text())
    except (OSError, ValueError) as exc:
        raise RunFailed(f"{item.what} ended without writing its result ({type(exc).__name__}: {exc})",
                        log_tail=_log_tail(log)) from None
