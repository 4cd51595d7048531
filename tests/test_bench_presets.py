"""Benchmark cases are data: presets, axis overrides and their validation."""

from __future__ import annotations

import pytest

from alexnet.config import RunConfig
from bench.suite.presets import build_loop_cases, PRESETS, build_cases, parse_axis


def test_tiny_preset_is_small_d2l_cpu_cases() -> None:
    cases = build_cases("tiny")
    assert 2 <= len(cases) <= 3
    assert {c.mode for c in cases} == {"train", "inference"}
    assert all(c.variant == "d2l" and c.device == "cpu" and c.batch_size == 2 and c.resolution == (65, 65) for c in cases)
    assert PRESETS["tiny"].rounds >= 10


def test_quick_preset_fits_ci_and_leaves_out_bf16_without_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("alexnet.support.cpu_has_bf16", lambda: False)
    cases = build_cases("quick")
    assert len(cases) + len(build_loop_cases("quick")) <= 12  # step cases + training-loop cases
    assert all(c.device == "cpu" for c in cases)
    assert not any(c.amp == "bf16" for c in cases)
    monkeypatch.setattr("alexnet.support.cpu_has_bf16", lambda: True)
    assert any(c.amp == "bf16" for c in build_cases("quick"))


def test_standard_preset_has_baseline_sweeps_and_full_grid() -> None:
    cases = build_cases("standard")
    base = RunConfig(mode="train", batch_size=256, resolution=(224, 224), device="cuda", tf32=True, cudnn_benchmark=True)
    assert cases[0] == base
    ids = [c.case_id() for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique: they are the pytest ids"
    # full compile x AMP x channels_last grid at the baseline
    for comp in ("off", "default", "reduce-overhead", "max-autotune"):
        for amp in ("off", "bf16", "fp16"):
            for cl in (False, True):
                assert base.replace(compile=comp, amp=amp, channels_last=cl) in cases
    # a one-factor sweep on every axis: some case differs from the baseline in that axis alone
    for field in ("mode", "variant", "batch_size", "resolution", "amp", "compile", "channels_last",
                  "cudnn_benchmark", "deterministic", "tf32"):
        assert any(getattr(c, field) != getattr(base, field) and c == base.replace(**{field: getattr(c, field)})
                   for c in cases), field


def test_full_preset_is_the_cartesian_product() -> None:
    cases = build_cases("full", {"variant": ["d2l"], "batch_size": [32], "resolution": [(224, 224)],
                                 "compile": ["off"], "device": ["cpu"]})
    # mode 2 x amp 3 x channels_last 2 x cudnn_benchmark 2 x deterministic 2 x tf32 2
    assert len(cases) == 2 * 3 * 2 * 2 * 2 * 2


def test_axis_override_replaces_the_axis_in_every_case() -> None:
    cases = build_cases("tiny", {"batch_size": [4, 8], "amp": ["off", "bf16"]})
    assert len(cases) == 3 * 2 * 2
    assert {c.batch_size for c in cases} == {4, 8}
    assert {c.amp for c in cases} == {"off", "bf16"}


def test_parse_axis_values_and_errors() -> None:
    assert parse_axis("resolution", "224,227,224x244") == [(224, 224), (227, 227), (224, 244)]
    assert parse_axis("channels_last", "on,off") == [True, False]
    assert parse_axis("batch_size", "32, 64,32") == [32, 64]
    with pytest.raises(ValueError, match=r"amp 'fp8' is not valid; choose from off, bf16, fp16"):
        parse_axis("amp", "off,fp8")
    with pytest.raises(ValueError, match=r"choose from on, off"):
        parse_axis("tf32", "yes")
    with pytest.raises(ValueError, match=r"batch size '0' is not valid"):
        parse_axis("batch_size", "0")
    with pytest.raises(ValueError, match=r"preset 'huge' is not valid; choose from tiny, quick, standard, full"):
        build_cases("huge")
