"""FLOP counts with ``torch.utils.flop_counter.FlopCounterMode``: the reference for `alexnet.arch`.

The suite records `alexnet.arch.flops_per_image`, the same count worked out from the layer
table without torch; tests/test_model.py checks that the two agree exactly. Counting here
costs about 1.3 s in a fresh process (the mode imports ``torch._dynamo``).

FlopCounterMode counts 2 FLOPs per multiply-add for convolutions and matmuls; bias adds,
ReLU and pooling are not counted. Reference figures (docs/measurement-notes.md, "AlexNet
arithmetic"): the d2l net at 1x224x224 is 1.876 GFLOP forward and 5.561 GFLOP for a training
step (conv1 computes no input gradient); torchvision's AlexNet at 3x224x224 is 1.428 GFLOP
forward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from alexnet.config import VARIANT_CHANNELS, VARIANT_CLASSES

__all__ = ["count_flops", "counted_flops_per_image"]


def count_flops(model: nn.Module, x: torch.Tensor, *, train: bool = False) -> int:
    """Total FLOPs of one forward (and backward when ``train``) of ``model`` on ``x``."""
    was_training = model.training
    model.train(train)
    counter = FlopCounterMode(display=False)
    try:
        if train:
            y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            with counter:
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with counter, torch.no_grad():
                model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def counted_flops_per_image(variant: str, resolution: tuple[int, int], *, train: bool = False) -> int:
    """FLOPs per image for a fresh net of ``variant`` at ``resolution`` (counted, on CPU)."""
    from alexnet.model import build_model

    model = build_model(variant, resolution=resolution, num_classes=VARIANT_CLASSES[variant])
    x = torch.zeros(1, VARIANT_CHANNELS[variant], *resolution)
    return count_flops(model, x, train=train)
