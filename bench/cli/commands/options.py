"""Config options shared by every subcommand that runs the net (train, profile, run, ...).

`add_config_options` adds the flags; `config_from_args` builds a validated `RunConfig`
(raising ValueError with the bad value and the valid ones).
"""

from __future__ import annotations

import argparse
import dataclasses
from types import SimpleNamespace
from typing import Any, Mapping

from alexnet.config import AMP_MODES, COMPILE_MODES, INITS, MODES, VARIANTS, RunConfig, parse_resolution

__all__ = ["add_config_options", "config_from_args", "option_defaults"]


def option_defaults(**overrides: Any) -> SimpleNamespace:
    """RunConfig's field defaults with ``overrides``, *without* building a RunConfig.

    Building one validates the resolution against the real module list, which imports torch;
    the parser of every subcommand is built at start-up, and `compare`, `report` and
    `history` must start without torch. The values are validated when the command builds its
    RunConfig (`config_from_args`).
    """
    d = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}
    unknown = sorted(set(overrides) - set(d))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}")
    d.update(overrides)
    h, w = parse_resolution(d["resolution"])
    return SimpleNamespace(**d, resolution_str=f"{h}x{w}")


def add_config_options(p: argparse.ArgumentParser, *, defaults: Mapping[str, Any] | SimpleNamespace | None = None,
                       recipe: bool = False, batch_size: bool = True) -> None:
    """The run-configuration flags; ``batch_size=False`` leaves ``--batch-size`` out where the command
    chooses the batch itself (max-batch searches for it)."""
    d = defaults if isinstance(defaults, SimpleNamespace) else option_defaults(**(defaults or {}))
    g = p.add_argument_group("run configuration")
    g.add_argument("--mode", default=d.mode, help=f"{' | '.join(MODES)} (default {d.mode})")
    g.add_argument("--variant", default=d.variant, help=f"{' | '.join(VARIANTS)} (default {d.variant})")
    if batch_size:
        g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    g.add_argument("--resolution", default=d.resolution_str, help=f"N or HxW (default {d.resolution_str})")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: cuda if present)")
    g.add_argument("--amp", default=d.amp, help=f"{' | '.join(AMP_MODES)} (default {d.amp})")
    g.add_argument("--compile", default=d.compile, help=f"{' | '.join(COMPILE_MODES)} (default {d.compile})")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    g.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (and cuDNN)")
    g.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and cuDNN convolutions")
    if recipe:
        r = p.add_argument_group("training recipe")
        r.add_argument("--init", default=d.init, help=f"{' | '.join(INITS)} (default {d.init}: the seed's, see README)")
        r.add_argument("--lr", type=float, default=d.lr, help=f"SGD learning rate (default {d.lr})")
        r.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD momentum (default {d.momentum})")
        r.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"SGD weight decay (default {d.weight_decay})")
        r.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")


def config_from_args(args: argparse.Namespace, **overrides) -> RunConfig:
    kw = dict(
        mode=args.mode,
        variant=args.variant,
        resolution=args.resolution,
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        channels_last=args.channels_last,
        cudnn_benchmark=args.cudnn_benchmark,
        deterministic=args.deterministic,
        tf32=args.tf32,
    )
    for name in ("batch_size", "init", "lr", "momentum", "weight_decay", "seed"):
        if hasattr(args, name):
            kw[name] = getattr(args, name)
    kw.update(overrides)
    return RunConfig(**kw)
