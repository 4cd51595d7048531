"""The suite's side of one case: ask a fresh worker to measure it, replay its rounds, record failures.

The pytest process coordinates and never measures (docs/bench.md, "Every case in its own worker
process"). For each case it:

1. skips what cannot run here, from the machine facts a probe worker gathered (the pytest
   process never touches a CUDA device, so it stays a clean parent);
2. forks a worker from the zygote (`bench.workers.launcher`) with the per-case environment set before
   torch touches a device: ``CUBLAS_WORKSPACE_CONFIG`` for deterministic cases (cuBLAS reads it
   once per process, at the first GEMM: ``Context::alertCuBLASConfigNotDeterministic`` caches
   it in a function-level static), fresh ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR``
   (inductor writes TRITON_CACHE_DIR into os.environ at its first compile; a fresh process with
   empty directories makes ``compile_time_s`` cold by construction), ``CUDA_DEVICE_ORDER``;
3. asks it to build the case, run the timed rounds (one request: the worker times each round
   with its own clock), run the telemetry window, and finish;
4. replays the worker's round times through ``benchmark.pedantic`` with a virtual clock
   (`replay_clock`, given as ``@pytest.mark.benchmark(timer=replay_clock)``) that advances
   only by them, reset to 0 each round: ``stats.data`` holds exactly the worker's times, and
   the saved JSON stays pytest-benchmark's.

A worker that dies or overruns ``--case-timeout`` costs its case only: it is killed with its
process group, recorded in the run's ``alexnet.failed`` list (case id, reason, exit code or
signal, the tail of its stderr), pytest reports the case as failed, and the sweep goes on with
a fresh worker. After `MAX_CONSECUTIVE_DEATHS` deaths in a row the sweep stops (some GPU faults
take the whole device down), and what was measured is still saved.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import pytest

from alexnet.config import RunConfig
from bench.workers.launcher import WorkerDied, WorkerError, ZygoteDied, ZygotePool, fresh_cache_env
from bench.workloads.workload import Workload, steps_per_round
from runrecord.schema import Failure

__all__ = ["MAX_CONSECUTIVE_DEATHS", "CaseRunner", "replay_clock", "replay_rounds"]

MAX_CONSECUTIVE_DEATHS = 3
DEFAULT_CASE_TIMEOUT_S = 900.0
# NVML averages utilisation over 1/6-1 s and Hopper's power over 1 s (docs/measurement-notes.md,
# "NVML"): energy per
# image needs several seconds of steady work. On a CPU the timed rounds are the window.
DEFAULT_CUDA_TELEMETRY_S = 5.0
# On CUDA the warm-up runs for at least this long as well as its rounds: GPU clocks and cuDNN's
# autotuning settle over seconds, not over a count of steps. Untested on GPU.
DEFAULT_CUDA_WARMUP_S = 2.0
ISOLATION_MODES = ("process", "none")


# --- the virtual clock ------------------------------------------------------------------------
_clock = {"now": 0.0, "pending": []}


def replay_clock() -> float:
    """pytest-benchmark's timer for replayed cases: the virtual time, advanced only by `_advance`."""
    return _clock["now"]


def _reset() -> None:
    _clock["now"] = 0.0  # each round starts at 0: end - start is the worker's duration, exactly


def _advance() -> None:
    _clock["now"] += _clock["pending"].pop(0)


def replay_rounds(benchmark: Any, samples: list[float]) -> None:
    """Feed the worker's round times to pytest-benchmark: one pedantic round per sample.

    pytest-benchmark's pedantic loop reads ``timer()`` right before and right after the target
    (fixture.py, ``_make_runner``), after calling ``setup``; with this clock, ``setup`` resets
    the time to 0 and the target advances it by the next sample, so each round's duration is the
    sample itself and nothing of the coordinator's own time (the round trip, pickling) enters.
    """
    if benchmark._timer is not replay_clock:  # noqa: SLF001 - the fixture keeps no public handle
        raise RuntimeError("a replayed case needs @pytest.mark.benchmark(timer=replay_clock) on its test")
    _clock["pending"] = list(samples)
    benchmark.pedantic(_advance, setup=_reset, rounds=len(samples), warmup_rounds=0, iterations=1)
    if _clock["pending"]:
        raise RuntimeError(f"{len(_clock['pending'])} samples were not replayed")


# --- the per-case runner ----------------------------------------------------------------------
def case_env(cfg: RunConfig, cache_root: str) -> dict[str, str]:
    """The environment a case's worker sets before torch touches a device (per case)."""
    env = fresh_cache_env(cache_root)
    if cfg.deterministic:
        # cuBLAS needs a fixed workspace for deterministic GEMMs (CUDA >= 10.2), read once per
        # process at the first GEMM; ":4096:8" is the value PyTorch's reproducibility notes give.
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    return env


class CaseRunner:
    """Runs the cases of one pytest session in fresh workers (or in-process with ``none``)."""

    def __init__(self, *, isolation: str = "process", case_timeout_s: float = DEFAULT_CASE_TIMEOUT_S,
                 telemetry_seconds: float | None = None) -> None:
        if isolation not in ISOLATION_MODES:
            raise ValueError(f"--isolation {isolation!r} is not valid; choose from {', '.join(ISOLATION_MODES)}")
        self.isolation = isolation
        self.case_timeout_s = case_timeout_s
        self.telemetry_seconds = telemetry_seconds
        self.pool = ZygotePool() if isolation == "process" else None
        self.failed: list[dict[str, Any]] = []
        self.notices: list[str] = []  # said once per run (the saved run's alexnet.notices)
        self.consecutive_deaths = 0
        self._probe: dict[str, Any] | None = None
        self._calibrations: dict[str, dict[str, Any]] = {}
        self._tmp = tempfile.mkdtemp(prefix="alexnet-cases-")

    # --- workers ----------------------------------------------------------------------
    def worker(self, *, tag: str, env: dict[str, str] | None = None) -> Any:
        """A fresh worker (`bench.workers.launcher.Worker`), or the in-process stand-in; with its start time."""
        if self.pool is None:
            from bench.workers.worker import InProcessWorker

            saved = {k: os.environ.get(k) for k in (env or {})}
            os.environ.update(env or {})
            w = InProcessWorker()
            w._restore_env = saved  # noqa: SLF001 - put back on close
            return w
        t0 = time.perf_counter()
        w = self.pool.get(os.environ).fork(tag=tag, env=env)
        w.start_s = time.perf_counter() - t0  # from asking for a worker to the worker being ready
        w.deadline = time.monotonic() + self.case_timeout_s
        return w

    def _release(self, w: Any, *, kill: bool = False) -> None:
        """Close (or kill) a worker; an in-process stand-in also puts the environment back."""
        if kill:
            w.kill()
        else:
            w.close()
        for k, v in getattr(w, "_restore_env", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def own_pids(self) -> list[int]:
        pids = [os.getpid()]
        if self.pool is not None and self.pool._zygote is not None:  # noqa: SLF001
            pids.append(self.pool._zygote.pid)  # noqa: SLF001
        return pids

    # --- machine facts and calibration, each gathered in a worker ------------------------
    def probe(self, *, tries: int = 1) -> dict[str, Any]:
        """machine_info and CUDA facts, from a worker: this process never initialises CUDA.

        ``tries`` > 1 asks again, from a fresh zygote, after a `WorkerDied`; the last one's raises."""
        for attempt in range(1, tries + 1):
            if self._probe is not None:
                break
            w = None
            try:
                w = self.worker(tag="probe", env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
                self._probe = w.request("probe", timeout=300)
            except WorkerDied:
                if attempt == tries:
                    raise
            finally:
                if w is not None:
                    self._release(w)
        return self._probe

    def calibration(self, device: str) -> dict[str, Any]:
        """The fp32 GEMM on ``device``, once per run, in a worker of its own."""
        if device not in self._calibrations:
            w = self.worker(tag=f"calibrate-{device}", env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
            try:
                self._calibrations[device] = w.request("calibrate", timeout=300, device=device)
            finally:
                self._release(w)
        return self._calibrations[device]

    @property
    def calibrations(self) -> dict[str, dict[str, Any]]:
        return self._calibrations

    # --- one case -----------------------------------------------------------------------
    def measure(self, cfg: RunConfig, *, case_id: str, workload: type[Workload], options: dict[str, Any],
                rounds: int, telemetry_seconds: float | None = None, timer_check: bool = False) -> dict[str, Any]:
        """Build, time and finish one case in a fresh worker; returns samples, extra_info, isolation.

        ``telemetry_seconds`` overrides the run's window for this case; ``timer_check`` adds the
        worker's ``timer_check`` request after the timed rounds (`pytest bench/ --cases` rows).

        Raises `WorkerError` (the worker reported an exception: oom, unsupported, fatal, error)
        or `WorkerDied` (it died, or overran the case timeout and was killed).
        """
        t_case = time.perf_counter()
        cache_root = tempfile.mkdtemp(prefix="case-", dir=self._tmp)
        w = self.worker(tag=case_id, env=case_env(cfg, cache_root))
        try:
            built = w.request("build", config=cfg.flat(), options={**options, "case_id": case_id, "kind": workload.kind,
                                                                   "own_pids": self.own_pids()})
            timed = w.request("rounds", n=rounds, pace=True)
            if timer_check:
                w.request("timer_check")
            window = None
            seconds = self.telemetry_seconds if telemetry_seconds is None else telemetry_seconds
            if seconds is None:
                seconds = DEFAULT_CUDA_TELEMETRY_S if cfg.is_cuda else 0.0
            if seconds > 0:
                window = w.request("telemetry", seconds=seconds)
            extra = w.request("finish")
        except BaseException:
            self._release(w, kill=not getattr(w, "dead", False))
            raise
        finally:
            shutil.rmtree(cache_root, ignore_errors=True)
        t_close = time.perf_counter()
        self._release(w)
        close_s = time.perf_counter() - t_close
        isolation: dict[str, Any] = {"mode": "none"} if self.pool is None else {
            "mode": "process", "worker_pid": w.pid, "worker_start_s": w.start_s, "step_pid": built["step_pid"],
            "zygote_pid": self.pool._zygote.pid if self.pool._zygote else None,  # noqa: SLF001
            # What isolation costs a case: asking for a worker until it is ready, building the
            # case (model, batch, pace buffers; not the cold step), and the worker's exit.
            "fixed_cost_s": w.start_s + built["build_s"] + close_s,
            "zygote_start_s": self.pool._zygote.start_s if self.pool._zygote else None,  # noqa: SLF001
        }
        if self.pool is None:
            isolation["step_pid"] = built["step_pid"]
        isolation["env"] = built.get("env")
        isolation["cuda_initialized_before_build"] = built.get("cuda_initialized_before_build")
        if "test_leak_seen" in built:
            isolation["test_leak_seen"] = built["test_leak_seen"]
        extra["isolation"] = isolation
        # The case's whole cost in wall time, from asking for its worker to the worker's exit:
        # what a sweep plan learns per case and machine (cold compile, warm-up, rounds, window).
        extra["case_wall_s"] = time.perf_counter() - t_case
        if window is not None:
            extra["telemetry_window"] = {**window, "what": "back-to-back steps after the timed rounds"}
        return {"samples": timed["samples"], "extra": extra}

    def record_failure(self, *, node: Any, cfg: RunConfig, case_id: str, exc: WorkerDied) -> dict[str, Any]:
        rec = Failure.from_json({"name": node.name, "fullname": node.nodeid, "case_id": case_id, "config": cfg.flat(),
                                 **exc.record()}).to_json()
        self.failed.append(rec)
        return rec

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def note_once(notices: list[str], lines: list[str]) -> None:
    """Add each line not said yet this run, and say it now (once per run, not once per case)."""
    import sys

    for line in lines:
        if line not in notices:
            notices.append(line)
            print(f"\nalexnet-bench: {line}", file=sys.stderr, flush=True)


def run_case(benchmark: Any, cfg: RunConfig, *, workload: type[Workload], bench_session: Any, node: Any,
             case_id: str | None = None) -> None:
    """One case of the matrix, the way the sweep needs it (test_matrix.py, test_loop.py).

    - unsupported here: skipped with its reason, recorded in ``alexnet.skipped``;
    - out of memory: skipped and recorded, the sweep goes on;
    - the worker reported a fatal device error, died or timed out: recorded in
      ``alexnet.failed``, the case fails, the sweep goes on with a fresh worker, and stops
      after `MAX_CONSECUTIVE_DEATHS` in a row;
    - any other exception in the worker: the case fails with the worker's traceback.

    ``workload`` is what the case times (`bench.workloads.workload`); ``case_id`` defaults to its id.
    """
    from alexnet.support import unsupported_reason  # torch-free: the coordinator never imports torch

    rows = getattr(bench_session, "rows", None) or {}
    if case_id is None and rows:  # --cases: the row's id, its label included
        case_id = node.callspec.id
    row = rows.get(case_id) if case_id is not None else None
    case_id = case_id or workload.case_id(cfg)
    runner: CaseRunner = bench_session.runner
    try:
        # The probe and the calibration run in workers too: a zygote that cannot start, or dies,
        # costs this case (recorded below as a failure), never the run.
        facts = runner.probe()["cuda"] if cfg.is_cuda else None
        reason = unsupported_reason(cfg, allow_emulated_bf16=bench_session.allow_emulated_bf16, cuda_facts=facts,
                                    import_torchvision=False)
        if reason:
            bench_session.record_skip(node, cfg, reason)
            pytest.skip(reason)
        gpu_name = None
        if cfg.is_cuda:
            idx = int(cfg.device.split(":")[1]) if ":" in cfg.device else 0
            gpu_name = facts["devices"][idx]["name"]
            runner.calibration(cfg.device)  # run-level record of the device's speed today
        cpu_cal = runner.calibration("cpu") if not cfg.is_cuda else None
        options = {"warmup": bench_session.warmup, "telemetry_interval_s": bench_session.telemetry_interval_s,
                   "profile_layers": bench_session.profile_layers and workload.profiles_layers,
                   "allow_emulated_bf16": bench_session.allow_emulated_bf16, "cpu_calibration": cpu_cal,
                   "gpu_name": gpu_name,
                   "steps_per_round": steps_per_round(cfg, bench_session.steps_per_round, kind=workload.kind),
                   "warmup_min_s": DEFAULT_CUDA_WARMUP_S if cfg.is_cuda else 0.0,
                   "correctness": row.correctness if row and row.correctness is not None else bench_session.correctness}
        out = runner.measure(cfg, case_id=case_id, workload=workload, options=options, rounds=bench_session.rounds,
                             telemetry_seconds=row.telemetry_seconds if row else None,
                             timer_check=bool(row and row.timer_check))
    except WorkerDied as exc:  # the case's worker, or the zygote that forks it (ZygoteDied)
        benchmark.has_error = True
        runner.consecutive_deaths += 1
        runner.record_failure(node=node, cfg=cfg, case_id=case_id, exc=exc)
        if runner.consecutive_deaths >= MAX_CONSECUTIVE_DEATHS:
            pytest.exit(f"{runner.consecutive_deaths} case workers died in a row (last: {case_id}: {exc.reason}); "
                        "stopping the sweep, the cases measured so far are saved", returncode=1)
        which = "zygote" if isinstance(exc, ZygoteDied) else "worker"
        pytest.fail(f"{case_id}: {exc.reason} ({which}_pid={exc.pid})\n--- {which} log (tail) ---\n{exc.log_tail}",
                    pytrace=False)
    except WorkerError as exc:
        benchmark.has_error = True
        if exc.kind == "unsupported":
            bench_session.record_skip(node, cfg, str(exc).split(": ", 1)[-1])
            pytest.skip(str(exc))
        if exc.kind == "oom":
            reason = f"out of memory: {str(exc).splitlines()[0]}"
            bench_session.record_skip(node, cfg, reason)
            pytest.skip(reason)
        if exc.kind == "fatal":
            died = WorkerDied(f"unrecoverable device error: {exc}", pid=-1, code=None, signal_=None,
                              log_tail=exc.traceback_text[-4000:])
            runner.consecutive_deaths += 1
            runner.record_failure(node=node, cfg=cfg, case_id=case_id, exc=died)
            if runner.consecutive_deaths >= MAX_CONSECUTIVE_DEATHS:
                pytest.exit(f"{runner.consecutive_deaths} fatal device errors in a row; stopping the sweep", returncode=1)
            pytest.fail(f"{case_id}: {died.reason}", pytrace=False)
        pytest.fail(f"{case_id}: the worker raised {exc}\n{exc.traceback_text}", pytrace=False)
    runner.consecutive_deaths = 0
    note_once(runner.notices, out["extra"].get("foreign_notices") or [])
    foreign = out["extra"].get("foreign_warnings") or []
    if bench_session.strict_isolation and foreign:
        benchmark.has_error = True
        reason = "foreign load during the rounds (--strict-isolation): " + "; ".join(foreign)
        runner.failed.append(Failure(name=node.name, fullname=node.nodeid, case_id=case_id, config=cfg.flat(),
                                     reason=reason, worker_pid=out["extra"]["isolation"].get("worker_pid")).to_json())
        pytest.fail(f"{case_id}: {reason}", pytrace=False)
    replay_rounds(benchmark, out["samples"])
    benchmark.extra_info.update(out["extra"])
