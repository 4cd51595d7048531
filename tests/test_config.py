"""RunConfig: validation at the edge, readable ids, flattening."""

from __future__ import annotations

import pytest

from alexnet.config import RunConfig, parse_resolution


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, r"batch size 0 .* >= 1"),
        ({"batch_size": -3}, r"batch size -3"),
        ({"variant": "vgg"}, r"variant 'vgg' .* d2l, torchvision"),
        ({"device": "tpu"}, r"device 'tpu' .* auto, cpu, cuda"),
        ({"amp": "fp8"}, r"amp 'fp8' .* off, bf16, fp16"),
        ({"compile": "fast"}, r"compile 'fast' .* off, default, reduce-overhead, max-autotune"),
        ({"resolution": "224x"}, r"resolution '224x' .* N or HxW"),
        ({"resolution": "64"}, r"64x64 .* smallest valid input is 65x65"),
        ({"mode": "eval"}, r"mode 'eval' .* train, inference"),
        ({"init": "he"}, r"init 'he' .* default, xavier"),
    ],
)
def test_bad_values_name_the_value_and_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(device="cpu", **kwargs) if "device" not in kwargs else RunConfig(**kwargs)


def test_resolution_forms():
    assert parse_resolution("224") == (224, 224)
    assert parse_resolution("224x244") == (224, 244)
    assert parse_resolution(96) == (96, 96)
    assert RunConfig(device="cpu", resolution="224X244").resolution == (224, 244)


def test_case_id_and_flat_round_trip():
    cfg = RunConfig(device="cpu", batch_size=64, amp="bf16", compile="default", channels_last=True)
    assert cfg.case_id() == "train-d2l-b64-224x224-bf16-compile_default-cl-cpu"
    flat = cfg.flat()
    assert flat["resolution"] == "224x224" and flat["height"] == 224
    assert RunConfig.from_flat(flat) == cfg
    with pytest.raises(ValueError, match="unknown config key"):
        RunConfig.from_flat({**flat, "batchsize": 3})
    with pytest.raises(ValueError, match="unknown config key"):
        cfg.replace(batchsize=3)


def test_frozen_and_hashable():
    cfg = RunConfig(device="cpu")
    assert hash(cfg) == hash(RunConfig(device="cpu"))
    with pytest.raises(Exception):
        cfg.batch_size = 3  # type: ignore[misc]
