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

__all__ = ["INPUT_BOUND_FRACTION", "LoopResult", "run_loop"]

INPUT_BOUND_FRACTION = 0.10  # the threshold: data wait above 10% of the step


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


def run_loop(
    cfg: RunConfig,
    *,
    steps: int,
    warmup: int = 2,
    synthetic_size: int | None = None,
    download: bool = False,
) -> LoopResult:
    """Run ``warmup`` untimed then ``steps`` timed full-loop training steps.

    Data: ``cfg.data`` (synthetic by default; real FashionMNIST with ``data_root``). Batches
    cycle through the training set when ``steps`` outruns it; a re-shuffle on each pass is part
    of the loop, as in training.
    """
    if steps < 1:
        raise ValueError(f"steps {steps} is not valid; it must be >= 1")
    if cfg.mode != "train":
        raise ValueError(f"mode {cfg.mode!r} is not valid for a training-loop case; use train")
    seed_everything(cfg.seed)
    data = load_data(cfg.data, cfg.resolution, data_root=cfg.data_root, download=download,
                     synthetic_size=synthetic_size, seed=cfg.seed)
    result = LoopResult(cfg=cfg, data_name=data.name)
    with backend_switches(cfg):
        runner = StepRunner.build(cfg)
        pipeline = make_pipeline(data.train, cfg, shuffle=True, seed=cfg.seed)
        batches = itertools.chain.from_iterable(itertools.repeat(pipeline))  # one pass after another
        timed = timed_batches(batches, runner)
        t0 = time.perf_counter()
        for i, (x, y, wait_s) in enumerate(timed):
            c0 = time.perf_counter()
            runner.train_step(x, y)
            synchronize(cfg.device)
            compute_s = time.perf_counter() - c0
            if i < warmup:  # absorbs worker start-up, lazy init, autotuning, compilation
                if i == warmup - 1:
                    result.warmup_s = time.perf_counter() - t0
                continue
            result.wait_s.append(wait_s)
            result.compute_s.append(compute_s)
            if len(result.wait_s) == steps:
                break
    return result
