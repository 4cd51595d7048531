"""Duet sessions: one case, two live workers (base and head), rounds alternated A B B A ...

Why (docs/compare.md, "Duet"; docs/measurement-notes.md): on a
shared machine the noise is a drift in speed over seconds, shared by everything running at
that moment. Two processes that alternate single rounds see the same drift, so the ratio of
their rounds cancels it; a pair of fresh runs one after the other does not. What is left is a
per-process effect that only more sessions average out (on our VM mostly where glibc's
dynamic malloc thresholds settled in each worker, which `bench.instruments.allocator` now pins), so the
*session* (a fresh pair of workers) is the unit of the test, as in "Duet Benchmarking"
(Bulej et al., ICPE 2020) and randomized multiple interleaved trials (Abedi and Brecht,
ICPE 2017).

One instrument on both sides: each side's launcher is a zygote (`bench.workers.launcher.Zygote`,
``preload="subject"``) started with ``PYTHONPATH`` = [a folder holding only this tool's
`bench` package, the side's worktree] under the side's interpreter. So the timing, the pace
kernel and the worker protocol are this tool's, and only `alexnet.subject` (model, step,
config handling) is the ref's. Both sides' zygotes are started afresh every few sessions
(`Launchers`), so nothing that belongs to one launcher process (its address-space layout, its
heap) is shared by all of a side's sessions.

A session: fork one worker per side, build both (each pins glibc's malloc thresholds first,
`bench.instruments.allocator`, then runs its cold step and warm-up: one side after the other, in random
order, in a case's first session, whose cold steps are its cold compiles; both at once after),
then ``rounds``
rounds per side in A B B A order with a random first side, each round preceded by its pace
sample and ``rewarm`` untimed steps (a round follows the other side's, so its first step would
meet cold caches), and one closing pace sample per side. Each side's rounds
are saved as one pytest-benchmark run through the run record's store (`runrecord.store`,
pytest-benchmark's file layout under the side's machine id), with that side's worker's
machine_info and the side's commit_info, marked ``extra_info.duet`` (`runrecord.schema.Duet`)
with the session, the estimator and the round order; ``compare --paired`` re-judges them.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workers.launcher import Zygote, fresh_cache_env

__all__ = ["CompileCaches", "DuetSide", "Launchers", "SessionResult", "probe_sides", "run_session", "side_commit_info", "shim_dir", "save_side_run"]


def shim_dir(tmp: Path) -> Path:
    """A folder holding only this tool's `bench` and `runrecord` packages (symlinks): first on each side's path."""
    import bench
    import runrecord

    shim = tmp / "instrument"
    shim.mkdir(parents=True, exist_ok=True)
    for pkg in (bench, runrecord):
        link = shim / pkg.__name__
        if not link.exists():
            link.symlink_to(Path(pkg.__file__).resolve().parent, target_is_directory=True)
    return shim


@dataclass
class DuetSide:
    """One side of the comparison: a git worktree and the interpreter its workers run under."""

    name: str  # "base" | "head"
    ref: str
    sha: str
    worktree: Path
    python: str
    shim: Path
    probe: dict[str, Any] = field(default_factory=dict)
    commit_info: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # more environment for the side's launcher (studies)

    def zygote(self, workdir: Path, *, wait: bool = True) -> Zygote:
        return Zygote(python=self.python, pythonpath=[str(self.shim), str(self.worktree)], cwd=self.worktree,
                      workdir=workdir, preload="subject", env={"PYTHONDONTWRITEBYTECODE": "1", **self.env}, wait=wait)

    def has_subject(self) -> bool:
        return (self.worktree / "alexnet" / "subject.py").is_file()


def side_commit_info(worktree: Path) -> dict[str, Any]:
    """pytest-benchmark's commit_info, for the side's worktree (its own git state)."""
    from runrecord.gitinfo import commit_info

    return commit_info(worktree)


def probe_sides(sides: dict[str, DuetSide], tmp: Path) -> None:
    """Each side's machine_info and machine id, from a worker under its interpreter (in parallel)."""
    zygotes = {}
    try:
        for name, side in sides.items():
            zygotes[name] = side.zygote(Path(tempfile.mkdtemp(prefix=f"probe-{name}-", dir=tmp)), wait=False)
        for name, z in zygotes.items():
            w = z.fork(tag=f"probe-{name}")
            try:
                sides[name].probe = w.request("side_probe", timeout=300)
            finally:
                w.close()
    finally:
        for z in zygotes.values():
            z.close()


@dataclass
class SessionResult:
    index: int
    order: list[str]  # the side of every round, in time order
    samples: dict[str, list[float]]
    pace: dict[str, list[float]]
    cold_s: dict[str, float]
    worker_pids: dict[str, int]
    wall_s: float
    rewarm: int = 0  # untimed steps right before each timed round
    allocator: dict[str, dict[str, Any]] = field(default_factory=dict)  # per side: bench.instruments.allocator's record
    env: dict[str, dict[str, Any]] = field(default_factory=dict)  # per side: the per-worker settings it ran with
    steps_per_round: int = 1  # back-to-back steps per timed round, the same on both sides
    # "fresh": empty compile caches for this session alone; "reused": each side's own cache from its
    # earlier sessions of the case (CompileCaches); the first session of a case is always "fresh".
    compile_cache: str = "fresh"


class CompileCaches:
    """Per side, one inductor/Triton cache folder kept across one case's sessions.

    A compiled case compiles cold on both sides in every session with fresh folders (about 25 s
    a compile on this CPU). The cold compile time is compared once, in the case's first session
    (empty folders, fresh workers); later sessions compile from their own side's cache, so they
    time steps, not compilers. Base and head never share a folder."""

    def __init__(self, tmp: Path, case: str) -> None:
        self.dirs = {side: tempfile.mkdtemp(prefix=f"cache-{side}-{case[:40]}-", dir=tmp) for side in ("base", "head")}
        self.sessions = 0

    def root(self, side: str) -> tuple[str, str]:
        return self.dirs[side], ("fresh" if self.sessions == 0 else "reused")

    def used(self) -> None:
        self.sessions += 1

    def close(self) -> None:
        for path in self.dirs.values():
            shutil.rmtree(path, ignore_errors=True)


def abba(first: str, other: str, rounds: int) -> list[str]:
    """A B B A A B B A ...: ``rounds`` rounds per side; every adjacent pair (2k, 2k+1) has one of each."""
    unit = [first, other, other, first]
    order = (unit * ((2 * rounds) // 4 + 1))[: 2 * rounds]
    return order


class Launchers:
    """Each side's zygote, started afresh every `sessions_per_launcher` sessions.

    One parent per side that forks every session's workers would share whatever belongs to
    that parent (its address-space layout, its heap) with all of that side's sessions, and
    that would never average out; restarting both launchers every few sessions turns such an
    effect into session-to-session noise, which more sessions do average out. Restarting every
    session costs a torch and torch._dynamo import per side (6-8 s of a session here); measured
    A/A sessions from the same launcher pair showed no bias (docs/compare.md, "Duet"), so they are
    shared by a few (`ab`: 8).
    """

    def __init__(self, sides: dict[str, DuetSide], tmp: Path, *, sessions_per_launcher: int) -> None:
        self.sides = sides
        self.tmp = tmp
        self.every = max(1, sessions_per_launcher)
        self.zygotes: dict[str, Zygote] = {}
        self.used = 0
        self.started = 0

    def get(self) -> dict[str, Zygote]:
        alive = self.zygotes and all(z.proc.poll() is None for z in self.zygotes.values())
        if not alive or self.used >= self.every:
            self.close()
            for name, side in self.sides.items():  # both start at once: they import torch in parallel
                work = Path(tempfile.mkdtemp(prefix=f"launcher-{name}-", dir=self.tmp))
                self.zygotes[name] = side.zygote(work, wait=False)
            for z in self.zygotes.values():
                z.wait_ready()
            self.used = 0
            self.started += 1
        self.used += 1
        return self.zygotes

    def close(self) -> None:
        for z in self.zygotes.values():
            z.close()
            shutil.rmtree(z.dir, ignore_errors=True)
        self.zygotes = {}


def run_session(launchers: Launchers, config: dict[str, Any], *, index: int, rounds: int, warmup: int,
                rng: random.Random, timeout_s: float, rewarm: int = 1, malloc: str = "pinned",
                compile_caches: "CompileCaches | None" = None) -> SessionResult:
    """One duet session of one case: a fresh worker per side, built in random order, rounds alternated.
    Both sides time rounds of the same number of back-to-back steps, from the config alone.

    Without ``compile_caches`` each side compiles into fresh, empty folders, removed afterwards.
    With them, each side compiles into its own folder kept across the case's sessions (never the
    other side's): empty in the first session (cold compiles, compared once), reused after."""
    from bench.workloads.workload import config_steps_per_round

    steps = config_steps_per_round(config)
    t0 = time.monotonic()
    workers: dict[str, Any] = {}
    caches: dict[str, str] = {}
    envs: dict[str, dict[str, Any]] = {}
    try:
        zygotes = launchers.get()
        names = list(zygotes)
        rng.shuffle(names)  # who builds first, and who times first, is random
        cold: dict[str, float] = {}
        allocator: dict[str, dict[str, Any]] = {}
        cache_state = "fresh"
        for name in names:
            if compile_caches is None:
                # Fresh, empty compile caches per side and session, as a suite case gets: a side never
                # compiles from what the other side (or an earlier session) left.
                caches[name] = tempfile.mkdtemp(prefix=f"duet-{name}-{index}-")
                cache_root = caches[name]
            else:
                # The side's own cache, kept across this case's sessions: empty in its first one.
                cache_root, cache_state = compile_caches.root(name)
            workers[name] = zygotes[name].fork(tag=f"{name}-{index}", env=fresh_cache_env(cache_root))
            workers[name].deadline = time.monotonic() + timeout_s
        # A session with fresh caches builds one side after the other, so that each side's cold step
        # (a cold compile, for a compiled case) is timed with the machine to itself: that is where the
        # duet compares cold compiles. Later sessions build both sides at once: nothing of a build
        # is judged there, and a compiled case's build from its kept cache (dynamo tracing, the
        # cache lookups: about 2.5 s a side here) is mostly one thread.
        together = cache_state == "reused"
        build = {"config": config, "warmup": warmup, "malloc": malloc, "steps_per_round": steps}
        for name in names if together else ():
            workers[name].send("subject_build", **build)
        for name in names:
            w = workers[name]
            built = w.reply("subject_build") if together else w.request("subject_build", **build)
            cold[name], envs[name] = built["cold_step_s"], built.get("env") or {}
            allocator[name] = built.get("allocator") or {"policy": "default"}
        order = abba(names[0], names[1], rounds)
        samples: dict[str, list[float]] = {n: [] for n in names}
        pace: dict[str, list[float]] = {n: [] for n in names}
        for name in order:
            r = workers[name].request("subject_rounds", n=1, pace=True, pace_after=False, rewarm=rewarm)
            samples[name] += r["samples"]
            pace[name] += r["pace"]
        for name in names:  # each side's closing pace sample: R rounds, R + 1 pace samples
            r = workers[name].request("subject_rounds", n=0, pace=True, pace_after=True)
            pace[name] += r["pace"]
        pids = {n: w.pid for n, w in workers.items()}
    except BaseException:
        launchers.close()  # a failed session leaves no launcher behind for the next
        raise
    finally:
        for w in workers.values():
            if not w.dead:
                w.close()
        for path in caches.values():
            shutil.rmtree(path, ignore_errors=True)
    if compile_caches is not None:
        compile_caches.used()
    return SessionResult(index=index, order=order, samples=samples, pace=pace, cold_s=cold, worker_pids=pids,
                         wall_s=time.monotonic() - t0, rewarm=rewarm, allocator=allocator, env=envs,
                         steps_per_round=steps, compile_cache=cache_state)


def save_side_run(*, storage: Path, name: str, side: DuetSide, config: dict[str, Any], case_id: str,
                  session: SessionResult, estimator: str, stamp: str, sequential: dict | None = None) -> Path:
    """One side's rounds of one session as a pytest-benchmark run, saved through the run record's store
    under the side's machine id (runs under another interpreter land in another folder)."""
    from datetime import datetime, timezone

    from pytest_benchmark import __version__ as pb_version

    from runrecord.samples import benchmark_stats, summarize
    from runrecord.schema import SCHEMA_VERSION, Case, Duet, Isolation, RunRecord, Section
    from bench.workloads.workload import SubjectWorkload
    from runrecord.store import RunStore

    data = session.samples[side.name]
    duet = Duet(
        session=f"{stamp}-{case_id}-{session.index}",
        side=side.name,
        ref=side.ref,
        sha=side.sha,
        estimator=estimator,
        order=session.order,
        rounds_per_side=len(data),
        worker_pid=session.worker_pids[side.name],
        python=side.python,
        session_wall_s=session.wall_s,
        rewarm=session.rewarm,
        allocator=session.allocator.get(side.name, {"policy": "default"}),
        extra={"compile_cache": session.compile_cache, "tag": f"ab-{stamp}",
               **({"sequential": sequential} if sequential else {})},
    )
    case = Case(
        group=f"{config['mode']}-{config['device']}",
        name=f"test_step[{case_id}]",
        fullname=f"bench/test_matrix.py::test_step[{case_id}]",
        params={"case": case_id},
        param=case_id,
        extra_info={
            "config": config,
            "case_id": case_id,
            "kind": SubjectWorkload.kind,
            "step_time_s": summarize(data).median,
            "rounds": len(data),
            "cold_step_s": session.cold_s[side.name],
            "steps_per_round": session.steps_per_round,
            "pace": {"kernel": "mm (the running tool's pace kernel)", "samples": session.pace[side.name]},
            "duet": duet.to_json(),
            "isolation": Isolation(mode="process", worker_pid=session.worker_pids[side.name],
                                   env=session.env.get(side.name) or None).to_json(),
            "warnings": [],
        },
        options={"timer": "perf_counter (in the duet worker)", "rounds": len(data), "warmup_rounds": None,
                 "iterations": 1},
        stats=benchmark_stats(data),
    )
    record = RunRecord(
        machine_info=side.probe["machine_info"],
        commit_info=side.commit_info,
        benchmarks=[case],
        datetime=datetime.now(timezone.utc).isoformat(),
        version=pb_version,
        alexnet=Section(schema_version=SCHEMA_VERSION, preset="ab-duet", rounds=len(data), skipped=[], failed=[],
                        isolation="process", calibration=None),
    )
    return RunStore(storage).save(record, name, machine_id=side.probe["machine_id"])


def collect_cases(tool_root: Path, *, preset: str, keyword: str | None, pytest_args: list[str],
                  python: str) -> list[dict[str, Any]]:
    """The selected cases, as the suite would collect them (-k, axis overrides), with their configs."""
    import json

    out = Path(tempfile.mkstemp(prefix="cases-", suffix=".json")[1])
    try:
        cmd = [python, "-m", "pytest", "bench/", "--collect-only", "-q", "-p", "no:cacheprovider", "--preset", preset,
               f"--alexnet-dump-cases={out}", *(["-k", keyword] if keyword else []), *pytest_args]
        proc = subprocess.run(cmd, cwd=tool_root, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(tool_root)})
        if proc.returncode not in (0, 5):
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["collection failed"]
            raise ValueError(f"selecting cases failed: {tail[0]}")
        return json.loads(out.read_text()) if out.stat().st_size else []
    finally:
        out.unlink(missing_ok=True)


def running_estimate(log_ratios: list[float]) -> str:
    import math
    import statistics

    if not log_ratios:
        return ""
    mean = statistics.fmean(log_ratios)
    if len(log_ratios) < 2:
        return f"x{math.exp(mean):.3f}"
    from scipy import stats

    se = statistics.stdev(log_ratios) / math.sqrt(len(log_ratios))
    half = float(stats.t.ppf(0.975, len(log_ratios) - 1)) * se
    return f"x{math.exp(mean):.3f} (95% CI {math.exp(mean - half):.3f}-{math.exp(mean + half):.3f})"

