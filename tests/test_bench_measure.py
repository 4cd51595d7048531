"""The correctness check of every benchmark case, and the failure classification."""

from __future__ import annotations

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

