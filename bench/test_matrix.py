"""The benchmark matrix: one test, parametrised over the preset's cases (see conftest.py).

Unsupported combinations and out-of-memory cases are skipped with their reason and recorded
in the run's ``alexnet.skipped`` list; an unrecoverable CUDA error stops the whole run.
"""

from __future__ import annotations

import gc

import pytest
import torch

from alexnet.config import RunConfig
from alexnet.runtime import unsupported_reason
from alexnet.failures import is_fatal_device_error, is_oom
from bench.measure import measure_case


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def test_step(benchmark, case: RunConfig, bench_session, request) -> None:
    reason = unsupported_reason(case, allow_emulated_bf16=bench_session.allow_emulated_bf16)
    if reason:
        bench_session.record_skip(request.node, case, reason)
        pytest.skip(reason)
    benchmark.group = f"{case.mode}-{case.device}"
    gpu_name = torch.cuda.get_device_name(torch.device(case.device).index or 0) if case.is_cuda else None
    oom_reason = None
    try:
        extra = measure_case(
            benchmark, case,
            rounds=bench_session.rounds, warmup=bench_session.warmup,
            telemetry_interval_s=bench_session.telemetry_interval_s,
            calibration=bench_session.calibration, gpu_name=gpu_name,
            profile_layers=bench_session.profile_layers, emulated_bf16=bench_session.allow_emulated_bf16,
        )
    except Exception as exc:
        # A case that failed after its timed rounds must not be saved without its extra_info.
        benchmark.has_error = True
        if is_fatal_device_error(exc):
            pytest.exit(f"unrecoverable CUDA error in {case.case_id()}: {exc}; the device state is lost, "
                        f"stopping the run (re-run the remaining cases in a fresh process)", returncode=3)
        if not is_oom(exc):
            raise
        oom_reason = f"out of memory: {str(exc).splitlines()[0]}"
    if oom_reason is not None:
        # Outside the except block, so the traceback's frames (and their tensors) are gone.
        _free_memory()
        bench_session.record_skip(request.node, case, oom_reason)
        pytest.skip(oom_reason)
    benchmark.extra_info.update(extra)
