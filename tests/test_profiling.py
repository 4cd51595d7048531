"""Per-layer profiling (bench.profiling) and the ``alexnet-bench profile`` command, on CPU."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from alexnet.config import RunConfig
from alexnet.flops import count_flops
from alexnet.model import build_model, layer_summary, param_count, summary_layers
from bench.profiling import COMPILE_NOTE, REMAINDER_ROWS, profile_layers
from alexnet.runtime import StepRunner

D2L_NAMES = [
    "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "conv4", "relu4",
    "conv5", "relu5", "pool3", "flatten1", "fc1", "relu6", "dropout1", "fc2", "relu7", "dropout2", "fc3",
]
# The acceptance config: coverage >= 90% is promised here (REFERENCE.md measured 94.8%).
TRAIN_CFG = RunConfig(mode="train", batch_size=16, resolution=128, device="cpu")


@pytest.fixture(scope="module")
def train_profile(tmp_path_factory):
    trace = tmp_path_factory.mktemp("prof") / "trace.json"
    return profile_layers(TRAIN_CFG, warmup=1, steps=1, trace_path=trace), trace


def _summary_shapes(variant: str, cfg: RunConfig) -> list[str]:
    """Output shapes from the seed's layer_summary (independent of the profiler)."""
    lines = layer_summary(build_model(variant, resolution=cfg.resolution), (cfg.batch_size, cfg.in_channels, *cfg.resolution))
    shapes = []
    for line in lines:
        dims = line.split("torch.Size([")[1].rstrip("])")
        shapes.append("x".join(d.strip() for d in dims.split(",")))
    return shapes


def test_train_rows_are_the_21_layers_in_network_order_then_the_remainder(train_profile):
    prof, _ = train_profile
    names = [r["layer"] for r in prof.rows]
    assert names == D2L_NAMES + list(REMAINDER_ROWS)
    assert [r["index"] for r in prof.rows] == list(range(len(prof.rows)))
    model = build_model("d2l", resolution=TRAIN_CFG.resolution)
    assert [r["kind"] for r in prof.layer_rows] == [type(m).__name__ for m in summary_layers(model)]
    assert {r["group"] for r in prof.rows[21:]} == {"remainder"}


def test_every_conv_and_linear_gets_forward_and_backward_time(train_profile):
    prof, _ = train_profile
    weighted = [r for r in prof.layer_rows if r["kind"] in ("Conv2d", "Linear")]
    assert len(weighted) == 8
    for r in weighted:
        # conv1 included: its weight gradient is found through the autograd sequence number.
        assert r["fwd_ms"] > 0 and r["bwd_ms"] > 0, r["layer"]
        assert r["gflops_per_s"] == pytest.approx(r["flops"] / (r["total_ms"] * 1e6))


def test_layers_cover_at_least_90_percent_of_the_step(train_profile):
    prof, _ = train_profile
    layer_ms = sum(r["total_ms"] for r in prof.layer_rows)
    assert prof.coverage >= 0.9, prof.format_table()
    assert prof.coverage == pytest.approx(layer_ms / prof.step_ms)
    # The rows (layers + remainder) add up to the profiled step.
    assert sum(r["total_ms"] for r in prof.rows) == pytest.approx(prof.step_ms)
    for r in prof.rows:
        assert r["total_ms"] == pytest.approx(r["fwd_ms"] + r["bwd_ms"])
        assert r["fwd_ms"] >= 0 and r["bwd_ms"] >= 0
    rem = {r["layer"]: r for r in prof.rows if r["group"] == "remainder"}
    assert rem["optimizer"]["total_ms"] > 0 and rem["loss"]["bwd_ms"] > 0


def test_flops_shapes_params_and_memory_agree_with_independent_counts(train_profile):
    prof, _ = train_profile
    cfg = TRAIN_CFG
    model = build_model("d2l", resolution=cfg.resolution)
    x = torch.zeros(cfg.batch_size, 1, *cfg.resolution)
    assert sum(r["flops"] for r in prof.layer_rows) == count_flops(model, x, train=True)
    assert sum(r["fwd_flops"] for r in prof.layer_rows) == count_flops(model, x, train=False)
    # conv1 computes no input gradient: its backward is the weight gradient alone (= forward).
    conv1 = prof.rows[0]
    assert conv1["bwd_flops"] == conv1["fwd_flops"]
    assert prof.rows[3]["bwd_flops"] == 2 * prof.rows[3]["fwd_flops"]
    assert [r["out_shape"] for r in prof.layer_rows] == _summary_shapes("d2l", cfg)
    assert sum(r["params"] for r in prof.layer_rows) == param_count(model)
    for r in prof.layer_rows:
        assert r["act_bytes"] == math.prod(int(d) for d in r["out_shape"].split("x")) * 4  # fp32


def test_overhead_figures_and_records(train_profile):
    prof, _ = train_profile
    assert prof.unprofiled_step_ms > 0 and prof.profiled_step_ms > 0
    assert prof.overhead == pytest.approx(prof.profiled_step_ms / prof.unprofiled_step_ms - 1)
    recs = prof.to_records()
    assert recs == prof.rows and recs[0] is not prof.rows[0]
    d = json.loads(json.dumps(prof.to_dict()))
    assert d["coverage"] == prof.coverage and d["case_id"] == TRAIN_CFG.case_id() and len(d["rows"]) == 26


def test_trace_is_a_chrome_trace_with_layer_ranges_and_backward_events(train_profile):
    _, trace = train_profile
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e.get("name") for e in events}
    assert {f"layer/{i:02d}/{n}" for i, n in enumerate(D2L_NAMES)} <= names
    assert "autograd::engine::evaluate_function: ConvolutionBackward0" in names


def test_inference_has_forward_rows_only():
    cfg = RunConfig(mode="inference", batch_size=4, resolution=65, device="cpu")
    prof = profile_layers(cfg, warmup=1, steps=1)
    assert [r["layer"] for r in prof.rows] == D2L_NAMES + ["other"]
    assert all(r["bwd_ms"] == 0 for r in prof.rows)
    assert all(r["fwd_ms"] > 0 for r in prof.layer_rows if r["kind"] in ("Conv2d", "Linear"))
    assert sum(r["flops"] for r in prof.layer_rows) == count_flops(build_model("d2l", resolution=(65, 65)),
                                                                  torch.zeros(4, 1, 65, 65))
    # Against the forward step: only the glue between ranges is outside the layers.
    assert 0.5 < prof.coverage <= 1.0


def test_torchvision_profiles_the_equivalent_sequential_with_its_flatten():
    cfg = RunConfig(mode="inference", variant="torchvision", batch_size=2, resolution=63, device="cpu")
    prof = profile_layers(cfg, warmup=0, steps=1)
    kinds = [r["kind"] for r in prof.layer_rows]
    assert len(kinds) == 22 and kinds[13:15] == ["AdaptiveAvgPool2d", "Flatten"]
    assert [r["out_shape"] for r in prof.layer_rows] == _summary_shapes("torchvision", cfg)
    assert prof.layer_rows[-1]["out_shape"] == "2x1000"


def test_compiled_config_profiles_the_eager_model_and_says_so():
    cfg = RunConfig(mode="inference", batch_size=2, resolution=65, device="cpu", compile="default")
    prof = profile_layers(cfg, warmup=0, steps=1)
    assert COMPILE_NOTE in prof.notes and COMPILE_NOTE in prof.format_table()
    assert len(prof.layer_rows) == 21


def test_bad_arguments_are_rejected():
    cfg = RunConfig(mode="inference", batch_size=2, resolution=65, device="cpu")
    with pytest.raises(ValueError, match="warmup -1 is not valid"):
        profile_layers(cfg, warmup=-1)
    with pytest.raises(ValueError, match="steps 0 is not valid"):
        profile_layers(cfg, steps=0)
    runner = StepRunner.build(cfg.replace(batch_size=4))
    with pytest.raises(ValueError, match="differs in batch_size"):
        profile_layers(cfg, runner=runner)


def test_cli_writes_table_csv_trace_and_png(cli, tmp_path):
    out = tmp_path / "p"
    args = ["profile", "--mode", "train", "--batch-size", "4", "--resolution", "65", "--device", "cpu",
            "--warmup", "1", "--steps", "1", "--interval", "0.05", "--out", str(out)]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "coverage:" in r.stdout and "conv1" in r.stdout and "profiler overhead" in r.stdout
    assert "telemetry (psutil" in r.stdout
    with open(out / "layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["layer"] for row in rows] == D2L_NAMES + list(REMAINDER_ROWS)
    assert all(float(row["bwd_ms"]) > 0 for row in rows if row["kind"] in ("Conv2d", "Linear"))
    assert "traceEvents" in json.loads((out / "trace.json").read_text())
    png = (out / "layers.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    saved = json.loads((out / "profile.json").read_text())
    assert saved["telemetry"]["kind"] == "psutil" and saved["rows"][0]["layer"] == "conv1"


def _main_exit(capsys, *args: str) -> tuple[int, str]:
    """Run the CLI in-process (no new interpreter: cheap) and return (exit code, stderr)."""
    from bench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return exc.value.code, capsys.readouterr().err


def test_cli_refuses_a_folder_that_holds_a_profile(capsys, tmp_path):
    (tmp_path / "layers.csv").write_text("earlier result\n")
    code, err = _main_exit(capsys, "profile", "--device", "cpu", "--batch-size", "2", "--resolution", "65",
                           "--out", str(tmp_path))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "already holds layers.csv" in err
    assert (tmp_path / "layers.csv").read_text() == "earlier result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.csv"]


@pytest.mark.parametrize(
    "flag, value, message",
    [("--interval", "0", "interval 0.0 is not valid"), ("--mode", "eval", "mode 'eval' is not valid"),
     ("--steps", "0", "--steps 0 is not valid"), ("--amp", "fp16", "fp16 autocast is not supported on CPU")],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path, flag, value, message):
    code, err = _main_exit(capsys, "profile", "--device", "cpu", "--batch-size", "2", "--resolution", "65",
                           flag, value, "--out", str(tmp_path / "x"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "x").exists()


@pytest.mark.gpu
def test_gpu_profile_attributes_kernel_time_to_layers():
    cfg = RunConfig(mode="train", batch_size=64, resolution=128, device="cuda")
    prof = profile_layers(cfg, warmup=2, steps=2)
    assert prof.time_kind == "cuda_kernel"
    for r in prof.layer_rows:
        if r["kind"] in ("Conv2d", "Linear"):
            assert r["fwd_ms"] > 0 and r["bwd_ms"] > 0, r["layer"]
    assert 0 < prof.coverage <= 1.0
