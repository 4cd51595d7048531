"""Training-loop cases: full steps (fetch, move, forward, backward, step) fed by a real input
pipeline, so a slow pipeline shows up, unlike in the fixed-batch step cases of test_matrix.py.

Each saved case has ``kind: "loop"``, ``pipeline``, ``data_wait_fraction`` (measured share of
the loop spent waiting for the next batch) and ``input_bound`` (that share above 10%).
Select them alone with ``-k test_loop``; leave them out with ``-k "not test_loop"``.
"""

from __future__ import annotations

import gc

import pytest
import torch

from alexnet.config import RunConfig
from alexnet.failures import is_fatal_device_error, is_oom
from alexnet.runtime import unsupported_reason
from bench.measure import measure_loop_case
from bench.presets import loop_case_id


def test_loop(benchmark, loop_case: RunConfig, bench_session, request) -> None:
    reason = unsupported_reason(loop_case, allow_emulated_bf16=bench_session.allow_emulated_bf16)
    if reason:
        bench_session.record_skip(request.node, loop_case, reason)
        pytest.skip(reason)
    benchmark.group = f"loop-{loop_case.device}"
    gpu_name = torch.cuda.get_device_name(torch.device(loop_case.device).index or 0) if loop_case.is_cuda else None
    oom_reason = None
    try:
        extra = measure_loop_case(
            benchmark, loop_case, case_id=loop_case_id(loop_case),
            rounds=bench_session.rounds, warmup=bench_session.warmup,
            telemetry_interval_s=bench_session.telemetry_interval_s,
            calibration=bench_session.calibration, gpu_name=gpu_name,
        )
    except Exception as exc:
        benchmark.has_error = True
        if is_fatal_device_error(exc):
            pytest.exit(f"unrecoverable CUDA error in {loop_case_id(loop_case)}: {exc}; stopping the run", returncode=3)
        if not is_oom(exc):
            raise
        oom_reason = f"out of memory: {str(exc).splitlines()[0]}"
    if oom_reason is not None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        bench_session.record_skip(request.node, loop_case, oom_reason)
        pytest.skip(oom_reason)
    benchmark.extra_info.update(extra)
