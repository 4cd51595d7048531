"""The pytest plugin of the benchmark matrix (loaded by ``bench/conftest.py``): options, parametrisation, pytest-benchmark hooks.

``pytest bench/ --benchmark-save=NAME [--preset P] [axis overrides]``. Cases come from
`bench.suite.presets`; each is measured by `bench.workloads.measure.measure_case`. This file only decides
*which* cases run and what goes into the saved JSON around them:

- raw per-round samples are always saved (``--benchmark-save-data`` on by default);
- ``machine_info`` gets the suite's environment fields (`bench.instruments.envinfo`,
  `runrecord.schema.suite_machine_info`);
- the run-level ``alexnet`` section (`runrecord.schema.Section`) gets the schema version, preset,
  skipped and failed cases and the calibration GEMM (docs/saved-run-format.md);
- pytest-benchmark makes and saves the run, its file storage saving through the run record's
  store (`runrecord.store.file_storage`: same file, never overwritten).

Every case is measured in a fresh worker process (`bench.suite.runner`, `bench.workers.launcher`,
`bench.workers.worker`); this process coordinates and never touches a CUDA device.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import pytest

from alexnet.config import RunConfig
from bench.suite.presets import (AXES, PIPELINE_VALUES, PRESETS, build_cases, build_loop_cases, default_preset,
                           loop_case_id, parse_axis)
from bench.workloads.workload import LoopWorkload, StepWorkload
from runrecord.schema import SCHEMA_VERSION, SECTION, Failure, Section, Skip, suite_machine_info
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
    isolation: str = "process"
    case_timeout_s: float = 900.0
    telemetry_seconds: float | None = None
    strict_isolation: bool = False
    steps_per_round: int | None = None  # None: the default per device (bench.workloads.workload.steps_per_round)
    correctness: bool = True
    rows: dict[str, Any] = field(default_factory=dict)  # --cases: case id -> bench.suite.caselist.CaseRow
    sweep: dict[str, Any] | None = None  # --sweep-plan: {plan_id, shard, shard_from, shards} (alexnet.sweep)
    notices: list[str] = field(default_factory=list)  # said once per run (alexnet.notices)
    interrupted_by: str | None = None  # the signal that cut the run short (SIGINT, SIGTERM, SIGUSR1)
    case_ids: dict[str, str] = field(default_factory=dict)  # collected node id -> case id, in run order
    done: set[str] = field(default_factory=set)  # node ids that ran to an outcome (measured, skipped, failed)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    _runner: Any = None

    @property
    def runner(self) -> Any:
        """The `bench.suite.runner.CaseRunner` (its zygote starts at the first case that needs it)."""
        if self._runner is None:
            from bench.suite.runner import CaseRunner

            self._runner = CaseRunner(isolation=self.isolation, case_timeout_s=self.case_timeout_s,
                                      telemetry_seconds=self.telemetry_seconds)
            self._runner.notices = self.notices
        return self._runner

    @property
    def calibrations(self) -> dict[str, dict[str, Any]]:
        return self._runner.calibrations if self._runner is not None else {}

    def record_skip(self, item: pytest.Item, cfg: RunConfig, reason: str) -> None:
        self.skipped.append(
            Skip(name=item.name, fullname=item.nodeid, case_id=cfg.case_id(), config=cfg.flat(), reason=reason).to_json()
        )


_SESSION = pytest.StashKey[BenchSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("alexnet-bench", "AlexNet benchmark matrix (bench/)")
    g.addoption("--preset", default=None,
                help="; ".join(f"{p.name}: {p.help}" for p in PRESETS.values())
                + " (default: standard with CUDA, else quick)")
    g.addoption("--sweep-plan", default=None, metavar="PLAN",
                help="run shard --shard K of a sweep plan (alexnet-bench sweep plan): exactly its cases, with its "
                     "measurement options (docs/sweeps.md)")
    g.addoption("--shard", type=int, default=None, metavar="K",
                help="the plan's shard to run (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX)")
    g.addoption("--cases", default=None, metavar="FILE",
                help="run the cases listed in FILE (JSON: bench/suite/caselist.py) instead of a preset's product; "
                     "--preset then only gives the rounds and warm-up")
    for axis in AXES.values():
        g.addoption(*axis.flags, dest=f"axis_{axis.field}", default=None, metavar="V1,V2",
                    help=f"override the {axis.field} axis of every case ({axis.valid})")
    g.addoption("--rounds", type=int, default=None, help="timed rounds per case (>= 10; default: the preset's)")
    g.addoption("--warmup-rounds", type=int, default=None, help="untimed warm-up rounds per case (default: the preset's)")
    g.addoption("--no-correctness", action="store_true",
                help="skip each case's correctness check against fp32 eager (for a compiled train case it "
                     "compiles a second, forward-only graph; its time is saved as correctness.correctness_compile_s)")
    g.addoption("--steps-per-round", default="auto", metavar="N|auto",
                help="back-to-back steps per timed round, saved per step (auto: 1 on a CPU; on CUDA enough for "
                     "1 TFLOP a round, at most 64; loop cases always 1)")
    g.addoption("--telemetry-interval", type=float, default=DEFAULT_TELEMETRY_INTERVAL_S,
                help=f"seconds between telemetry samples (default {DEFAULT_TELEMETRY_INTERVAL_S})")
    g.addoption("--profile-layers", action="store_true",
                help="after the timed rounds, profile each case per layer (bench.instruments.profiling) into extra_info.layers")
    g.addoption("--pipelines", default=None, metavar="P1,P2",
                help=f"input pipelines of the training-loop cases ({', '.join(PIPELINE_VALUES)}; default: both)")
    g.addoption("--data-root", default=None, metavar="DIR",
                help="training-loop cases read real FashionMNIST from DIR/FashionMNIST/raw (default: synthetic data)")
    g.addoption("--isolation", default="process", metavar="MODE",
                help="process (default): every case in a fresh worker process; none: in this process, for debugging")
    g.addoption("--case-timeout", type=float, default=900.0, metavar="S",
                help="kill a case's worker (and its process group) after S seconds (default 900)")
    g.addoption("--telemetry-seconds", type=float, default=None, metavar="S",
                help="back-to-back steps after the timed rounds for NVML energy and power (default 5 on CUDA, "
                     "0 on CPU where the rounds are the window)")
    g.addoption("--strict-isolation", action="store_true",
                help="fail a case when other processes loaded its device (or CPU) during its rounds")
    g.addoption("--alexnet-dump-cases", default=None, metavar="FILE",
                help="(for alexnet-bench ab) write the selected cases and their configs to FILE as JSON")
    g.addoption("--allow-emulated-bf16", action="store_true",
                help="run bf16 on CPUs without bf16 hardware (emulated, ~500x slower; recorded as a warning)")


def _session_from_options(config: pytest.Config) -> BenchSession:
    from runrecord.samples import MIN_ROUNDS  # torch-free (bench.instruments.timing imports torch)

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
    case_file = config.getoption("cases")
    rows: dict[str, Any] = {}
    sweep = None
    if config.getoption("sweep_plan") is not None:
        if case_file is not None:
            raise pytest.UsageError("--sweep-plan and --cases both list the cases; give one")
        sweep, rows = _sweep_shard(config)
        case_file = config.getoption("sweep_plan")
    elif config.getoption("shard") is not None:
        raise pytest.UsageError("--shard needs --sweep-plan PLAN")
    if case_file is not None:
        from bench.suite.caselist import load_case_list

        given = [a.flag for a in AXES.values() if a.field in overrides]
        given += [f for f, o in (("--pipelines", "pipelines"), ("--data-root", "data_root")) if config.getoption(o)]
        if given:
            raise pytest.UsageError(f"--cases lists its cases in full; it cannot be combined with {', '.join(given)} "
                                    "(put the values in the file's configs)")
        if sweep is None:
            try:
                rows = {r.case_id: r for r in load_case_list(case_file)}
            except ValueError as exc:
                raise pytest.UsageError(str(exc)) from None
        cases = [r.cfg for r in rows.values() if r.kind == "step"]
    else:
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
        loop_cases = ([r.cfg for r in rows.values() if r.kind == "loop"] if case_file is not None
                      else build_loop_cases(preset, overrides, pipelines=pipelines, data_root=data_root))
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
    spr_text = str(config.getoption("steps_per_round")).strip()
    if spr_text == "auto":
        spr = None
    elif spr_text.isdigit() and int(spr_text) >= 1:
        spr = int(spr_text)
    else:
        raise pytest.UsageError(f"--steps-per-round {spr_text!r} is not valid; use auto or an integer >= 1")
    interval = config.getoption("telemetry_interval")
    if not interval > 0:
        raise pytest.UsageError(f"--telemetry-interval {interval} is not valid; it must be > 0 seconds")
    profile = config.getoption("profile_layers")
    if profile and importlib.util.find_spec("bench.instruments.profiling") is None:
        raise pytest.UsageError("--profile-layers needs bench.instruments.profiling, which this checkout does not have")
    from bench.suite.runner import ISOLATION_MODES

    isolation = config.getoption("isolation")
    if isolation not in ISOLATION_MODES:
        raise pytest.UsageError(f"--isolation {isolation!r} is not valid; choose from {', '.join(ISOLATION_MODES)}")
    case_timeout = config.getoption("case_timeout")
    if not case_timeout > 0:
        raise pytest.UsageError(f"--case-timeout {case_timeout} is not valid; it must be > 0 seconds")
    telemetry_seconds = config.getoption("telemetry_seconds")
    if telemetry_seconds is not None and telemetry_seconds < 0:
        raise pytest.UsageError(f"--telemetry-seconds {telemetry_seconds} is not valid; it must be >= 0")
    if sweep is not None:  # the plan's measurement options, never this command line's
        opts = sweep["options"]
        rounds, warmup, case_timeout = int(opts["rounds"]), int(opts["warmup_rounds"]), float(opts["case_timeout"])
        spr = None if str(opts["steps_per_round"]) == "auto" else int(opts["steps_per_round"])
        telemetry_seconds = opts.get("telemetry_seconds")
    return BenchSession(
        preset=(sweep["preset"] if sweep is not None else "cases") if case_file is not None else preset,
        cases=cases, rows=rows, loop_cases=loop_cases, sweep=sweep and {k: v for k, v in sweep.items() if k != "options"},
        rounds=rounds, warmup=warmup, telemetry_interval_s=interval,
        profile_layers=profile, allow_emulated_bf16=config.getoption("allow_emulated_bf16"),
        isolation=isolation, case_timeout_s=case_timeout, telemetry_seconds=telemetry_seconds,
        strict_isolation=config.getoption("strict_isolation"), steps_per_round=spr,
        correctness=(not config.getoption("no_correctness")) if sweep is None else bool(sweep["options"]["correctness"]),
    )


# The plan's measurement options and the command-line options that set them (--sweep-plan).
_PLAN_OPTIONS = {"rounds": "--rounds", "warmup_rounds": "--warmup-rounds", "steps_per_round": "--steps-per-round",
                 "case_timeout": "--case-timeout", "telemetry_seconds": "--telemetry-seconds",
                 "correctness": "--no-correctness"}


def _same_value(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _sweep_shard(config: pytest.Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--sweep-plan PLAN [--shard K]``: (the run's sweep record with the plan's options, its rows).

    Exactly the plan's cases of shard K, with the plan's measurement options: an option given on
    the command line that differs from the plan's, or a plan case this checkout would give another
    id, is one line (a usage error)."""
    from bench.suite.caselist import load_rows
    from bench.sweep.plan import load_plan
    from bench.sweep.shard import shard_cases, shard_index, shard_rows

    path = config.getoption("sweep_plan")
    try:
        plan = load_plan(path)
        k, source = shard_index(config.getoption("shard"), int(plan["shards"]))
        planned = shard_cases(plan, k)
        rows = {r.case_id: r for r in load_rows(shard_rows(planned), where=f"--sweep-plan {path}")}
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    foreign = [c["case_id"] for c in planned if c["case_id"] not in rows]
    if foreign:
        raise pytest.UsageError(f"--sweep-plan {path}: shard {k}'s case {foreign[0]} is not a case this checkout "
                                "collects (another version made the plan?); make the plan with this checkout")
    args = [str(a) for a in config.invocation_params.args]
    options = plan["options"]
    for key, flag in _PLAN_OPTIONS.items():
        given = [a for a in args if a == flag or a.startswith(flag + "=")]
        if not given:
            continue
        mine = (not config.getoption("no_correctness")) if key == "correctness" else config.getoption(key)
        planned_value = options.get(key)
        if not _same_value(mine, planned_value):
            raise pytest.UsageError(f"{flag} {mine} differs from the plan's {key} {planned_value}: a shard measures with "
                                    "its plan's options (leave it out, or make a new plan)")
    return {"plan_id": plan.get("plan_id"), "shard": k, "shard_from": source, "shards": plan["shards"],
            "preset": f"sweep:{plan.get('preset')}", "options": options}, rows


# --- interrupts --------------------------------------------------------------------------------
# SIGINT (Ctrl-C) is pytest's own KeyboardInterrupt. SIGTERM (kill, a scheduler's stop,
# Kubernetes' termination grace) and SIGUSR1 (Slurm's --signal=B:USR1@120 before a time limit)
# are turned into the same interrupt: the current case's worker is killed
# (bench.suite.runner.CaseRunner.measure), pytest ends the session as interrupted (exit 2, its
# one-line summary), pytest-benchmark saves the cases measured so far, and the saved run says
# it was cut short (alexnet.interrupted: the signal and the cases not run). A plain SIGTERM
# would end pytest at once (exit 143) and save nothing.
INTERRUPT_SIGNALS = ("SIGTERM", "SIGUSR1")


def _install_interrupt_handlers(s: BenchSession) -> dict[int, Any]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        if s.interrupted_by is not None:
            return  # already stopping: a repeated SIGTERM must not break the save
        s.interrupted_by = signal.Signals(signum).name
        raise KeyboardInterrupt(f"{s.interrupted_by} received: stopping, saving the cases measured so far")

    previous = {}
    for name in INTERRUPT_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    return previous


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    s = _ACTIVE.get("session")
    if s is not None and s.interrupted_by is None:
        s.interrupted_by = "SIGINT"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A case that ran to an outcome (measured, skipped, failed) is not among an interrupted run's not-run."""
    s = _ACTIVE.get("session")
    if s is not None and (report.when == "call" or (report.when == "setup" and not report.passed)):
        s.done.add(report.nodeid)


_ACTIVE: dict[str, Any] = {}  # this process's session, for the hooks that get no config
_PREVIOUS_HANDLERS = pytest.StashKey[dict]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Later comparisons (reports/compare/) need every raw round, not just the summary.
    config.option.benchmark_save_data = True
    bs = getattr(config, "_benchmarksession", None)
    if bs is not None:  # pytest-benchmark already read the option
        bs.save_data = True
    s = _session_from_options(config)
    config.stash[_SESSION] = s
    _ACTIVE["session"] = s
    if not config.option.collectonly:
        config.stash[_PREVIOUS_HANDLERS] = _install_interrupt_handlers(s)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    s = metafunc.config.stash[_SESSION]
    for fixture, kind, configs, case_id in (("case", "step", s.cases, lambda c: c.case_id()),
                                            ("loop_case", "loop", s.loop_cases, loop_case_id)):
        if fixture not in metafunc.fixturenames:
            continue
        if s.rows:  # --cases: the file's ids (a labelled row is its config again, as `<id>~LABEL`)
            rows = [r for r in s.rows.values() if r.kind == kind]
            metafunc.parametrize(fixture, [r.cfg for r in rows], ids=[r.case_id for r in rows])
        else:
            metafunc.parametrize(fixture, configs, ids=[case_id(c) for c in configs])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A preset without training-loop cases (tiny) deselects the loop test instead of showing
    # pytest's "got empty parameter set" skip, which is not a skipped case of ours.
    if config.stash[_SESSION].loop_cases:
        return
    empty = [i for i in items if "loop_case" in getattr(i, "fixturenames", ())]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [i for i in items if i not in empty]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note every collected case's id (an interrupted run lists those not run); and
    ``--alexnet-dump-cases FILE``: the cases left after -k and the overrides, for `ab`'s duet."""
    s = session.config.stash[_SESSION]
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        cfg = params.get("case") or params.get("loop_case")
        if cfg is not None:
            s.case_ids[item.nodeid] = case_id_of(item, cfg, StepWorkload if "case" in params else LoopWorkload)
    path = session.config.getoption("alexnet_dump_cases")
    if not path:
        return
    import json

    rows = []
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        cfg = params.get("case") or params.get("loop_case")
        if cfg is None:
            continue
        workload = StepWorkload if "case" in params else LoopWorkload
        rows.append({"nodeid": item.nodeid, "case_id": case_id_of(item, cfg, workload), "kind": workload.kind,
                     "config": cfg.flat()})
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rows, fh)


def case_id_of(node: Any, cfg: RunConfig, workload: Any) -> str:
    """A collected case's id: its parametrisation id under ``--cases`` (labels included), else the workload's."""
    s = node.config.stash[_SESSION]
    if s.rows:
        return node.callspec.id
    return workload.case_id(cfg)


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config) -> BenchSession:
    return pytestconfig.stash[_SESSION]


def pytest_sessionstart(session: pytest.Session) -> None:
    """pytest-benchmark's file storage saves through the run record's store (`runrecord.store`)."""
    from runrecord.store import file_storage

    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None:
        bs.storage = file_storage(bs.storage)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    # Gathered in a worker (it may touch the GPU); this process never initialises CUDA. If no
    # worker can be had even from a fresh zygote, the run is still saved, saying why its
    # machine facts are missing: what was measured is never lost for them.
    from bench.workers.launcher import WorkerDied

    try:
        facts = config.stash[_SESSION].runner.probe(tries=2)["machine_info"]
    except WorkerDied as exc:
        facts = {"probe_failed": exc.reason}
    machine_info.update(suite_machine_info(machine_info, facts))


def pytest_unconfigure(config: pytest.Config) -> None:
    s = config.stash.get(_SESSION, None)
    if s is not None and s._runner is not None:
        s._runner.close()  # the zygote and any worker left: no process outlives the run
    import signal

    for sig, previous in config.stash.get(_PREVIOUS_HANDLERS, {}).items():
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    _ACTIVE.pop("session", None)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    s = config.stash[_SESSION]
    # The CPU GEMM is the CPU peak for MFU; on a GPU-only run, the GPU one records its speed.
    calibration = s.calibrations.get("cpu") or next(iter(s.calibrations.values()), None)
    output_json[SECTION] = Section(
        schema_version=SCHEMA_VERSION,
        preset=s.preset,
        rounds=s.rounds,
        warmup_rounds=s.warmup,
        skipped=[Skip.from_json(x) for x in s.skipped],
        failed=[Failure.from_json(x) for x in (s._runner.failed if s._runner is not None else [])],
        isolation=s.isolation,
        calibration=calibration,
        calibrations=s.calibrations,
        notices=list(s.notices),
        extra={"sweep": s.sweep} if s.sweep else {},
        interrupted=None if s.interrupted_by is None else {
            "signal": s.interrupted_by,
            "not_run": [cid for node, cid in s.case_ids.items() if node not in s.done],
            "collected": len(s.case_ids),
        },
    ).to_json()
