"""The reference model: seed-exact layers, init semantics, minimum input, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet import arch
from alexnet.config import VARIANT_CHANNELS, VARIANT_CLASSES, VARIANTS
from alexnet.flops import count_flops, counted_flops_per_image
from alexnet.model import (
    D2LAlexNet,
    build_model,
    d2l_alexnet,
    layer_summary,
    min_resolution,
    param_count,
    summary_layers,
)

GOLDEN = __import__("pathlib").Path(__file__).parent / "golden" / "summary_d2l_224x244.txt"
REFRESH = "python -m bench summary --resolution 224x244 | head -21 > tests/golden/summary_d2l_224x244.txt"


def test_layer_table_matches_seed_golden():
    lines = layer_summary(build_model("d2l", resolution=(224, 244)), (1, 1, 224, 244))
    expected = GOLDEN.read_text().splitlines()
    assert lines == expected, f"layer table drifted from the seed; if intended, refresh with: {REFRESH}"
    assert len(lines) == 21 and lines[13] == "Flatten output shape:\t torch.Size([1, 7680])"


def test_seed_layer_types_and_hyperparameters():
    net = d2l_alexnet()
    kinds = [type(m).__name__ for m in net]
    assert kinds == [
        "LazyConv2d", "ReLU", "MaxPool2d", "LazyConv2d", "ReLU", "MaxPool2d",
        "LazyConv2d", "ReLU", "LazyConv2d", "ReLU", "LazyConv2d", "ReLU", "MaxPool2d", "Flatten",
        "LazyLinear", "ReLU", "Dropout", "LazyLinear", "ReLU", "Dropout", "LazyLinear",
    ]
    convs = [m for m in net if isinstance(m, nn.LazyConv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (96, (11, 11), (4, 4), (1, 1)), (256, (5, 5), (1, 1), (2, 2)),
        (384, (3, 3), (1, 1), (1, 1)), (384, (3, 3), (1, 1), (1, 1)), (256, (3, 3), (1, 1), (1, 1)),
    ]
    assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.5, 0.5]


def test_seed_init_cnn_is_a_no_op_on_lazy_layers():
    """d2l.init_cnn tests `type(m) == nn.Linear or type(m) == nn.Conv2d`: lazy layers fail it."""
    calls = []

    def init_cnn(module):  # d2l.init_cnn, verbatim in spirit
        if type(module) is nn.Linear or type(module) is nn.Conv2d:
            calls.append(module)
            nn.init.xavier_uniform_(module.weight)

    D2LAlexNet().net.apply(init_cnn)
    assert calls == []


def test_default_init_is_pytorch_default_and_xavier_differs():
    torch.manual_seed(0)
    a = build_model("d2l", resolution=(96, 96))
    torch.manual_seed(0)
    b = build_model("d2l", resolution=(96, 96), init="xavier")
    w_a, w_b = a.net[0].weight, b.net[0].weight
    # PyTorch's default for conv: kaiming_uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in) = 1/11 here.
    assert w_a.abs().max() <= 1 / 11 + 1e-6
    # Xavier-uniform bound: sqrt(6 / (fan_in + fan_out)) = sqrt(6 / (121 + 96 * 121)).
    bound = (6 / (121 + 96 * 121)) ** 0.5
    assert w_b.abs().max() <= bound + 1e-6 and w_b.abs().max() > 0.9 * bound
    assert not torch.equal(w_a, w_b)


def test_min_resolution_is_65_and_enforced():
    assert min_resolution("d2l") == 65
    net = build_model("d2l", resolution=(65, 65))
    assert net(torch.zeros(1, 1, 65, 65)).shape == (1, 10)
    with pytest.raises(RuntimeError):  # 64 really is too small for the layers themselves
        d2l_alexnet()(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="65x65"):
        build_model("d2l", resolution=(64, 200))


def test_torchvision_variant_shapes():
    m = build_model("torchvision", resolution=(224, 224))
    assert m(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
    assert param_count(m) == 61_100_840  # torchvision's documented AlexNet size
    assert min_resolution("torchvision") == 63


def test_flops_match_reference_figures():
    # Counted with FlopCounterMode (docs/measurement-notes.md, "AlexNet arithmetic"): 1.876 / 5.561 / 1.428 GFLOP.
    assert counted_flops_per_image("d2l", (224, 224)) / 1e9 == pytest.approx(1.876, abs=1e-3)
    assert counted_flops_per_image("d2l", (224, 224), train=True) / 1e9 == pytest.approx(5.561, abs=1e-3)
    assert counted_flops_per_image("torchvision", (224, 224)) / 1e9 == pytest.approx(1.428, abs=1e-3)
    assert param_count(build_model("d2l")) == pytest.approx(46.8e6, rel=0.01)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_torch_free_layer_table_is_the_real_modules(variant):
    """`alexnet.arch` describes the nets without torch; it must be the modules, layer for layer."""
    model = build_model(variant, resolution=(224, 224))
    real = []
    for m in summary_layers(model):
        as1 = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
        if isinstance(m, nn.Conv2d):
            real.append(arch.Layer("Conv2d", m.out_channels, as1(m.kernel_size), as1(m.stride), as1(m.padding)))
        elif isinstance(m, nn.MaxPool2d):
            real.append(arch.Layer("MaxPool2d", 0, as1(m.kernel_size), as1(m.stride), as1(m.padding)))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            real.append(arch.Layer("AdaptiveAvgPool2d", as1(m.output_size)))
        elif isinstance(m, nn.Linear):
            real.append(arch.Layer("Linear", 0 if m is summary_layers(model)[-1] else m.out_features))
        else:
            real.append(arch.Layer(type(m).__name__))
    assert list(arch.LAYERS[variant]) == real
    assert arch._CHANNELS == VARIANT_CHANNELS and arch._NUM_CLASSES == VARIANT_CLASSES


@pytest.mark.parametrize(("variant", "resolution"), [
    ("d2l", (65, 65)), ("d2l", (224, 224)), ("d2l", (97, 131)), ("d2l", (224, 244)),
    ("torchvision", (63, 63)), ("torchvision", (224, 224)), ("torchvision", (100, 70)),
])
def test_the_arithmetic_matches_flop_counter_mode_and_the_built_net(variant, resolution):
    model = build_model(variant, resolution=resolution)
    x = torch.zeros(1, VARIANT_CHANNELS[variant], *resolution)
    assert arch.flops_per_image(variant, resolution) == count_flops(model, x)
    assert arch.flops_per_image(variant, resolution, train=True) == count_flops(model, x, train=True)
    assert arch.param_count(variant, resolution) == param_count(model)
    model.eval()
    shapes = []
    with torch.no_grad():
        for layer in summary_layers(model):
            x = layer(x)
            shapes.append(tuple(x.shape))
    assert arch.output_shapes(variant, resolution) == shapes

