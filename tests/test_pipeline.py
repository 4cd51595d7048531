"""The two input pipelines feed the same values; the loop benchmark splits wait and compute."""

from __future__ import annotations

import pytest
import torch

from alexnet.config import RunConfig
from alexnet.data import load_data
from bench.workloads.loop import run_loop
from alexnet.pipeline import DevicePipeline, make_pipeline
from tests.conftest import run_cli


@pytest.mark.parametrize("res", [(65, 65), (96, 96), (224, 244)])
def test_device_pipeline_matches_seed_transform(res):
    """Same sample, same values, up to PIL-vs-torch bilinear rounding: at most 1/255."""
    cfg = RunConfig(device="cpu", resolution=res, batch_size=8, pipeline="device")
    data = load_data("synthetic", res, synthetic_size=60)
    pipe = DevicePipeline(data.train, cfg, shuffle=False)
    dev = pipe.transform(pipe.data)
    ref = torch.stack([data.train[i][0] for i in range(60)])  # Resize + ToTensor on PIL images
    levels = (dev - ref).abs() * 255
    assert dev.shape == ref.shape == (60, 1, *res)
    assert levels.max() <= 1.0 + 1e-4
    assert levels.mean() < 0.25


def test_pipelines_yield_the_same_batches_for_the_same_seed():
    data = load_data("synthetic", (65, 65), synthetic_size=40)
    base = dict(device="cpu", resolution=(65, 65), batch_size=8)
    dl = make_pipeline(data.train, RunConfig(**base, pipeline="dataloader"), shuffle=False)
    dp = make_pipeline(data.train, RunConfig(**base, pipeline="device"), shuffle=False)
    for (xa, ya), (xb, yb) in zip(dl, dp):
        assert torch.equal(ya, yb)
        assert (xa - xb).abs().max() * 255 <= 1.0 + 1e-4


def test_device_pipeline_refuses_workers():
    data = load_data("synthetic", (65, 65), synthetic_size=20)
    with pytest.raises(ValueError, match="uses no workers"):
        make_pipeline(data.train, RunConfig(device="cpu", resolution=65, pipeline="device", workers=2), shuffle=True)


@pytest.mark.parametrize("pipeline, workers", [("device", 0), ("dataloader", 1)])
def test_loop_benchmark_measures_the_split(pipeline, workers):
    cfg = RunConfig(device="cpu", resolution=(65, 65), batch_size=4, pipeline=pipeline, workers=workers)
    r = run_loop(cfg, steps=4, warmup=1, synthetic_size=40)
    assert len(r.wait_s) == len(r.compute_s) == 4
    assert all(w > 0 for w in r.wait_s) and all(c > 0 for c in r.compute_s)
    assert 0 < r.data_wait_fraction < 1
    assert r.input_bound == (r.data_wait_fraction > 0.10)
    s = r.summary()
    assert s["pipeline"] == pipeline and s["data"] == "synthetic" and s["images_per_s"] > 0


def test_loop_cycles_past_one_epoch():
    cfg = RunConfig(device="cpu", resolution=(65, 65), batch_size=8, pipeline="device")
    r = run_loop(cfg, steps=7, warmup=1, synthetic_size=24)  # 3 batches per pass
    assert len(r.step_s) == 7


@pytest.mark.parametrize("extra", [["--pipeline", "device"], ["--pipeline", "dataloader", "--workers", "1"]])
@pytest.mark.slow
def test_train_cli_prints_data_wait_share(tmp_path, extra):
    r = run_cli("train", "--data", "synthetic", "--epochs", "1", "--batch-size", "16", "--resolution", "65",
                "--device", "cpu", "--synthetic-size", "48", "--out", str(tmp_path / "o"), *extra)
    assert r.returncode == 0, r.stderr
    epoch = [line for line in r.stdout.splitlines() if line.startswith("epoch 1/1")]
    assert epoch and "data wait" in epoch[0] and "% of the training pass" in epoch[0]
    assert f"pipeline {extra[1]}" in r.stdout
