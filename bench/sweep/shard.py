"""Running one shard of a plan: its index, its attempt's folder, its ``--cases`` rows, the resume filter.

A sweep folder holds one folder per attempt at a shard, ``shard-KKKK.aN.HOST`` (the shard, the
attempt's number, the host), so shards and their re-runs never share a folder, and in it:

- ``attempt.json``: the plan's id and options, the shard, the attempt, the host, this machine's
  fingerprint and the code's (`local_fingerprint`, `code_state`), the cases it was given, the pid;
- ``cases.json``: the ``--cases`` file the shard's pytest runs;
- ``journal.jsonl``: one line per finished case (`bench.sweep.journal`), written as it finishes;
- ``<machine_id>/NNNN_sweep-sKKKK.json``: the saved run (pytest-benchmark's layout);
- ``end.json``: pytest's exit status, once it exited; ``pytest.log``: its output.

Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["Attempt", "INDEX_VARIABLES", "attempts", "code_state", "done_cases", "local_fingerprint", "new_attempt",
           "pytest_options", "shard_cases", "shard_index", "shard_rows"]

# The engines' index variables, in the order they are asked: Slurm array tasks, Kubernetes Indexed Jobs.
INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
_ATTEMPT_RE = re.compile(r"^shard-(?P<shard>\d{4,})\.a(?P<attempt>\d+)\.(?P<host>.+)$")


def shard_index(explicit: int | None, shards: int, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(K, where it came from): ``--shard K``, else SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX."""
    env = os.environ if env is None else env
    if explicit is not None:
        k, source = explicit, "--shard"
    else:
        source = next((v for v in INDEX_VARIABLES if env.get(v, "").strip()), None)
        if source is None:
            raise ValueError(f"no shard index: give --shard K or set one of {', '.join(INDEX_VARIABLES)}")
        text = env[source].strip()
        if not text.isdigit():
            raise ValueError(f"{source}={text!r} is not a shard index (an integer >= 0)")
        k = int(text)
    if not 0 <= k < shards:
        raise ValueError(f"shard {k} (from {source}) is not valid; the plan has shards 0-{shards - 1}")
    return k, source


def local_fingerprint() -> dict[str, Any]:
    """This machine as resume compares it, without torch: CPU model, GPUs (nvidia-smi), torch, Python."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus: list[str] = []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0:
            gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = None
    return {"cpu": cpu, "gpus": gpus, "torch": torch, "python": platform.python_version()}


def code_state(repo: Path) -> dict[str, Any]:
    """The measured code: the commit, whether the tree is dirty, and a hash of the uncommitted diff."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60)
        return out.stdout.decode(errors="replace") if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD").strip() or None
    diff = git("diff", "HEAD", "--binary")
    return {"commit": commit, "dirty": bool(diff), "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None}


@dataclass
class Attempt:
    """One attempt at one shard, as found in a sweep folder."""

    path: Path
    shard: int
    attempt: int
    host: str
    meta: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None

    @property
    def runs(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*/*.json") if p.name[:4].isdigit())

    def journal(self) -> list[dict[str, Any]]:
        path = self.path / "journal.jsonl"
        out = []
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: the cases before it stand
                    continue
        return out

    def label(self) -> str:
        return f"shard {self.shard} attempt {self.attempt} on {self.host}"


def attempts(sweep_dir: Path) -> list[Attempt]:
    """Every attempt folder under the sweep folder, by shard then attempt."""
    out = []
    for p in sorted(Path(sweep_dir).glob("shard-*")):
        m = _ATTEMPT_RE.match(p.name)
        if not m or not p.is_dir():
            continue
        meta = _read_json(p / "attempt.json") or {}
        out.append(Attempt(p, int(m["shard"]), int(m["attempt"]), m["host"], meta, _read_json(p / "end.json")))
    return sorted(out, key=lambda a: (a.shard, a.attempt, a.host))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def new_attempt(sweep_dir: Path, shard: int, meta: Mapping[str, Any], host: str | None = None) -> Attempt:
    """Create the next attempt's folder for ``shard`` (atomically: two starts never share one)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", host or socket.gethostname().split(".")[0]) or "host"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    n = 1 + max((a.attempt for a in attempts(sweep_dir) if a.shard == shard), default=0)
    while True:
        path = sweep_dir / f"shard-{shard:04d}.a{n}.{host}"
        try:
            path.mkdir()
            break
        except FileExistsError:
            n += 1
    full = {**meta, "shard": shard, "attempt": n, "host": host, "pid": os.getpid(), "started": time.time()}
    (path / "attempt.json").write_text(json.dumps(full, indent=1))
    return Attempt(path, shard, n, host, full)


def shard_cases(plan: Mapping[str, Any], shard: int) -> list[dict[str, Any]]:
    """The plan's cases of ``shard``, in the plan's order."""
    return [c for c in plan["cases"] if c["shard"] == shard]


def shard_rows(cases: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plan cases as ``--cases`` rows (bench/suite/caselist.py)."""
    return [{"config": c["config"], "kind": c["kind"]} for c in cases]


def _same_code(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    return bool(a) and a.get("commit") == b.get("commit") and a.get("diff_sha256") == b.get("diff_sha256")


def done_cases(sweep_dir: Path, plan: Mapping[str, Any], fingerprint: Mapping[str, Any],
               code: Mapping[str, Any]) -> dict[str, str]:
    """Case id -> where it is done, for ``--resume``: measured (a saved run or the journal) or skipped as
    unsupported, by an attempt of this plan (same options) with the same code and machine fingerprint.
    A failed case is not done: it runs again."""
    done: dict[str, str] = {}
    for a in attempts(sweep_dir):
        m = a.meta
        if (m.get("plan_options") != plan["options"] or m.get("fingerprint") != dict(fingerprint)
                or not _same_code(m.get("code"), code)):
            continue
        for run in a.runs:
            doc = _read_json(run) or {}
            for b in doc.get("benchmarks") or []:
                cid = (b.get("extra_info") or {}).get("case_id")
                if cid:
                    done.setdefault(cid, f"{a.label()} ({run.name})")
            for s in (doc.get("alexnet") or {}).get("skipped") or []:
                if s.get("case_id"):
                    done.setdefault(s["case_id"], f"{a.label()} (skipped: {s.get('reason')})")
        for line in a.journal():
            if line.get("status") in ("done", "skipped") and line.get("case_id"):
                done.setdefault(line["case_id"], f"{a.label()} (journal)")
    return done


def pytest_options(options: Mapping[str, Any]) -> list[str]:
    """The plan's measurement options as the suite's pytest options."""
    out = ["--rounds", str(options["rounds"]), "--warmup-rounds", str(options["warmup_rounds"]),
           "--steps-per-round", str(options["steps_per_round"]), "--case-timeout", str(options["case_timeout"])]
    if options.get("telemetry_seconds") is not None:
        out += ["--telemetry-seconds", str(options["telemetry_seconds"])]
    if not options.get("correctness", True):
        out.append("--no-correctness")
    return out
