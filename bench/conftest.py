"""pytest wiring of the benchmark matrix: options, parametrisation, pytest-benchmark hooks.

``pytest bench/ --benchmark-save=NAME [--preset P] [axis overrides]``. Cases come from
`bench.presets`; each is measured by `bench.measure.measure_case`. This file only decides
*which* cases run and what goes into the saved JSON around them:

- raw per-round samples are always saved (``--benchmark-save-data`` on by default);
- ``machine_info`` gets the suite's environment fields (`bench.envinfo`);
- the run-level ``alexnet`` section gets the schema version, preset, skipped cases and the
  calibration GEMM (docs/saved-run-format.md).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import pytest

from alexnet.config import RunConfig
from bench.presets import (AXES, PIPELINE_VALUES, PRESETS, build_cases, build_loop_cases, default_preset,
                           loop_case_id, parse_axis)

SCHEMA_VERSION = 1
DEFAULT_TELEMETRY_INTERVAL_S = 0.1


@dataclass
class BenchSession:
    """Run-wide state shared by every case: options, calibration, skipped cases."""

    preset: str
    cases: list[RunConfig]
    rounds: int
    warmup: int
    telemetry_interval_s: float
    profile_layers: bool
    allow_emulated_bf16: bool
    loop_cases: list[RunConfig] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    calibrations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def calibration(self, device: str) -> dict[str, Any]:
        """The fp32 GEMM on ``device``, measured once per run, before that device's first case."""
        if device not in self.calibrations:
            from bench.mfu import calibrate

            self.calibrations[device] = calibrate(device)
        return self.calibrations[device]

    def record_skip(self, item: pytest.Item, cfg: RunConfig, reason: str) -> None:
        self.skipped.append(
            {"name": item.name, "fullname": item.nodeid, "case_id": cfg.case_id(), "config": cfg.flat(), "reason": reason}
        )


_SESSION = pytest.StashKey[BenchSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("alexnet-bench", "AlexNet benchmark matrix (bench/)")
    g.addoption("--preset", default=None,
                help="; ".join(f"{p.name}: {p.help}" for p in PRESETS.values())
                + " (default: standard with CUDA, else quick)")
    for axis in AXES.values():
        g.addoption(axis.flag, dest=f"axis_{axis.field}", default=None, metavar="V1,V2",
                    help=f"override the {axis.field} axis of every case ({axis.valid})")
    g.addoption("--rounds", type=int, default=None, help="timed rounds per case (>= 10; default: the preset's)")
    g.addoption("--warmup-rounds", type=int, default=None, help="untimed warm-up rounds per case (default: the preset's)")
    g.addoption("--telemetry-interval", type=float, default=DEFAULT_TELEMETRY_INTERVAL_S,
                help=f"seconds between telemetry samples (default {DEFAULT_TELEMETRY_INTERVAL_S})")
    g.addoption("--profile-layers", action="store_true",
                help="after the timed rounds, profile each case per layer (bench.profiling) into extra_info.layers")
    g.addoption("--pipelines", default=None, metavar="P1,P2",
                help=f"input pipelines of the training-loop cases ({', '.join(PIPELINE_VALUES)}; default: both)")
    g.addoption("--data-root", default=None, metavar="DIR",
                help="training-loop cases read real FashionMNIST from DIR/FashionMNIST/raw (default: synthetic data)")
    g.addoption("--allow-emulated-bf16", action="store_true",
                help="run bf16 on CPUs without bf16 hardware (emulated, ~500x slower; recorded as a warning)")


def _session_from_options(config: pytest.Config) -> BenchSession:
    from bench.timing import MIN_ROUNDS

    preset = config.getoption("preset") or default_preset()
    if preset not in PRESETS:
        raise pytest.UsageError(f"--preset {preset!r} is not valid; choose from {', '.join(PRESETS)}")
    overrides: dict[str, list[Any]] = {}
    for axis in AXES.values():
        text = config.getoption(f"axis_{axis.field}")
        if text is not None:
            try:
                overrides[axis.field] = parse_axis(axis.field, text)
            except ValueError as exc:
                raise pytest.UsageError(f"{axis.flag}: {exc}") from None
    try:
        cases = build_cases(preset, overrides)
    except ValueError as exc:  # e.g. a resolution too small for a variant
        raise pytest.UsageError(str(exc)) from None
    pipelines = None
    if config.getoption("pipelines") is not None:
        pipelines = [p.strip() for p in config.getoption("pipelines").split(",") if p.strip()]
        bad = [p for p in pipelines if p not in PIPELINE_VALUES]
        if bad or not pipelines:
            raise pytest.UsageError(f"--pipelines {config.getoption('pipelines')!r} is not valid; "
                                    f"choose from {', '.join(PIPELINE_VALUES)}")
    data_root = config.getoption("data_root")
    if data_root is not None:
        from alexnet.data import FASHION_MNIST_FILES
        from pathlib import Path

        raw = Path(data_root).expanduser() / "FashionMNIST" / "raw"
        missing = [f for f in FASHION_MNIST_FILES if not (raw / f).exists()]
        if missing:
            raise pytest.UsageError(f"--data-root {data_root!r}: FashionMNIST files missing in {raw}: {', '.join(missing)}")
    try:
        loop_cases = build_loop_cases(preset, overrides, pipelines=pipelines, data_root=data_root)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    spec = PRESETS[preset]
    rounds = config.getoption("rounds") or spec.rounds
    if rounds < MIN_ROUNDS:
        raise pytest.UsageError(f"--rounds {rounds} is not valid; it must be >= {MIN_ROUNDS}")
    warmup = spec.warmup if config.getoption("warmup_rounds") is None else config.getoption("warmup_rounds")
    if warmup < 1:
        # The first step is always the cold one (compile, lazy init); it is never timed.
        raise pytest.UsageError(f"--warmup-rounds {warmup} is not valid; it must be >= 1")
    interval = config.getoption("telemetry_interval")
    if not interval > 0:
        raise pytest.UsageError(f"--telemetry-interval {interval} is not valid; it must be > 0 seconds")
    profile = config.getoption("profile_layers")
    if profile and importlib.util.find_spec("bench.profiling") is None:
        raise pytest.UsageError("--profile-layers needs bench.profiling, which this checkout does not have")
    return BenchSession(
        preset=preset, cases=cases, loop_cases=loop_cases, rounds=rounds, warmup=warmup, telemetry_interval_s=interval,
        profile_layers=profile, allow_emulated_bf16=config.getoption("allow_emulated_bf16"),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Later comparisons (reports/compare.py) need every raw round, not just the summary.
    config.option.benchmark_save_data = True
    bs = getattr(config, "_benchmarksession", None)
    if bs is not None:  # pytest-benchmark already read the option
        bs.save_data = True
    config.stash[_SESSION] = _session_from_options(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = metafunc.config.stash[_SESSION].cases
        metafunc.parametrize("case", cases, ids=[c.case_id() for c in cases])
    if "loop_case" in metafunc.fixturenames:
        loops = metafunc.config.stash[_SESSION].loop_cases
        metafunc.parametrize("loop_case", loops, ids=[loop_case_id(c) for c in loops])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A preset without training-loop cases (tiny) deselects the loop test instead of showing
    # pytest's "got empty parameter set" skip, which is not a skipped case of ours.
    if config.stash[_SESSION].loop_cases:
        return
    empty = [i for i in items if "loop_case" in getattr(i, "fixturenames", ())]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [i for i in items if i not in empty]


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config) -> BenchSession:
    return pytestconfig.stash[_SESSION]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    from bench.envinfo import machine_info as suite_machine_info

    machine_info.update(suite_machine_info())


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    s = config.stash[_SESSION]
    # The CPU GEMM is the CPU peak for MFU; on a GPU-only run, the GPU one records its speed.
    calibration = s.calibrations.get("cpu") or next(iter(s.calibrations.values()), None)
    output_json["alexnet"] = {
        "schema_version": SCHEMA_VERSION,
        "preset": s.preset,
        "rounds": s.rounds,
        "warmup_rounds": s.warmup,
        "skipped": s.skipped,
        "calibration": calibration,
        "calibrations": s.calibrations,
    }
