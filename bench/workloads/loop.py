"""The training loop as a benchmark: fetch, move, forward, backward, step, for N steps.

A step-only benchmark feeds the model one fixed batch and hides the input pipeline. Here every
step takes its batch from a real pipeline (`alexnet.pipeline`), and each step's wall time is
split, by measurement, into waiting for data (fetch + move to the device, synchronised) and
compute (the training step, synchronised). ``input_bound`` is set when waiting for data takes
more than `INPUT_BOUND_FRACTION` of the loop.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, field

from alexnet.config import RunConfig
from alexnet.data import load_data
from alexnet.pipeline import make_pipeline, timed_batches
from alexnet.runtime import StepRunner, backend_switches, seed_everything, synchronize

__all__ = ["INPUT_BOUND_FRACTION", "LoopResult", "LoopStepper", "run_loop"]

INPUT_BOUND_FRACTION = 0.10  # input-bound: data wait above 10% of the step (docs/saved-run-format.md)


@dataclass
class LoopResult:
    cfg: RunConfig
    data_name: str
    wait_s: list[float] = field(default_factory=list)  # per timed step
    compute_s: list[float] = field(default_factory=list)  # per timed step
    warmup_s: float = 0.0

    @property
    def step_s(self) -> list[float]:
        return [w + c for w, c in zip(self.wait_s, self.compute_s)]

    @property
    def data_wait_fraction(self) -> float:
        return sum(self.wait_s) / sum(self.step_s)

    @property
    def input_bound(self) -> bool:
        return self.data_wait_fraction > INPUT_BOUND_FRACTION

    @property
    def images_per_s(self) -> float:
        """Loop throughput: images over the summed wall time of the timed steps."""
        return self.cfg.batch_size * len(self.step_s) / sum(self.step_s)

    def summary(self) -> dict:
        return {
            "pipeline": self.cfg.pipeline,
            "workers": self.cfg.workers,
            "data": self.data_name,
            "images_per_s": self.images_per_s,
            "data_wait_fraction": self.data_wait_fraction,
            "input_bound": self.input_bound,
            "median_wait_s": statistics.median(self.wait_s),
            "median_compute_s": statistics.median(self.compute_s),
            "steps": len(self.step_s),
            "warmup_s": self.warmup_s,
        }


class LoopStepper:
    """One full training-loop step per call: next batch from the pipeline, move, train step.

    Build it inside `backend_switches(cfg)`. Each call appends its measured data wait and
    compute time to ``wait_s`` / ``compute_s``; `reset` clears them after warm-up. Batches
    cycle through the training set (a fresh shuffle on every pass, as in training).
    """

    def __init__(self, cfg: RunConfig, *, synthetic_size: int | None = None, download: bool = False) -> None:
        if cfg.mode != "train":
            raise ValueError(f"mode {cfg.mode!r} is not valid for a training-loop case; use train")
        # The seed's pipeline (Resize + ToTensor on PIL images) and the FashionMNIST reader are
        # torchvision's; the device pipeline on the synthetic set needs none of it.
        if cfg.pipeline == "dataloader" or cfg.data == "fashion-mnist":
            from alexnet.support import torchvision_missing

            missing = torchvision_missing()
            if missing:
                from bench.workloads.measure import UnsupportedCase

                what = "the dataloader pipeline" if cfg.pipeline == "dataloader" else "reading FashionMNIST"
                raise UnsupportedCase(f"{what} needs torchvision, which is not importable here")
        seed_everything(cfg.seed)
        self.data = load_data(cfg.data, cfg.resolution, data_root=cfg.data_root, download=download,
                              synthetic_size=synthetic_size, seed=cfg.seed, transform=cfg.pipeline == "dataloader")
        self.cfg = cfg
        self.runner = StepRunner.build(cfg)
        pipeline = make_pipeline(self.data.train, cfg, shuffle=True, seed=cfg.seed)
        self._batches = timed_batches(itertools.chain.from_iterable(itertools.repeat(pipeline)), self.runner)
        self.wait_s: list[float] = []
        self.compute_s: list[float] = []

    def __call__(self) -> None:
        x, y, wait_s = next(self._batches)
        c0 = time.perf_counter()
        self.runner.train_step(x, y)
        synchronize(self.cfg.device)
        self.compute_s.append(time.perf_counter() - c0)
        self.wait_s.append(wait_s)

    def reset(self) -> None:
        self.wait_s.clear()
        self.compute_s.clear()

    def result(self, *, warmup_s: float = 0.0) -> LoopResult:
        return LoopResult(cfg=self.cfg, data_name=self.data.name, wait_s=list(self.wait_s),
                          compute_s=list(self.compute_s), warmup_s=warmup_s)


def run_loop(
    cfg: RunConfig,
    *,
    steps: int,
    warmup: int = 2,
    synthetic_size: int | None = None,
    download: bool = False,
) -> LoopResult:
    """Run ``warmup`` untimed then ``steps`` timed full-loop training steps.

    Data: ``cfg.data`` (synthetic by default; real FashionMNIST with ``data_root``). Warm-up
    absorbs worker start-up, lazy initialisation, autotuning and compilation.
    """
    if steps < 1:
        raise ValueError(f"steps {steps} is not valid; it must be >= 1")
    with backend_switches(cfg):
        stepper = LoopStepper(cfg, synthetic_size=synthetic_size, download=download)
        t0 = time.perf_counter()
        for _ in range(warmup):
            stepper()
        warmup_s = time.perf_counter() - t0
        stepper.reset()
        for _ in range(steps):
            stepper()
        return stepper.result(warmup_s=warmup_s)
