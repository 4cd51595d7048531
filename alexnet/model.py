"""The reference AlexNet of the d2l.ai chapter, and torchvision's AlexNet as a second variant.

Initialisation, and why the default is PyTorch's own:
    The seed calls ``self.net.apply(d2l.init_cnn)``, and ``d2l.init_cnn`` only touches modules
    whose type *is* ``nn.Linear`` or ``nn.Conv2d``. At that moment the layers are still
    ``LazyLinear`` / ``LazyConv2d`` (they become ``Linear`` / ``Conv2d`` only after their first
    forward), so the call does nothing and the chapter trains with PyTorch's default
    (Kaiming-uniform, a=sqrt(5)) initialisation. ``init="default"`` reproduces that faithfully.
    ``init="xavier"`` materialises the lazy layers with a dummy forward first, then applies
    Xavier-uniform to every conv and linear weight, which is what ``init_cnn`` meant to do.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "D2LAlexNet",
    "build_model",
    "check_resolution",
    "d2l_alexnet",
    "layer_summary",
    "min_resolution",
    "param_count",
    "summary_layers",
    "torchvision_alexnet",
    "torchvision_missing",
]


def d2l_alexnet(num_classes: int = 10) -> nn.Sequential:
    """The seed's ``AlexNet.net``, layer for layer (21 layers)."""
    return nn.Sequential(
        nn.LazyConv2d(96, kernel_size=11, stride=4, padding=1),
        nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.LazyConv2d(256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.LazyConv2d(384, kernel_size=3, padding=1), nn.ReLU(),
        nn.LazyConv2d(384, kernel_size=3, padding=1), nn.ReLU(),
        nn.LazyConv2d(256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2), nn.Flatten(),
        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.LazyLinear(num_classes),
    )


class D2LAlexNet(nn.Module):
    """The seed's ``AlexNet(lr, num_classes)``: a module holding ``self.net``.

    Kept as a wrapper (rather than returning the Sequential) so that parameter names match
    the seed's (``net.0.weight`` ...) and layers are reachable as ``model.net[i]``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = d2l_alexnet(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def torchvision_missing() -> str | None:
    """Why the torchvision variant cannot be built here (torchvision not importable), or None.

    torchvision is imported only when its variant is used: a machine with torch alone (such as
    a GPU box with a preinstalled torch and ``pip install --no-deps -e .``) runs the d2l net,
    and skips the torchvision variant with this reason (`alexnet.runtime.unsupported_reason`).
    """
    try:
        import torchvision.models  # noqa: F401
    except ImportError as exc:
        return f"the torchvision variant needs torchvision, which is not importable here ({exc})"
    return None


def torchvision_alexnet(num_classes: int = 1000) -> nn.Module:
    """torchvision's AlexNet with no pretrained weights (3x224x224 in, 1000 classes out)."""
    why = torchvision_missing()
    if why:
        raise ValueError(why)
    from torchvision.models import alexnet

    return alexnet(weights=None, num_classes=num_classes)


def _xavier_(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)


def build_model(
    variant: str = "d2l",
    *,
    init: str = "default",
    resolution: tuple[int, int] = (224, 224),
    num_classes: int | None = None,
) -> nn.Module:
    """Build a variant on the CPU, with its lazy layers materialised for ``resolution``.

    Lazy layers are materialised here (one forward of a zero image) so that parameter
    counts, optimizers, ``.to(device)`` and ``torch.compile`` all see real tensors.
    The default initialisation is whatever that first forward gives: PyTorch's own.
    """
    from alexnet.config import VARIANT_CHANNELS, VARIANT_CLASSES, VARIANTS

    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not valid; choose from {', '.join(VARIANTS)}")
    if init not in ("default", "xavier"):
        raise ValueError(f"init {init!r} is not valid; choose from default, xavier")
    check_resolution(variant, resolution)
    classes = VARIANT_CLASSES[variant] if num_classes is None else num_classes
    model = D2LAlexNet(classes) if variant == "d2l" else torchvision_alexnet(classes)
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, VARIANT_CHANNELS[variant], *resolution))
        model.train()
    if init == "xavier":
        _xavier_(model)
    return model


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary_layers(model: nn.Module) -> list[nn.Module]:
    """The layers in network order, as the seed's ``layer_summary`` walks them.

    For torchvision's AlexNet the flatten inside ``forward`` is made explicit.
    """
    if isinstance(model, D2LAlexNet):
        return list(model.net)
    if isinstance(model, nn.Sequential):
        return list(model)
    return [*model.features, model.avgpool, nn.Flatten(), *model.classifier]


def layer_summary(model: nn.Module, x_shape: tuple[int, ...]) -> list[str]:
    """The seed's ``layer_summary``: one line per layer, in its exact format.

    d2l prints ``print(layer.__class__.__name__, 'output shape:\\t', X.shape)``, which puts a
    space on each side of the tab-terminated string.
    """
    lines = []
    x = torch.randn(*x_shape)
    model.eval()
    with torch.no_grad():
        for layer in summary_layers(model):
            x = layer(x)
            lines.append(f"{layer.__class__.__name__} output shape:\t {x.shape}")
    return lines


def _out(size: int, k: int, s: int, p: int) -> int:
    return math.floor((size + 2 * p - k) / s) + 1


def _spatial_ops(variant: str) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of each size-changing layer, read off the real modules."""
    from alexnet.config import VARIANTS

    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not valid; choose from {', '.join(VARIANTS)}")
    layers = list(d2l_alexnet()) if variant == "d2l" else list(torchvision_alexnet().features)
    ops = []
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.LazyConv2d, nn.MaxPool2d)):
            k, s, p = (m.kernel_size, m.stride, m.padding)
            as1 = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731 - square kernels only
            ops.append((as1(k), as1(s), as1(p)))
    return ops


_MIN_RES_CACHE: dict[str, int] = {}


def min_resolution(variant: str) -> int:
    """Smallest side length every layer accepts (d2l: 65; torchvision: 63).

    Worked from the layer arithmetic: each conv/pool needs an output of at least 1.
    For d2l, the last 3/2 pool needs >= 3 in, so the second pool needs >= 7 in, the first
    pool >= 15 in, and conv1 (11/4, pad 1) gives 15 only from floor((H - 9) / 4) + 1 >= 15,
    i.e. H >= 65. The same search runs over the real module list, so it cannot drift from it.
    """
    if variant not in _MIN_RES_CACHE:
        ops = _spatial_ops(variant)
        size = 1
        while True:
            s = size
            ok = True
            for k, st, p in ops:
                s = _out(s, k, st, p)
                if s < 1:
                    ok = False
                    break
            if ok:
                break
            size += 1
        _MIN_RES_CACHE[variant] = size
    return _MIN_RES_CACHE[variant]


def check_resolution(variant: str, resolution: tuple[int, int]) -> None:
    if variant == "torchvision" and torchvision_missing():
        # The module list to check against is torchvision's; without it the config stays valid
        # as data (a case can still be listed, saved and skipped with its reason).
        return
    lo = min_resolution(variant)
    h, w = resolution
    if h < lo or w < lo:
        raise ValueError(
            f"resolution {h}x{w} is too small for the {variant} net; "
            f"the smallest valid input is {lo}x{lo} (each side >= {lo})"
        )
