"""The measured subject's entry point: what `alexnet-bench ab` loads from each ref.

A duet (docs/compare.md) times two versions of the subject side by side with *one*
instrument: the timing, the pace kernel and the worker protocol come from the `ab` that runs;
only this module, and what it builds (model, step, config handling), come from each ref's
worktree. So it is small, plain and stable:

``build(config) -> Subject``
    ``config`` is a flattened `RunConfig` (`RunConfig.flat()`: plain JSON values). The
    returned `Subject` holds one ready step of that config: ``step()`` runs one training step
    (forward, loss, backward, optimizer step) or one inference forward on a fixed random batch,
    on ``device``, and does *not* synchronise (the instrument does, so it owns the clock).
    ``close()`` restores the backend switches the build set.

`API_VERSION` changes when that contract changes. A ref without this module predates the
duet; `ab` then runs both refs in the process-level flow, and says so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from alexnet.config import RunConfig

__all__ = ["API_VERSION", "Subject", "build"]

API_VERSION = 1


@dataclass
class Subject:
    step: Callable[[], Any]
    device: str
    batch_size: int
    case_id: str
    close: Callable[[], None]


def build(config: Mapping[str, Any]) -> Subject:
    """One config's step, built and ready (not yet run: its first call is the cold step)."""
    from alexnet.runtime import StepRunner, backend_switches, seed_everything

    cfg = RunConfig.from_flat(dict(config))
    stack = contextlib.ExitStack()
    stack.enter_context(backend_switches(cfg))
    seed_everything(cfg.seed)
    runner = StepRunner.build(cfg)
    x, y = runner.random_batch(seed=cfg.seed)
    return Subject(step=lambda: runner.step(x, y), device=cfg.device, batch_size=cfg.batch_size,
                   case_id=cfg.case_id(), close=stack.close)
