"""The Slurm engine: one ``sbatch --array`` script per sweep, and its submission.

Each array task runs one shard (``SLURM_ARRAY_TASK_ID`` is the shard index) with ``--resume``, so a
requeued task (``--requeue``: a node lost) picks up where its journal ends. ``--signal=B:USR1@120``
sends USR1 to the batch shell only, 120 s before the time limit: the script ``exec``s the shard's
command, so the shell *is* that command and the signal reaches it; the command passes it on to its
pytest, which saves what it measured. The GPU type is pinned (``--gres=gpu:TYPE:1`` and/or
``--constraint``) so that no shard lands on other hardware. Torch-free.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["DEFAULT_MAX_ARRAY_SIZE", "max_array_size", "sbatch_script", "slurm_time", "submit"]

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize (slurm.conf(5))


def slurm_time(seconds: int) -> str:
    """Seconds as Slurm's ``--time`` (``D-HH:MM:SS``)."""
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}"


def max_array_size() -> int:
    """The cluster's MaxArraySize (``scontrol show config``), else Slurm's default."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return DEFAULT_MAX_ARRAY_SIZE


def sbatch_script(plan: Mapping[str, Any], plan_path: Path, sweep_dir: Path, *, repo: Path,
                  gpu_type: str | None = None, gpus: int = 1, constraint: str | None = None,
                  partition: str | None = None, parallel: int | None = None, cpus: int | None = None,
                  time_s: int | None = None, extra: Sequence[str] = (), python: str | None = None,
                  limit: int = DEFAULT_MAX_ARRAY_SIZE) -> str:
    """The batch script: one array task per shard."""
    n = plan["shards"]
    if n > limit:
        raise ValueError(f"the plan has {n} shards, more than this cluster's MaxArraySize {limit}; plan at most "
                         f"{limit} shards (alexnet-bench sweep plan --shards {limit})")
    array = f"0-{n - 1}" + (f"%{parallel}" if parallel else "")
    device = str(plan["cases"][0]["config"].get("device", "cpu"))
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=alexnet-sweep-{plan['plan_id']}",
             f"#SBATCH --array={array}",
             f"#SBATCH --time={slurm_time(time_s or plan['time_limit_s'])}",
             "#SBATCH --requeue",
             "#SBATCH --signal=B:USR1@120",
             "#SBATCH --nodes=1",
             "#SBATCH --ntasks=1",
             f"#SBATCH --output={sweep_dir.absolute()}/slurm/%A_%a.out"]
    if device.startswith("cuda"):
        lines.append(f"#SBATCH --gres=gpu:{gpu_type + ':' if gpu_type else ''}{gpus}")
    if constraint:
        lines.append(f"#SBATCH --constraint={constraint}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if cpus:
        lines.append(f"#SBATCH --cpus-per-task={cpus}")
    lines += [f"#SBATCH {x}" for x in extra]
    cmd = [python or sys.executable, "-m", "bench", "sweep", "run", str(plan_path.absolute()),
           "--storage", str(sweep_dir.absolute()), "--resume"]
    lines += ["set -eu", f"cd {shlex.quote(str(repo.absolute()))}",
              "# exec: the batch shell becomes the shard's command, so --signal=B:USR1 reaches it",
              "exec " + " ".join(shlex.quote(c) for c in cmd), ""]
    return "\n".join(lines)


def submit(script_path: Path) -> str:
    """``sbatch --parsable SCRIPT``: the job id; ValueError (one line) when sbatch refuses."""
    try:
        out = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise ValueError(f"sbatch could not be run ({exc.strerror or exc}); is Slurm's client installed?") from None
    if out.returncode != 0:
        err = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"sbatch refused the script: {err}")
    return out.stdout.strip().split(";")[0]
