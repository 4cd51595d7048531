"""A duet side's case (`bench.duet.session`, ``alexnet-bench ab``): the ref's subject, timed by this tool.

`SubjectSession` builds a `SubjectWorkload` (only `alexnet.subject` comes from the ref), times
its cold step (one step), warms it up, then runs timed rounds with this tool's clock and pace
kernel (`bench.instruments.timing`), ``rewarm`` untimed rounds before each. A round is
``steps_per_round`` back-to-back steps and one sync, saved per step, as a suite case's; both
sides get the same count, from the config (`bench.workloads.workload.config_steps_per_round`). It imports nothing else of
the ref: not `bench.workloads.measure`, which builds the tool's own model.
"""

from __future__ import annotations

from typing import Any

from bench.workloads.workload import SubjectWorkload

__all__ = ["SubjectSession"]


class SubjectSession:
    """A duet side's case: the ref's subject, timed by this tool's rounds and pace kernel."""

    def __init__(self, config: dict[str, Any], *, warmup: int, steps_per_round: int = 1) -> None:
        from bench.instruments.timing import PaceKernel, cold_step_time, warm_up

        self.steps_per_round = steps_per_round
        self.workload = SubjectWorkload(config, steps=steps_per_round)
        self.workload.build()
        self.case_id = self.workload.subject.case_id
        self.round = self.workload.round
        self.pace = PaceKernel(self.workload.device)
        self.cold_s = cold_step_time(self.workload.one, device=self.workload.device)
        warm_up(self.round, rounds=warmup)
        self.workload.after_warmup()
        self.samples: list[float] = []
        self.api_version = self.workload.api_version
        self.subject_file = self.workload.subject_file

    def rounds(self, n: int, *, pace: bool = True, pace_after: bool = True, rewarm: int = 0) -> dict[str, Any]:
        from bench.instruments.timing import timed_rounds

        before = len(self.pace.samples)
        out = timed_rounds(self.round, n, pace=self.pace if pace else None, pace_after=pace_after, rewarm=rewarm,
                           steps_per_round=self.steps_per_round)
        self.samples.extend(out)
        return {"samples": out, "pace": self.pace.samples[before:]}

    def close(self) -> None:
        pass
