"""The case worker: one process, one case. It builds the case, then runs what the coordinator asks.

Requests are plain dicts (``{"op": ..., **args}``) and so are the replies
(``{"ok": True, "result": ...}`` or ``{"ok": False, "kind": ..., "message": ..., "traceback":
...}``); no tensor or module ever crosses. Each op has a typed request (a small dataclass below,
parsed from the dict by `parse_request`: an unknown op, a missing, unknown or mistyped field is
a one-line error reply) and a handler, in the table `OPS`:

- ``probe`` (`Probe`): the machine's description (`bench.instruments.envinfo.machine_info`) and
  the CUDA facts the coordinator needs to skip unsupported cases without touching a device itself;
- ``calibrate`` (`Calibrate`): the fp32 GEMM of `bench.instruments.mfu.calibrate` on a device;
- ``build`` (`Build`): build one case (`bench.workloads.measure.CaseSession`): model, batch, cold
  step, warm-up; its ``options`` are a `bench.workloads.workload.CaseOptions`, whose ``kind``
  chooses the workload type;
- ``rounds`` (`Rounds`): ``n`` timed rounds, each with its pace sample; the durations are this
  process's own clock readings around each round, so the round trip to the coordinator
  never enters them;
- ``timer_check`` (`TimerCheck`): the suite's blocked rounds against ``torch.utils.benchmark.Timer``,
  interleaved, apart from the case's samples (``pytest bench/ --cases`` rows with ``timer_check``);
- ``telemetry`` (`Telemetry`): back-to-back steps for a window long enough for NVML (CUDA);
- ``finish`` (`Finish`): memory, telemetry, foreign load, profile, correctness: the case's extra_info;
- ``exit``.

A duet side (`bench.duet.session`, ``alexnet-bench ab``) uses three more: ``side_probe``
(`SideProbe`: this interpreter's pytest-benchmark machine_info and machine id, the subject's
location and API version), ``subject_build`` (`SubjectBuild`: ``malloc="pinned"`` first fixes
glibc's malloc thresholds, `bench.instruments.allocator`; then the ref's
`alexnet.subject.build`, the cold step and the warm-up, with this tool's clock;
`bench.workloads.subject`) and ``subject_rounds`` (`SubjectRounds`: timed rounds of it, each
with its pace sample and ``rewarm`` untimed steps just before it; ``pace_after`` closes the
series). Only `alexnet.subject` comes from the ref.

`InProcessWorker` answers the same requests in the calling process (``--isolation none``,
for debugging): same code, no isolation.

The test-only fault hooks (kill, hang, exit, leak, a delayed reply) are in
`bench.workers.faults`, and do nothing unless ``ALEXNET_BENCH_TEST_FAULTS=1`` is set.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from bench.workers import faults
from bench.workloads.workload import CaseOptions

__all__ = ["OPS", "BadRequest", "InProcessWorker", "handle", "parse_request", "serve"]

# What a case's worker reports of its environment at build time (bench.suite.runner.case_env sets them).
CASE_ENV_KEYS = ("CUBLAS_WORKSPACE_CONFIG", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_DEVICE_ORDER")


class BadRequest(ValueError):
    """A request this worker cannot parse: an unknown op, or a missing, unknown or mistyped field."""


# --- typed requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    pass


@dataclass(frozen=True)
class Calibrate:
    device: str


@dataclass(frozen=True)
class Build:
    config: dict[str, Any]
    options: CaseOptions = field(default_factory=CaseOptions)


@dataclass(frozen=True)
class Rounds:
    n: int
    pace: bool = True

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n {self.n} is not valid; it must be >= 0")


@dataclass(frozen=True)
class TimerCheck:
    pairs: int = 10
    min_run_time: float = 0.05

    def __post_init__(self) -> None:
        if self.pairs < 1 or not self.min_run_time > 0:
            raise ValueError(f"pairs {self.pairs} / min_run_time {self.min_run_time} are not valid; "
                             "pairs must be >= 1 and min_run_time > 0")


@dataclass(frozen=True)
class Telemetry:
    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"seconds {self.seconds} is not valid; it must be > 0")


@dataclass(frozen=True)
class Finish:
    pass


@dataclass(frozen=True)
class SideProbe:
    pass


@dataclass(frozen=True)
class SubjectBuild:
    config: dict[str, Any]
    warmup: int = 2
    malloc: str = "default"
    steps_per_round: int = 1  # the coordinator's, from the config (bench.workloads.workload.config_steps_per_round)

    def __post_init__(self) -> None:
        if self.malloc not in ("default", "pinned"):
            raise ValueError(f"malloc {self.malloc!r} is not valid; use default or pinned")
        if self.warmup < 0 or self.steps_per_round < 1:
            raise ValueError(f"warmup {self.warmup} / steps_per_round {self.steps_per_round} are not valid; "
                             "warmup must be >= 0 and steps_per_round >= 1")


@dataclass(frozen=True)
class SubjectRounds:
    n: int
    pace: bool = True
    pace_after: bool = False
    rewarm: int = 0

    def __post_init__(self) -> None:
        if self.n < 0 or self.rewarm < 0:
            raise ValueError(f"n {self.n} / rewarm {self.rewarm} are not valid; both must be >= 0")


def _fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` (plain data off the wire) has type ``tp`` (a field's resolved annotation)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (dict, tp))
    tp = origin or tp
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse(cls: type, data: dict[str, Any], where: str) -> Any:
    """``cls(**data)`` after checking every field; BadRequest (one line) otherwise."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadRequest(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(fields) or 'none'}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadRequest(f"{where}: missing field {name!r}")
            continue
        value, tp = data[name], hints[name]
        if not _fits(value, tp):
            raise BadRequest(f"{where}: field {name!r} must be {_type_name(tp)}, got {type(value).__name__} {value!r:.60}")
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = _parse(tp, value, f"{where}, {name}")
        elif tp is float and isinstance(value, int):
            value = float(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{where}: {exc}") from None


# --- handlers -----------------------------------------------------------------------------------


class _State:
    session: Any = None


def _need_session(state: _State, op: str) -> Any:
    if state.session is None:
        raise BadRequest(f"worker request {op!r}: no case was built in this worker yet")
    return state.session


def _probe(state: _State, req: Probe) -> dict[str, Any]:
    from bench.instruments.envinfo import machine_info
    from bench.workloads.measure import cuda_facts

    return {"machine_info": machine_info(), "cuda": cuda_facts(), "pid": os.getpid()}


def _calibrate(state: _State, req: Calibrate) -> dict[str, Any]:
    from bench.instruments.mfu import calibrate

    return calibrate(req.device)


def _build(state: _State, req: Build) -> dict[str, Any]:
    import torch

    from alexnet.config import RunConfig
    from bench.workloads.measure import CaseSession

    # Evidence that the per-case settings were in place before torch touched a device.
    seen: dict[str, Any] = {"env": {k: os.environ.get(k) for k in CASE_ENV_KEYS},
                            "cuda_initialized_before_build": bool(torch.cuda.is_initialized())}
    state.session = CaseSession(RunConfig.from_flat(req.config), req.options)
    result = {**state.session.build(), **seen}
    leak = faults.leak_seen()
    if leak is not None:
        result["test_leak_seen"] = leak
    return result


def _rounds(state: _State, req: Rounds) -> dict[str, Any]:
    session = _need_session(state, "rounds")
    action = faults.case_fault(session.case_id)
    if action and not session.samples:
        faults.apply_case_fault(action)
    return session.rounds(req.n, pace=req.pace)


def _timer_check(state: _State, req: TimerCheck) -> dict[str, Any]:
    return _need_session(state, "timer_check").timer_check(req.pairs, req.min_run_time)


def _telemetry(state: _State, req: Telemetry) -> dict[str, Any]:
    return _need_session(state, "telemetry").telemetry_window(req.seconds)


def _finish(state: _State, req: Finish) -> dict[str, Any]:
    return _need_session(state, "finish").finish()


def _side_probe(state: _State, req: SideProbe) -> dict[str, Any]:
    """This interpreter's machine description, as a saved run records it, and where the subject is."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_machine_id

    import alexnet
    from bench.instruments.envinfo import machine_info

    info = pytest_benchmark_generate_machine_info()
    info.update(machine_info())
    try:
        import alexnet.subject as subject_mod

        api = getattr(subject_mod, "API_VERSION", None)
    except ImportError:
        api = None
    return {"machine_info": info, "machine_id": get_machine_id(), "alexnet_dir": os.path.dirname(alexnet.__file__),
            "subject_api": api, "pid": os.getpid()}


def _subject_build(state: _State, req: SubjectBuild) -> dict[str, Any]:
    from bench.workloads.subject import SubjectSession

    allocator: dict[str, Any] = {"policy": "default"}
    if req.malloc == "pinned":  # before the subject allocates anything
        from bench.instruments.allocator import pin_malloc

        allocator = pin_malloc()
    state.session = SubjectSession(req.config, warmup=req.warmup, steps_per_round=req.steps_per_round)
    return {"cold_step_s": state.session.cold_s, "worker_pid": os.getpid(), "allocator": allocator,
            "env": {k: os.environ.get(k) for k in CASE_ENV_KEYS},
            "subject_file": state.session.subject_file, "api_version": state.session.api_version,
            "pace_kernel": state.session.pace.record()["kernel"]}


def _subject_rounds(state: _State, req: SubjectRounds) -> dict[str, Any]:
    return _need_session(state, "subject_rounds").rounds(req.n, pace=req.pace, pace_after=req.pace_after,
                                                         rewarm=req.rewarm)


# op -> (its request type, its handler).
OPS: dict[str, tuple[type, Callable[[_State, Any], Any]]] = {
    "probe": (Probe, _probe),
    "calibrate": (Calibrate, _calibrate),
    "build": (Build, _build),
    "rounds": (Rounds, _rounds),
    "timer_check": (TimerCheck, _timer_check),
    "telemetry": (Telemetry, _telemetry),
    "finish": (Finish, _finish),
    "side_probe": (SideProbe, _side_probe),
    "subject_build": (SubjectBuild, _subject_build),
    "subject_rounds": (SubjectRounds, _subject_rounds),
}


def parse_request(op: Any, args: dict[str, Any]) -> Any:
    """The typed request for ``op`` with ``args``; BadRequest (one line) if it is not one."""
    if op not in OPS:
        raise BadRequest(f"unknown worker op {op!r}; valid: {', '.join(OPS)}, exit")
    return _parse(OPS[op][0], args, f"worker request {op!r}")


def handle(state: _State, op: str, args: dict[str, Any]) -> Any:
    """Answer one request. Raises on failure; `serve` turns that into an error reply."""
    req = parse_request(op, args)
    return OPS[op][1](state, req)


def _classify(exc: BaseException) -> str:
    from bench.workers.proc import classify_failure

    # Not imported here: a duet side must not import the tool's model (bench.workloads.subject),
    # and where the module was never imported, exc cannot be one of its exceptions.
    measure = sys.modules.get("bench.workloads.measure")
    if measure is not None and isinstance(exc, measure.UnsupportedCase):
        return "unsupported"
    return classify_failure(exc)


def _reply(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    msg = dict(msg)
    op = msg.pop("op", None)
    try:
        return {"ok": True, "result": handle(state, op, msg)}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the coordinator, classified
        return {"ok": False, "kind": _classify(exc), "message": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def serve(conn: Any, *, tag: str = "", forked_at: float | None = None) -> int:
    """The worker's loop: hello, then one reply per request until ``exit`` or EOF. Returns the exit code."""
    conn.send({"pid": os.getpid(), "tag": tag, "pgid": os.getpgid(0),
               "fork_to_hello_s": (time.time() - forked_at) if forked_at else None})
    state = _State()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return 0
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "exit":
            return 0
        reply = _reply(state, msg) if isinstance(msg, dict) else {
            "ok": False, "kind": "error", "message": f"BadRequest: a request is a dict, got {type(msg).__name__}",
            "traceback": ""}
        delay = faults.reply_delay_s(op)
        if delay:
            time.sleep(delay)
        conn.send(reply)
        if not reply["ok"] and reply["kind"] == "fatal":
            return 4  # the device state is lost: this worker must not be used again


class InProcessWorker:
    """``--isolation none``: the same requests answered in this process (for debugging)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.start_s = 0.0
        self.deadline: float | None = None
        self._state = _State()

    def request(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        from bench.workers.launcher import WorkerError

        reply = _reply(self._state, {"op": op, **args})
        if reply["ok"]:
            return reply["result"]
        raise WorkerError(reply["kind"], reply["message"], reply["traceback"])

    def close(self) -> None:
        if self._state.session is not None:
            self._state.session.close()
        self._state = _State()

    def kill(self) -> None:
        self.close()
