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

import torch
from torch import nn

# Re-exported: the torch-free layer table answers these (tests/test_model.py checks it against
# the modules here); the torchvision check imports torchvision only when asked.
from alexnet.arch import check_resolution, min_resolution
from alexnet.support import torchvision_missing

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
