"""The benchmark matrix: one test, parametrised over the preset's cases (see conftest.py).

Unsupported combinations and out-of-memory cases are skipped with their reason and recorded
in the run's ``alexnet.skipped`` list; an unrecoverable CUDA error stops the whole run
(`bench.measure.run_guarded`).
"""

from __future__ import annotations

from alexnet.config import RunConfig
from bench.measure import measure_case, run_guarded


def test_step(benchmark, case: RunConfig, bench_session, request) -> None:
    benchmark.group = f"{case.mode}-{case.device}"
    run_guarded(
        benchmark, case, case_id=case.case_id(), bench_session=bench_session, node=request.node,
        measure=lambda gpu_name: measure_case(
            benchmark, case,
            rounds=bench_session.rounds, warmup=bench_session.warmup,
            telemetry_interval_s=bench_session.telemetry_interval_s,
            calibration=bench_session.calibration, gpu_name=gpu_name,
            profile_layers=bench_session.profile_layers, emulated_bf16=bench_session.allow_emulated_bf16,
        ),
    )
