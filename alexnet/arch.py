"""The two nets as data: each layer's kind and sizes, and what follows from them, without torch.

`alexnet.model` builds the real modules; this module describes the same layers as plain
tuples, so that the questions a coordinator asks before any worker runs ("is this resolution
valid?", "how many FLOPs is one image?") are answered without importing torch (about 1.2 s
here) or counting FLOPs under ``torch.utils.flop_counter.FlopCounterMode`` (about 1.3 s in a
fresh process, most of it importing ``torch._dynamo``). tests/test_model.py checks that these
tables match the real modules layer for layer and that the arithmetic matches FlopCounterMode
exactly, for both variants at several resolutions.

What is counted is what FlopCounterMode counts (``torch/utils/flop_counter.py``): 2 FLOPs per
multiply-add of convolutions and matmuls; bias adds, ReLU, pooling, dropout and the loss are
not counted. A training step adds the backward: the gradient of each weight (the forward's
FLOPs again) and the gradient of each layer's input (again), except the first layer's, whose
input needs no gradient.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

__all__ = ["LAYERS", "Layer", "check_resolution", "flops_per_image", "min_resolution", "output_shapes",
           "param_count"]


class Layer(NamedTuple):
    """One layer: ``kind`` is the torch.nn class name; unused sizes are 0."""

    kind: str
    out: int = 0  # output channels (Conv2d) or features (Linear); output side (AdaptiveAvgPool2d)
    k: int = 0
    stride: int = 1
    pad: int = 0


def _conv(out: int, k: int, stride: int = 1, pad: int = 0) -> Layer:
    return Layer("Conv2d", out, k, stride, pad)


_RELU, _FLAT, _DROP = Layer("ReLU"), Layer("Flatten"), Layer("Dropout")
_POOL = Layer("MaxPool2d", 0, 3, 2, 0)
_CLASSES = 0  # stands for the variant's number of classes in a Linear

# The seed's net (alexnet.model.d2l_alexnet), in its order: 21 layers.
_D2L = (
    _conv(96, 11, 4, 1), _RELU, _POOL,
    _conv(256, 5, 1, 2), _RELU, _POOL,
    _conv(384, 3, 1, 1), _RELU,
    _conv(384, 3, 1, 1), _RELU,
    _conv(256, 3, 1, 1), _RELU, _POOL, _FLAT,
    Layer("Linear", 4096), _RELU, _DROP,
    Layer("Linear", 4096), _RELU, _DROP,
    Layer("Linear", _CLASSES),
)
# torchvision.models.alexnet: features, avgpool (6x6), the flatten inside forward, classifier.
_TORCHVISION = (
    _conv(64, 11, 4, 2), _RELU, _POOL,
    _conv(192, 5, 1, 2), _RELU, _POOL,
    _conv(384, 3, 1, 1), _RELU,
    _conv(256, 3, 1, 1), _RELU,
    _conv(256, 3, 1, 1), _RELU, _POOL,
    Layer("AdaptiveAvgPool2d", 6), _FLAT,
    _DROP, Layer("Linear", 4096), _RELU,
    _DROP, Layer("Linear", 4096), _RELU,
    Layer("Linear", _CLASSES),
)
LAYERS: dict[str, tuple[Layer, ...]] = {"d2l": _D2L, "torchvision": _TORCHVISION}
_CHANNELS = {"d2l": 1, "torchvision": 3}  # alexnet.config.VARIANT_CHANNELS (checked by a test)
_NUM_CLASSES = {"d2l": 10, "torchvision": 1000}


def _layers(variant: str) -> tuple[Layer, ...]:
    if variant not in LAYERS:
        raise ValueError(f"variant {variant!r} is not valid; choose from {', '.join(LAYERS)}")
    return LAYERS[variant]


def _side(size: int, layer: Layer) -> int:
    if layer.kind in ("Conv2d", "MaxPool2d"):
        return math.floor((size + 2 * layer.pad - layer.k) / layer.stride) + 1
    if layer.kind == "AdaptiveAvgPool2d":
        return layer.out
    return size


def output_shapes(variant: str, resolution: tuple[int, int], *, num_classes: int | None = None) -> list[tuple[int, ...]]:
    """The output shape of each layer for one image, as the seed's ``layer_summary`` prints them
    (batch 1). A side that falls below 1 appears as such; `check_resolution` refuses it."""
    classes = _NUM_CLASSES[variant] if num_classes is None else num_classes
    c, (h, w) = _CHANNELS[variant], resolution
    shapes: list[tuple[int, ...]] = []
    flat = None
    for layer in _layers(variant):
        if layer.kind == "Conv2d":
            c = layer.out
        if flat is None:
            h, w = _side(h, layer), _side(w, layer)
        if layer.kind == "Flatten":
            flat = c * h * w
        elif layer.kind == "Linear":
            flat = layer.out or classes
        shapes.append((1, flat) if flat is not None else (1, c, h, w))
    return shapes


@functools.cache  # every RunConfig asks (the full preset builds 11,520)
def min_resolution(variant: str) -> int:
    """Smallest side length every layer accepts (d2l: 65; torchvision: 63).

    Each conv or pool needs an output of at least 1. For d2l, the last 3/2 pool needs >= 3 in,
    so the second pool needs >= 7 in, the first pool >= 15 in, and conv1 (11/4, pad 1) gives 15
    only from floor((H - 9) / 4) + 1 >= 15, i.e. H >= 65.
    """
    size = 1
    while min(min(s[2:]) for s in output_shapes(variant, (size, size)) if len(s) == 4) < 1:
        size += 1
    return size


def check_resolution(variant: str, resolution: tuple[int, int]) -> None:
    """Raise ValueError naming the smallest valid input when a side is too small for ``variant``."""
    lo = min_resolution(variant)
    h, w = resolution
    if h < lo or w < lo:
        raise ValueError(
            f"resolution {h}x{w} is too small for the {variant} net; "
            f"the smallest valid input is {lo}x{lo} (each side >= {lo})"
        )


def _weighted(variant: str, resolution: tuple[int, int], num_classes: int | None) -> list[tuple[Layer, int, int]]:
    """(layer, forward FLOPs per image, parameter count) of each Conv2d and Linear, in order."""
    classes = _NUM_CLASSES[variant] if num_classes is None else num_classes
    c_in, h, w = _CHANNELS[variant], *resolution
    flat = None
    out = []
    for layer in _layers(variant):
        if layer.kind == "Conv2d":
            h, w = _side(h, layer), _side(w, layer)
            out.append((layer, 2 * c_in * layer.out * layer.k * layer.k * h * w,
                        layer.out * c_in * layer.k * layer.k + layer.out))
            c_in = layer.out
        elif layer.kind == "Linear":
            n = layer.out or classes
            out.append((layer, 2 * flat * n, flat * n + n))
            flat = n
        elif layer.kind == "Flatten":
            flat = c_in * h * w
        elif flat is None:
            h, w = _side(h, layer), _side(w, layer)
    return out


def flops_per_image(variant: str, resolution: tuple[int, int], *, train: bool = False,
                    num_classes: int | None = None) -> int:
    """FLOPs of one image through ``variant`` (forward; forward and backward when ``train``), as
    FlopCounterMode counts them (module docstring)."""
    check_resolution(variant, resolution)
    fwd = [f for _, f, _ in _weighted(variant, resolution, num_classes)]
    if not train:
        return sum(fwd)
    return 3 * sum(fwd) - fwd[0]  # weight and input gradients; the first layer's input needs none


def param_count(variant: str, resolution: tuple[int, int], *, num_classes: int | None = None) -> int:
    """Parameters (weights and biases) of ``variant`` built for ``resolution``: the d2l net's first
    Linear grows with the input, torchvision's does not (its 6x6 adaptive pool)."""
    check_resolution(variant, resolution)
    return sum(p for _, _, p in _weighted(variant, resolution, num_classes))
