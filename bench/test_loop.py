"""Training-loop cases: full steps (fetch, move, forward, backward, step) fed by a real input
pipeline, so a slow pipeline shows up, unlike in the fixed-batch step cases of test_matrix.py.

Each saved case has ``kind: "loop"``, ``pipeline``, ``data_wait_fraction`` (measured share of
the loop spent waiting for the next batch) and ``input_bound`` (that share above 10%).
Select them alone with ``-k test_loop``; leave them out with ``-k "not test_loop"``.
"""

from __future__ import annotations

from alexnet.config import RunConfig
from bench.measure import measure_loop_case, run_guarded
from bench.presets import loop_case_id


def test_loop(benchmark, loop_case: RunConfig, bench_session, request) -> None:
    benchmark.group = f"loop-{loop_case.device}"
    case_id = loop_case_id(loop_case)
    run_guarded(
        benchmark, loop_case, case_id=case_id, bench_session=bench_session, node=request.node,
        measure=lambda gpu_name: measure_loop_case(
            benchmark, loop_case, case_id=case_id,
            rounds=bench_session.rounds, warmup=bench_session.warmup,
            telemetry_interval_s=bench_session.telemetry_interval_s,
            calibration=bench_session.calibration, gpu_name=gpu_name,
        ),
    )
