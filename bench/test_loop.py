"""Training-loop cases: full steps (fetch, move, forward, backward, step) fed by a real input
pipeline, so a slow pipeline shows up, unlike in the fixed-batch step cases of test_matrix.py.

Each saved case has ``kind: "loop"``, ``pipeline``, ``data_wait_fraction`` (measured share of
the loop spent waiting for the next batch) and ``input_bound`` (that share above 10%).
Select them alone with ``-k test_loop``; leave them out with ``-k "not test_loop"``.
Like the step cases, each runs in a fresh worker process (`bench.suite.runner.run_case`).
"""

from __future__ import annotations

import pytest

from alexnet.config import RunConfig
from bench.suite.runner import replay_clock, run_case
from bench.workloads.workload import LoopWorkload


@pytest.mark.benchmark(timer=replay_clock)
def test_loop(benchmark, loop_case: RunConfig, bench_session, request) -> None:
    benchmark.group = f"loop-{loop_case.device}"
    run_case(benchmark, loop_case, workload=LoopWorkload, bench_session=bench_session, node=request.node)
