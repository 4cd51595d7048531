"""The correctness check of every benchmark case, and the failure classification."""

from __future__ import annotations

import pytest
import torch

from alexnet.config import RunConfig
from bench.workers.proc import is_fatal_device_error, is_oom
from alexnet.runtime import StepRunner, backend_switches
from bench.workloads.measure import correctness_check


def _runner_and_weights(cfg: RunConfig):
    runner = StepRunner.build(cfg)
    weights = {k: v.detach().clone() for k, v in runner.eager_model.state_dict().items()}
    x, y = runner.random_batch()
    return runner, weights, x, y


def test_train_case_is_compared_with_its_initial_weights() -> None:
    cfg = RunConfig(batch_size=2, resolution=(65, 65), device="cpu", lr=0.5)
    with backend_switches(cfg):
        runner, weights, x, y = _runner_and_weights(cfg)
        for _ in range(3):  # the timed rounds update the weights (large lr: they really move)
            runner.step(x, y)
        moved = max((runner.eager_model.state_dict()[k] - w).abs().max().item() for k, w in weights.items())
        assert moved > 0
        c = correctness_check(runner, weights, x, y)
    assert c["reference"] == "fp32 eager"
    assert c["loss_rel_diff"] == 0.0 and c["max_abs_logits_diff"] == 0.0
    assert c["correctness_compile_s"] is None  # eager: nothing compiled for the check
    assert runner.eager_model.training  # the check restores train mode


def test_no_correctness_skips_the_check_and_says_so() -> None:
    from bench.workloads.measure import CaseSession
    from bench.workloads.workload import CaseOptions

    cfg = RunConfig(mode="inference", batch_size=2, resolution=(65, 65), device="cpu")
    session = CaseSession(cfg, CaseOptions(correctness=False, telemetry_interval_s=None))
    try:
        session.build()
        session.rounds(10)
        extra = session.finish()
    finally:
        session.close()
    assert extra["correctness"] == {"skipped": "--no-correctness"}


def test_low_precision_case_shows_a_difference() -> None:
    """bf16 autocast must not read as identical to fp32: the check can see a changed config."""
    cfg = RunConfig(mode="inference", batch_size=2, resolution=(65, 65), device="cpu", amp="bf16")
    with backend_switches(cfg):
        runner, weights, x, y = _runner_and_weights(cfg)
        c = correctness_check(runner, weights, x, y)
    assert c["max_abs_logits_diff"] > 1e-5
    assert c["loss_rel_diff"] < 0.1  # different, but not broken


def test_failure_classification() -> None:
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert is_fatal_device_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_fatal_device_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_fatal_device_error(torch.OutOfMemoryError("CUDA out of memory"))


def test_a_cuda_graph_case_reports_the_reserved_peak_as_a_memory_kind_of_its_own(monkeypatch) -> None:
    """The mechanism, with torch.cuda's peak counters stubbed (untested on GPU): a reduce-overhead
    case's private graph pool is not in the allocated peak, so its figure is the reserved one."""
    from types import SimpleNamespace

    from bench.workloads.measure import CaseSession

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1000 + 10)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 5000 + 10)
    for compile_mode, kind, peak in (("reduce-overhead", "cuda_max_reserved_cudagraphs", 5000),
                                     ("default", "cuda_max_allocated", 1000)):
        session = CaseSession(RunConfig(device="cuda", batch_size=8, compile=compile_mode))
        session.pace = SimpleNamespace(nbytes=10)
        mem = session._memory()
        assert (mem["memory_kind"], mem["peak_memory_bytes"]) == (kind, peak)
        assert (mem["peak_memory_allocated_bytes"], mem["peak_memory_reserved_bytes"]) == (1000, 5000)



def _eager_backend_compile(monkeypatch):
    """torch.compile with dynamo's ``eager`` backend: dynamo still traces, guards and counts every
    graph (what decides a recompile: the training flag, grad mode), but runs the captured graph
    without inductor's code generation, so a compiled case costs seconds here, not a minute."""
    real = torch.compile

    def compile_eager(model, mode=None, **kw):
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_eager)


def _compiled_case(mode: str, correctness: bool):
    import torch._dynamo

    from bench.workloads.measure import CaseSession
    from bench.workloads.workload import CaseOptions

    torch._dynamo.reset()
    cfg = RunConfig(mode=mode, batch_size=2, resolution=(65, 65), device="cpu", compile="default")
    session = CaseSession(cfg, CaseOptions(warmup=2, correctness=correctness, telemetry_interval_s=None))
    try:
        session.build()
        session.rounds(3)
        return session.finish()
    finally:
        session.close()


@pytest.mark.slow
def test_a_compiled_case_compiles_its_timed_path_once_and_the_check_apart(monkeypatch) -> None:
    """Dynamo's graphs over a case's whole life: the timed path (cold step, warm-up, rounds) is
    one graph; a train case's correctness check (its forward under eval() and inference_mode)
    fails the guards on the training flag and grad mode and compiles a second one, whose time is
    the check's own figure; an inference case already steps in eval mode under inference_mode,
    so its check compiles nothing more."""
    _eager_backend_compile(monkeypatch)
    train = _compiled_case("train", correctness=True)
    assert train["compiled_graphs"] == {"timed_path": 1, "worker_total": 2}
    assert train["correctness"]["correctness_compile_s"] > 0 and train["compile_time_s"] is not None
    assert _compiled_case("inference", correctness=True)["compiled_graphs"] == {"timed_path": 1, "worker_total": 1}
    assert train["compile_pool"] is None  # a CPU case's C++ kernels compile in a thread pool: nothing to warm


def test_the_compile_pool_is_warmed_and_waited_for_before_the_clock(monkeypatch) -> None:
    """`warm_compile_pool` starts inductor's pool and waits for its first answer (fake pool: the
    real one is a process tree that only CUDA cases use); a pool that fails is recorded, not fatal."""
    import torch._inductor.async_compile as ac

    from bench.workloads.measure import warm_compile_pool

    calls: list[str] = []
    monkeypatch.setattr(ac, "get_compile_threads", lambda: 16)
    monkeypatch.setattr(ac.AsyncCompile, "warm_pool", classmethod(lambda cls: calls.append("warm")))
    monkeypatch.setattr(ac.AsyncCompile, "wait_pool_ready",
                        classmethod(lambda cls, timeout=120: calls.append(f"wait {timeout:g}")), raising=False)
    got = warm_compile_pool(timeout_s=30)
    assert calls == ["warm", "wait 30"] and got["warmed"] is True and got["workers"] == 16

    def broken(cls, timeout=120):
        raise RuntimeError("pool died")

    monkeypatch.setattr(ac.AsyncCompile, "wait_pool_ready", classmethod(broken), raising=False)
    got = warm_compile_pool()
    assert got["warmed"] is False and "pool died" in got["reason"]
    monkeypatch.setattr(ac, "get_compile_threads", lambda: 1)
    assert warm_compile_pool()["warmed"] is False
