"""Training-loop cases in the suite (bench/test_loop.py): present in the presets, measured end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.suite.presets import build_loop_cases, loop_case_id
from tests.conftest import REPO


def test_quick_and_standard_presets_have_loop_cases_for_both_pipelines():
    quick = build_loop_cases("quick")
    assert {c.pipeline for c in quick} == {"dataloader", "device"}
    assert all(c.mode == "train" and c.variant == "d2l" and c.data == "synthetic" for c in quick)
    standard = build_loop_cases("standard")
    assert {(c.batch_size, c.resolution) for c in standard} == {(128, (224, 224))}  # the seed's settings
    assert {c.pipeline for c in standard} == {"dataloader", "device"}


def test_loop_cases_follow_overrides_and_filters(tmp_path):
    assert build_loop_cases("quick", {"mode": ["inference"]}) == []
    assert build_loop_cases("quick", {"variant": ["torchvision"]}) == []
    cases = build_loop_cases("quick", {"batch_size": [4, 8]}, pipelines=["device"], data_root=str(tmp_path))
    assert [(c.batch_size, c.pipeline, c.data) for c in cases] == [(4, "device", "fashion-mnist"), (8, "device", "fashion-mnist")]
    ids = {loop_case_id(c) for c in build_loop_cases("quick")}
    assert ids == {"loop-train-d2l-b32-96x96-fp32-cpu-device", "loop-train-d2l-b32-96x96-fp32-cpu-dataloader-w1"}


@pytest.mark.slow
def test_loop_cases_save_the_data_wait_split(tmp_path):
    cmd = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", "-k", "test_loop",
           "--preset", "quick", "--batch-sizes", "4", "--resolutions", "65",
           "--benchmark-save=loop", f"--benchmark-storage=file://{tmp_path}"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = json.loads(next(tmp_path.glob("*/0001_loop.json")).read_text())
    loops = run["benchmarks"]
    assert {b["extra_info"]["pipeline"] for b in loops} == {"dataloader", "device"}
    for b in loops:
        e = b["extra_info"]
        assert e["kind"] == "loop" and e["data"] == "synthetic"
        assert 0 < e["data_wait_fraction"] < 1
        assert e["input_bound"] == (e["data_wait_fraction"] > 0.10)
        assert len(b["stats"]["data"]) >= 10
        for key in ("config", "images_per_s", "step_time_s", "flops_per_image", "peak_memory_bytes", "correctness"):
            assert key in e, key


def test_bad_pipeline_is_a_usage_error(bench_inline):
    r = bench_inline("--collect-only", "--pipelines", "gpu")
    assert r.returncode == 4
    assert "--pipelines 'gpu' is not valid; choose from dataloader, device" in r.stderr
