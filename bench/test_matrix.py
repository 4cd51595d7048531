"""The benchmark matrix: one test, parametrised over the preset's cases (see conftest.py).

Each case is measured in a fresh worker process and its rounds are replayed into
pytest-benchmark (`bench.suite.runner.run_case`). Unsupported combinations and out-of-memory cases
are skipped with their reason and recorded in the run's ``alexnet.skipped`` list; a worker
that dies or times out fails its case, which is recorded in ``alexnet.failed``.
"""

from __future__ import annotations

import pytest

from alexnet.config import RunConfig
from bench.suite.runner import replay_clock, run_case
from bench.workloads.workload import StepWorkload


@pytest.mark.benchmark(timer=replay_clock)
def test_step(benchmark, case: RunConfig, bench_session, request) -> None:
    benchmark.group = f"{case.mode}-{case.device}"
    run_case(benchmark, case, workload=StepWorkload, bench_session=bench_session, node=request.node)
