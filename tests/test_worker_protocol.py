"""The worker protocol (bench/workers/worker.py): typed requests in a table of handlers, one-line
errors for a bad request; the test-only fault hooks (bench/workers/faults.py), off unless
enabled; the workload types (bench/workloads/workload.py), chosen once from a request."""

from __future__ import annotations

import dataclasses
import os

import pytest

from bench.workers import faults
from bench.workers.launcher import WorkerError, Zygote
from bench.workers.worker import OPS, BadRequest, InProcessWorker, parse_request
from bench.workloads.workload import CaseOptions, LoopWorkload, StepWorkload, SubjectWorkload, workload_for


def test_every_op_has_a_typed_request_and_a_handler() -> None:
    assert set(OPS) == {"probe", "calibrate", "build", "rounds", "timer_check", "telemetry", "finish", "side_probe",
                        "subject_build", "subject_rounds"}
    for op, (request_type, handler) in OPS.items():
        assert dataclasses.is_dataclass(request_type) and callable(handler), op
    req = parse_request("build", {"config": {"batch_size": 2}, "options": {"kind": "loop", "warmup": 0}})
    assert req.options == CaseOptions(kind="loop", warmup=0) and req.options.workload is LoopWorkload
    assert parse_request("telemetry", {"seconds": 5}).seconds == 5.0  # an int where a float is wanted
    assert parse_request("subject_rounds", {"n": 0, "pace_after": True}).rewarm == 0


@pytest.mark.parametrize(("op", "args", "message"), [
    ("bogus", {}, "unknown worker op 'bogus'; valid: probe, calibrate, build"),
    ("rounds", {}, "worker request 'rounds': missing field 'n'"),
    ("rounds", {"n": "3"}, "worker request 'rounds': field 'n' must be int, got str '3'"),
    ("rounds", {"n": True}, "field 'n' must be int, got bool"),
    ("rounds", {"n": 3, "speed": 2}, "worker request 'rounds': unknown field(s) 'speed'; valid: n, pace"),
    ("rounds", {"n": -1}, "n -1 is not valid"),
    ("build", {"config": {}, "options": {"kind": "epoch"}}, "workload kind 'epoch' is not valid; use loop, step"),
    ("build", {"config": {}, "options": {"warmup": "2"}}, "worker request 'build', options: field 'warmup' must be int"),
    ("build", {"config": [1]}, "field 'config' must be dict"),
    ("subject_build", {"config": {}, "malloc": "tcmalloc"}, "malloc 'tcmalloc' is not valid; use default or pinned"),
    ("calibrate", {"device": 0}, "field 'device' must be str, got int 0"),
])
def test_a_bad_request_is_one_line(op: str, args: dict, message: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_request(op, args)
    assert message in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_the_in_process_worker_answers_a_bad_request_with_an_error_reply() -> None:
    w = InProcessWorker()
    with pytest.raises(WorkerError) as exc:
        w.request("rounds", n=1)
    assert exc.value.kind == "error"
    assert str(exc.value) == "BadRequest: worker request 'rounds': no case was built in this worker yet"
    with pytest.raises(WorkerError, match="unknown worker op 'bogus'"):
        w.request("bogus")


def test_a_forked_worker_survives_bad_requests(tmp_path) -> None:
    with Zygote(workdir=tmp_path / "z") as z:
        w = z.fork(tag="protocol")
        for op, args, message in [("bogus", {}, "unknown worker op 'bogus'"),
                                  ("rounds", {"n": "x"}, "field 'n' must be int"),
                                  ("finish", {}, "no case was built")]:
            with pytest.raises(WorkerError) as exc:
                w.request(op, timeout=60, **args)
            assert message in str(exc.value) and "\n" not in str(exc.value)
        # Its stdin is /dev/null, not a pipe of the zygote's nor its own socket: what it starts
        # (inductor's compile workers) inherits nothing on fd 0.
        assert os.readlink(f"/proc/{w.pid}/fd/0") == os.devnull
        w.close()
        assert z.exit_status(w.pid) == {"exit": w.pid, "code": 0, "signal": None}


def test_the_fault_hooks_do_nothing_unless_enabled(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(faults.ENABLE_ENV, raising=False)
    monkeypatch.setenv(faults.CASE_FAULT_ENV, '{"cpu": "exit"}')
    monkeypatch.setenv(faults.REPLY_DELAY_ENV, "3")
    monkeypatch.setenv(faults.MAX_BATCH_FAULT_ENV, "raise:1")
    monkeypatch.setenv(faults.ZYGOTE_DIE_ON_FORK_ENV, "train")
    monkeypatch.setenv(faults.ZYGOTE_PIDFILE_ENV, str(tmp_path / "zygotes"))
    for value in (None, "0", "yes"):
        if value is not None:
            monkeypatch.setenv(faults.ENABLE_ENV, value)
        assert not faults.enabled()
        assert faults.case_fault("train-d2l-b2-65x65-fp32-cpu") is None
        assert faults.leak_seen() is None
        assert faults.reply_delay_s("rounds") == 0.0
        faults.max_batch_fault(8)  # would raise if enabled
        faults.apply_case_fault("exit")  # would end this process if enabled
        faults.apply_case_fault("killzygote")  # would kill this process's parent if enabled
        faults.zygote_fork_fault("train")  # would kill this process if enabled
        faults.zygote_started()  # would write the pid file if enabled
    assert not (tmp_path / "zygotes").exists()
    monkeypatch.setenv(faults.ENABLE_ENV, "1")
    faults.zygote_started()
    assert (tmp_path / "zygotes").read_text() == f"{os.getpid()}\n"
    assert faults.case_fault("train-d2l-b2-65x65-fp32-cpu") == "exit"
    assert faults.case_fault("train-d2l-b2-65x65-fp32-cuda") is None
    assert faults.leak_seen() is False
    assert faults.reply_delay_s("rounds") == 3.0 and faults.reply_delay_s("build") == 0.0
    with pytest.raises(RuntimeError, match="test fault at batch 8"):
        faults.max_batch_fault(8)
    faults.max_batch_fault(1)  # at or below N: nothing
    monkeypatch.setenv(faults.MAX_BATCH_FAULT_ENV, "explode:1")
    with pytest.raises(ValueError, match="is not valid; use ACTION:N"):
        faults.max_batch_fault(8)


def test_workloads_are_types_with_the_saved_kind_strings() -> None:
    from alexnet.config import RunConfig
    from bench.suite.presets import loop_case_id

    assert workload_for("step") is StepWorkload and workload_for("loop") is LoopWorkload
    # The saved extra_info.kind strings (docs/saved-run-format.md) are unchanged.
    assert (StepWorkload.kind, LoopWorkload.kind, SubjectWorkload.kind) == ("step", "loop", "step")
    assert StepWorkload.profiles_layers and not LoopWorkload.profiles_layers
    with pytest.raises(ValueError, match="workload kind 'subject' is not valid; use loop, step"):
        workload_for("subject")
    cfg = RunConfig(device="cpu", batch_size=2, resolution=65, pipeline="dataloader", workers=2)
    assert StepWorkload.case_id(cfg) == cfg.case_id()
    assert LoopWorkload.case_id(cfg) == loop_case_id(cfg) == f"loop-{cfg.case_id()}-dataloader-w2"


def test_a_case_session_chooses_its_workload_once() -> None:
    from alexnet.config import RunConfig
    from bench.workloads.measure import CaseSession

    cfg = RunConfig(device="cpu", batch_size=2, resolution=65, mode="inference")
    s = CaseSession(cfg, CaseOptions(warmup=0, telemetry_interval_s=None, profile_layers=True))
    assert isinstance(s.workload, StepWorkload) and s.case_id == cfg.case_id() and s.profile_layers
    loop = CaseSession(cfg.replace(mode="train"), CaseOptions(kind="loop", profile_layers=True))
    assert isinstance(loop.workload, LoopWorkload) and loop.case_id.startswith("loop-")
    assert not loop.profile_layers  # --profile-layers applies to step cases only


def test_a_duet_side_times_the_same_blocks_of_steps_as_a_suite_case() -> None:
    """Both duet sides get k from the config alone (the suite's rule, read from a plain dict);
    a side's round is k back-to-back steps and one sync, saved per step; its cold step is one."""
    from bench.workloads.subject import SubjectSession
    from bench.workloads.workload import config_steps_per_round

    assert config_steps_per_round({"mode": "inference", "batch_size": 32, "resolution": "224x224",
                                   "device": "cuda"}) == 17  # as bench.workloads.workload.steps_per_round
    assert config_steps_per_round({"mode": "inference", "batch_size": 32, "device": "cpu"}) == 1
    w = InProcessWorker()
    config = {"mode": "inference", "batch_size": 2, "resolution": "65x65", "device": "cpu"}
    built = w.request("subject_build", config=config, warmup=1, steps_per_round=3)
    assert built["cold_step_s"] > 0
    session = w._state.session  # noqa: SLF001 - the in-process worker's case, to count its steps
    assert isinstance(session, SubjectSession) and session.steps_per_round == 3
    steps: list[int] = []
    real = session.workload.subject.step
    session.workload.subject.step = lambda: (steps.append(1), real())
    w.request("subject_rounds", n=2, pace=False)
    assert len(steps) == 6 and len(session.samples) == 2
    with pytest.raises(WorkerError, match="steps_per_round 0"):
        w.request("subject_build", config=config, steps_per_round=0)
