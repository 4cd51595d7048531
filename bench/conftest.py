"""Entry point of ``pytest bench/``: pytest reads ``pytest_addoption`` only from initial
conftest files, so this file stays here and only re-exports the suite's plugin
(`bench.suite.plugin`: options, parametrisation, the saved run's ``alexnet`` section)."""

from bench.suite.plugin import (  # noqa: F401 - pytest finds hooks and fixtures by name here
    pytest_addoption,
    pytest_configure,
    pytest_generate_tests,
    pytest_collection_modifyitems,
    pytest_collection_finish,
    pytest_sessionstart,
    bench_session,
    pytest_benchmark_update_machine_info,
    pytest_unconfigure,
    pytest_benchmark_update_json,
    pytest_keyboard_interrupt,
    pytest_runtest_logreport,
)
