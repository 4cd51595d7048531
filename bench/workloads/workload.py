"""What a case times: the workload types, chosen once per case from its request.

A `Workload` is the unit a case's rounds repeat, and what it adds to the case's record:

- `StepWorkload` (``extra_info.kind = "step"``, bench/test_matrix.py): one training or inference
  step on a fixed batch, ending with a device sync;
- `LoopWorkload` (``"loop"``, bench/test_loop.py): one full training-loop step, its batch from a
  real input pipeline, with its data wait measured (`bench.workloads.loop`);
- `SubjectWorkload` (``"step"``, the duet, `bench.duet.session`): one step of the ref's subject
  (`alexnet.subject`), whatever that ref's code does inside it.

The ``kind`` strings are part of the saved format (docs/saved-run-format.md) and stay as they
are. `workload_for` turns a request's ``kind`` into the type, once; nothing downstream compares
the strings again. `CaseOptions` is the typed form of a ``build`` request's options.

This module imports no torch at module level: the coordinator (the pytest process) names the
types without touching a device; the workers build them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["CUDA_BLOCK_FLOP", "MAX_STEPS_PER_ROUND", "CaseOptions", "config_steps_per_round", "LoopWorkload", "StepWorkload", "SubjectWorkload",
           "WORKLOADS", "Workload", "steps_per_round", "workload_for"]

# Steps per timed round (docs/bench.md, "How a case is timed"). On CUDA a round is a block of
# back-to-back steps holding at least CUDA_BLOCK_FLOP (1 TFLOP: a few ms on an H100 or H200),
# so a launch-bound step is timed with its launches overlapping the work before it, as in a
# loop; at most MAX_STEPS_PER_ROUND. On a CPU, 1: its ops run synchronously in the calling
# thread, so there is no queue for back-to-back steps to fill. Derived from the config alone,
# never from a timing: two runs of a case, and the two sides of a duet, always agree.
CUDA_BLOCK_FLOP = 1e12
MAX_STEPS_PER_ROUND = 64


def steps_per_round(cfg: Any, requested: int | None = None, *, kind: str = "step") -> int:
    """k for a case: ``requested`` (``--steps-per-round N``) or the default for its device;
    always 1 for a training-loop case (its data wait is per step)."""
    if kind == "loop":
        return 1
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--steps-per-round {requested} is not valid; it must be >= 1 (or auto)")
        return int(requested)
    if not cfg.is_cuda:
        return 1
    import math

    from alexnet.arch import flops_per_image

    step = flops_per_image(cfg.variant, cfg.resolution, train=cfg.mode == "train") * cfg.batch_size
    return max(1, min(MAX_STEPS_PER_ROUND, math.ceil(CUDA_BLOCK_FLOP / step)))


def config_steps_per_round(config: dict[str, Any]) -> int:
    """`steps_per_round` for a plain config dict (a duet case's, which may come from another
    version of `alexnet`): only the fields k depends on are read, with the seed's defaults."""
    from types import SimpleNamespace

    from alexnet.config import parse_resolution

    device = str(config.get("device", "cpu"))
    return steps_per_round(SimpleNamespace(
        is_cuda=device.startswith("cuda"), variant=config.get("variant", "d2l"), mode=config.get("mode", "train"),
        resolution=parse_resolution(config.get("resolution", "224x224")), batch_size=int(config.get("batch_size", 128))))


class Workload:
    """One case's timed unit. Build it inside the case's backend switches, then call `round`."""

    kind: ClassVar[str]  # the saved extra_info.kind
    profiles_layers: ClassVar[bool] = False  # whether --profile-layers applies to it

    def __init__(self, cfg: Any, *, steps: int = 1) -> None:
        self.cfg = cfg
        self.steps = steps  # steps per timed round (`steps_per_round`)
        self.runner: Any = None  # the alexnet.runtime.StepRunner, once built

    @classmethod
    def case_id(cls, cfg: Any) -> str:
        return cfg.case_id()

    def build(self) -> None:
        raise NotImplementedError

    def round(self) -> None:
        """One timed unit, ending with the device synchronised."""
        raise NotImplementedError

    def step(self) -> None:
        """One unit for back-to-back stepping (the telemetry window): no sync needed."""
        self.round()

    def one(self) -> None:
        """One step, ending with the device synchronised (the cold step)."""
        self.round()

    def after_warmup(self) -> None:
        """Called once the warm-up rounds are done, before the timed ones."""

    def batch(self) -> tuple[Any, Any]:
        """The batch the correctness check compares on."""
        raise NotImplementedError

    def record(self, warnings: list[str]) -> dict[str, Any]:
        """What this workload adds to the case's extra_info (after the rounds); may add warnings."""
        return {}


class StepWorkload(Workload):
    """A fixed batch, one step per round (`alexnet.runtime.StepRunner`)."""

    kind = "step"
    profiles_layers = True

    def build(self) -> None:
        from alexnet.runtime import StepRunner
        from bench.instruments.timing import make_round

        self.runner = StepRunner.build(self.cfg)
        self.x, self.y = self.runner.random_batch(seed=self.cfg.seed)
        self._round = make_round(self.runner, self.x, self.y, steps=self.steps)
        self._one = make_round(self.runner, self.x, self.y, steps=1)

    def round(self) -> None:
        self._round()

    def step(self) -> None:
        self.runner.step(self.x, self.y)

    def one(self) -> None:
        self._one()

    def batch(self) -> tuple[Any, Any]:
        return self.x, self.y


class LoopWorkload(Workload):
    """A full training-loop step per round, fed by the case's input pipeline (`LoopStepper`)."""

    kind = "loop"

    @classmethod
    def case_id(cls, cfg: Any) -> str:
        """``loop-<step id>-<pipeline>[-wN]``: the step id does not name the input pipeline."""
        workers = f"-w{cfg.workers}" if cfg.pipeline == "dataloader" else ""
        return f"loop-{cfg.case_id()}-{cfg.pipeline}{workers}"

    def build(self) -> None:
        from bench.workloads.loop import LoopStepper

        self.stepper = LoopStepper(self.cfg)
        self.runner = self.stepper.runner

    def round(self) -> None:
        self.stepper()

    def after_warmup(self) -> None:
        self.stepper.reset()  # the data waits of the timed rounds only

    def batch(self) -> tuple[Any, Any]:
        return self.runner.random_batch(seed=self.cfg.seed)

    def record(self, warnings: list[str]) -> dict[str, Any]:
        from bench.workloads.loop import INPUT_BOUND_FRACTION

        loop = self.stepper.result()
        if loop.input_bound:
            warnings.append(f"input bound: waiting for data took {loop.data_wait_fraction:.0%} of the loop "
                            f"(> {INPUT_BOUND_FRACTION:.0%})")
        summary = loop.summary()
        return {
            "pipeline": self.cfg.pipeline, "workers": self.cfg.workers, "data": loop.data_name,
            "data_wait_fraction": loop.data_wait_fraction, "input_bound": loop.input_bound,
            "median_wait_s": summary["median_wait_s"], "median_compute_s": summary["median_compute_s"],
        }


class SubjectWorkload(Workload):
    """The duet's unit: one step of the ref's subject (`alexnet.subject.build(config)`), synced.

    ``cfg`` is the subject's plain config dict; only `alexnet.subject` comes from the ref, and
    the case id is the one the subject reports (``subject.case_id``).
    """

    kind = "step"  # the duet saves its cases as step cases

    def build(self) -> None:
        import alexnet.subject as subject_mod

        self.subject = subject_mod.build(self.cfg)
        self.device = self.subject.device
        self.api_version = getattr(subject_mod, "API_VERSION", None)
        self.subject_file = subject_mod.__file__

    def round(self) -> None:
        from bench.instruments.timing import synchronize

        for _ in range(self.steps):
            self.subject.step()
        synchronize(self.device)

    def one(self) -> None:
        from bench.instruments.timing import synchronize

        self.subject.step()
        synchronize(self.device)


WORKLOADS: dict[str, type[Workload]] = {w.kind: w for w in (StepWorkload, LoopWorkload)}


def workload_for(kind: str) -> type[Workload]:
    """The workload type of a suite case's ``kind``; ValueError naming the valid ones."""
    try:
        return WORKLOADS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"workload kind {kind!r} is not valid; use {', '.join(sorted(WORKLOADS))}") from None


@dataclass(frozen=True)
class CaseOptions:
    """How a suite case is measured (the ``options`` of a worker's ``build`` request)."""

    kind: str = StepWorkload.kind
    case_id: str | None = None
    warmup: int = 1
    telemetry_interval_s: float | None = 0.1
    profile_layers: bool = False
    allow_emulated_bf16: bool = False
    cpu_calibration: dict[str, Any] | None = None
    gpu_name: str | None = None
    own_pids: list[int] | None = None
    steps_per_round: int = 1  # decided by the coordinator (`steps_per_round`)
    correctness: bool = True  # the correctness check against fp32 eager (--no-correctness: False)
    warmup_min_s: float = 0.0  # warm up for at least this long as well (CUDA: DEFAULT_CUDA_WARMUP_S)

    def __post_init__(self) -> None:
        workload_for(self.kind)  # fails here, with the valid kinds, rather than mid-build
        if self.warmup < 0:
            raise ValueError(f"warmup {self.warmup} is not valid; it must be >= 0")
        if self.steps_per_round < 1:
            raise ValueError(f"steps_per_round {self.steps_per_round} is not valid; it must be >= 1")

    @property
    def workload(self) -> type[Workload]:
        return workload_for(self.kind)
