"""The case worker: one process, one case. It builds the case, then runs what the coordinator asks.

Requests are plain dicts (``{"op": ..., **args}``) and so are the replies
(``{"ok": True, "result": ...}`` or ``{"ok": False, "kind": ..., "message": ..., "traceback":
...}``); no tensor or module ever crosses. The ops:

- ``probe``: the machine's description (`bench.instruments.envinfo.machine_info`) and the CUDA facts the
  coordinator needs to skip unsupported cases without touching a device itself;
- ``calibrate``: the fp32 GEMM of `bench.instruments.mfu.calibrate` on a device;
- ``build``: build one case (`bench.workloads.measure.CaseSession`): model, batch, cold step, warm-up;
- ``rounds``: ``n`` timed rounds, each with its pace sample; the durations are this
  process's own clock readings around each round, so the round trip to the coordinator
  never enters them;
- ``telemetry``: back-to-back steps for a window long enough for NVML (CUDA);
- ``finish``: memory, telemetry, foreign load, profile, correctness: the case's extra_info;
- ``exit``.

A duet side (`bench.duet.session`, ``alexnet-bench ab``) uses three more: ``side_probe`` (this
interpreter's pytest-benchmark machine_info and machine id, the subject's location and API
version), ``subject_build`` (``malloc="pinned"`` first fixes glibc's malloc thresholds,
`bench.instruments.allocator`; then the ref's `alexnet.subject.build`, the cold step and the warm-up, with
this tool's clock) and ``subject_rounds`` (timed rounds of it, each with its pace sample and
``rewarm`` untimed steps just before it; ``pace_after`` closes the series). Only
`alexnet.subject` comes from the ref.

`InProcessWorker` answers the same requests in the calling process (``--isolation none``,
for debugging): same code, no isolation.

Test-only fault hooks (documented in docs/bench.md): ``ALEXNET_BENCH_TEST_FAULT`` holds a JSON
object mapping a substring of a case id to an action taken at the start of that case's
rounds: ``"kill"`` (the worker SIGKILLs itself), ``"hang"`` (it sleeps forever, in a process
group with a child that sleeps too; with ``ALEXNET_BENCH_TEST_PIDFILE`` set it first writes its
pid there, so a test can kill it from outside), ``"exit"`` (``os._exit(3)``), ``"leak"`` (a
module-level global is set and 500 MB allocated and kept). Every case of a run with the
variable set reports ``isolation.test_leak_seen``: whether it saw such a global.
``ALEXNET_BENCH_TEST_REPLY_DELAY_S`` makes the worker wait that long before replying to each
``rounds`` request (the round trip must stay out of the saved rounds). The hooks exist so the tests can kill, hang and
slow real workers; nothing sets them otherwise.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from typing import Any

__all__ = ["FAULT_ENV", "InProcessWorker", "handle", "serve"]

FAULT_ENV = "ALEXNET_BENCH_TEST_FAULT"
PIDFILE_ENV = "ALEXNET_BENCH_TEST_PIDFILE"
REPLY_DELAY_ENV = "ALEXNET_BENCH_TEST_REPLY_DELAY_S"
# What a case's worker reports of its environment at build time (bench.suite.runner.case_env sets them).
CASE_ENV_KEYS = ("CUBLAS_WORKSPACE_CONFIG", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_DEVICE_ORDER")
LEAK_BYTES = 500 * 2**20

# Set by the "leak" fault hook: a later case in the same process would see it.
_TEST_LEAK: bytearray | None = None


class _State:
    session: Any = None


class SubjectSession:
    """A duet side's case: the ref's subject, timed by this tool's rounds and pace kernel."""

    def __init__(self, config: dict[str, Any], *, warmup: int) -> None:
        import alexnet.subject as subject_mod

        from bench.instruments.timing import PaceKernel, cold_step_time, synchronize, warm_up

        self.subject = subject_mod.build(config)
        self.case_id = self.subject.case_id
        device = self.subject.device

        def round_() -> None:
            self.subject.step()
            synchronize(device)

        self.round = round_
        self.pace = PaceKernel(device)
        self.cold_s = cold_step_time(round_, device=device)
        warm_up(round_, rounds=warmup)
        self.samples: list[float] = []
        self.api_version = getattr(subject_mod, "API_VERSION", None)
        self.subject_file = subject_mod.__file__

    def rounds(self, n: int, *, pace: bool = True, pace_after: bool = True, rewarm: int = 0) -> dict[str, Any]:
        from bench.instruments.timing import timed_rounds

        before = len(self.pace.samples)
        out = timed_rounds(self.round, n, pace=self.pace if pace else None, pace_after=pace_after, rewarm=rewarm)
        self.samples.extend(out)
        return {"samples": out, "pace": self.pace.samples[before:]}


def _classify(exc: BaseException) -> str:
    from bench.workers.proc import classify_failure
    from bench.workloads.measure import UnsupportedCase

    if isinstance(exc, UnsupportedCase):
        return "unsupported"
    return classify_failure(exc)


def _fault(case_id: str) -> str | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    for needle, action in json.loads(spec).items():
        if needle in case_id:
            return action
    return None


def _apply_fault(action: str) -> None:
    global _TEST_LEAK
    import signal
    import subprocess
    import sys

    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(3)
    elif action == "hang":
        if os.environ.get(PIDFILE_ENV):
            with open(os.environ[PIDFILE_ENV], "w") as fh:
                fh.write(str(os.getpid()))
        # A child in the same process group: the coordinator's kill must reach it too.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        while True:
            time.sleep(3600)
    elif action == "leak":
        _TEST_LEAK = bytearray(LEAK_BYTES)
        _TEST_LEAK[:: 4096] = b"x" * len(range(0, LEAK_BYTES, 4096))  # touch every page: real RSS


def handle(state: _State, op: str, args: dict[str, Any]) -> Any:
    """Answer one request. Raises on failure; `serve` turns that into an error reply."""
    if op == "probe":
        from bench.instruments.envinfo import machine_info
        from bench.workloads.measure import cuda_facts

        return {"machine_info": machine_info(), "cuda": cuda_facts(), "pid": os.getpid()}
    if op == "calibrate":
        from bench.instruments.mfu import calibrate

        return calibrate(args["device"])
    if op == "build":
        import torch

        from alexnet.config import RunConfig
        from bench.workloads.measure import CaseSession

        # Evidence that the per-case settings were in place before torch touched a device.
        seen = {"env": {k: os.environ.get(k) for k in CASE_ENV_KEYS},
                "cuda_initialized_before_build": bool(torch.cuda.is_initialized())}
        cfg = RunConfig.from_flat(args["config"])
        state.session = CaseSession(cfg, **args["options"])
        result = {**state.session.build(), **seen}
        if os.environ.get(FAULT_ENV):
            result["test_leak_seen"] = _TEST_LEAK is not None
        return result
    if op == "side_probe":
        return _side_probe()
    if op == "subject_build":
        allocator: dict[str, Any] = {"policy": "default"}
        if args.get("malloc", "default") == "pinned":  # before the subject allocates anything
            from bench.instruments.allocator import pin_malloc

            allocator = pin_malloc()
        state.session = SubjectSession(args["config"], warmup=int(args.get("warmup", 2)))
        return {"cold_step_s": state.session.cold_s, "worker_pid": os.getpid(), "allocator": allocator,
                "subject_file": state.session.subject_file, "api_version": state.session.api_version,
                "pace_kernel": state.session.pace.record()["kernel"]}
    if op == "subject_rounds":
        return state.session.rounds(int(args["n"]), pace=bool(args.get("pace", True)),
                                    pace_after=bool(args.get("pace_after", False)), rewarm=int(args.get("rewarm", 0)))
    if op == "rounds":
        action = _fault(state.session.case_id)
        if action and not state.session.samples:
            _apply_fault(action)
        return state.session.rounds(int(args["n"]), pace=bool(args.get("pace", True)))
    if op == "telemetry":
        return state.session.telemetry_window(float(args["seconds"]))
    if op == "finish":
        extra = state.session.finish()
        return extra
    raise ValueError(f"unknown worker op {op!r}")


def _side_probe() -> dict[str, Any]:
    """This interpreter's machine description, as a saved run records it, and where the subject is."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_machine_id

    import alexnet
    from bench.instruments.envinfo import machine_info
    from runrecord.schema import suite_machine_info

    info = suite_machine_info(pytest_benchmark_generate_machine_info(), machine_info())
    try:
        import alexnet.subject as subject_mod

        api = getattr(subject_mod, "API_VERSION", None)
    except ImportError:
        api = None
    return {"machine_info": info, "machine_id": get_machine_id(), "alexnet_dir": os.path.dirname(alexnet.__file__),
            "subject_api": api, "pid": os.getpid()}


def _reply(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    op = msg.pop("op")
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
        if msg.get("op") == "exit":
            return 0
        op = msg.get("op")
        reply = _reply(state, msg)
        if op == "rounds" and os.environ.get(REPLY_DELAY_ENV):
            time.sleep(float(os.environ[REPLY_DELAY_ENV]))
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
