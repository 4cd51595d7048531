"""``alexnet-bench summary``: the seed's layer table, then parameters and forward FLOPs."""

from __future__ import annotations

import argparse

from alexnet.config import VARIANT_CHANNELS, VARIANTS, parse_resolution

NAME = "summary"
HELP = "print the seed's layer table (d2l layer_summary format), parameter count and FLOPs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="d2l", help=f"{' | '.join(VARIANTS)} (default d2l)")
    p.add_argument("--resolution", default="224", help="N or HxW, e.g. 224 or 224x244 (default 224)")


def run(args: argparse.Namespace) -> int:
    from alexnet.flops import count_flops
    from alexnet.model import build_model, check_resolution, layer_summary, param_count

    if args.variant not in VARIANTS:
        raise ValueError(f"variant {args.variant!r} is not valid; choose from {', '.join(VARIANTS)}")
    res = parse_resolution(args.resolution)
    check_resolution(args.variant, res)
    shape = (1, VARIANT_CHANNELS[args.variant], *res)
    # A fresh net, as the seed's `AlexNet().layer_summary(...)`: lazy layers materialise
    # during the walk, which is why their class names print as Conv2d / Linear.
    model = build_model(args.variant, resolution=res)
    for line in layer_summary(model, shape):
        print(line)
    import torch

    flops = count_flops(model, torch.zeros(shape))
    print()
    print(f"Parameters:\t {param_count(model):,}")
    print(f"Forward FLOPs per image:\t {flops / 1e9:.3f} GFLOP ({flops:,}; torch.utils.flop_counter, 2 per multiply-add)")
    return 0
