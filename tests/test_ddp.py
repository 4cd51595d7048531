"""``alexnet-bench ddp``: real 2-rank gloo runs on loopback, the saved run, failures that never hang.

The two end-to-end tests start torchrun for real (2 processes, gloo, 127.0.0.1), at batch 2
and 65x65 so they stay short on the 2-core CPU machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from bench.cli.commands import ddp as ddp_cmd
from bench.ddp import launch as ddp_launch
from alexnet.config import RunConfig
from bench.ddp.rank import FAIL_RANK_ENV, busy_time, combine_telemetry, summarise
from tests.conftest import REPO, run_cli

SMALL = ["--device", "cpu", "--batch-size", "2", "--resolution", "65", "--steps", "3", "--warmup", "1", "--threads", "1"]
# Generous: torchrun and two torch imports take tens of seconds on the shared 2-core machine.
LAUNCH_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    r = run_cli("ddp", "--nproc", "2", *SMALL, "--storage", str(storage), "--save", "t",
                "--timeout", str(LAUNCH_TIMEOUT_S), timeout=2 * LAUNCH_TIMEOUT_S + 60)
    return r, storage


def _saved(storage: Path) -> list[Path]:
    return sorted(storage.glob("*/*.json"))


@pytest.mark.slow
def test_two_gloo_ranks_finish_and_print_the_figures(two_rank_run):
    r, _ = two_rank_run
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for needle in ("baseline, 1 process", "rank 0", "rank 1", "total, 2 processes", "scaling efficiency:", "all-reduce share:"):
        assert needle in out, (needle, out)
    assert "parameters identical on all ranks after the last step: yes" in out


@pytest.mark.slow
def test_saved_run_has_world_size_backend_and_efficiency_from_its_own_samples(two_rank_run):
    from reports.load import load_run, runs_to_frame

    r, storage = two_rank_run
    assert r.returncode == 0, r.stderr
    files = _saved(storage)
    assert [f.name for f in files] == ["0001_t.json"]
    run = load_run(files[0])
    base, ddp = run.benchmarks
    assert base["extra_info"]["config"]["world_size"] == 1 and base["extra_info"]["config"]["dist_backend"] == "none"
    assert ddp["extra_info"]["config"]["world_size"] == 2 and ddp["extra_info"]["config"]["dist_backend"] == "gloo"
    assert ddp["extra_info"]["case_id"] == RunConfig.from_flat(ddp["extra_info"]["config"]).case_id()
    assert ddp["extra_info"]["case_id"].endswith("-cpu-ddp2")
    # Recompute the efficiency from the raw rounds: weak scaling, 2 images per rank per step.
    assert len(ddp["stats"]["data"]) == 3 and len(base["stats"]["data"]) == 3
    base_ips = 2 / statistics.median(base["stats"]["data"])
    ddp_ips = 2 * 2 / statistics.median(ddp["stats"]["data"])
    e = ddp["extra_info"]
    assert e["images_per_s"] == pytest.approx(ddp_ips)
    assert e["scaling_efficiency"] == pytest.approx(ddp_ips / (2 * base_ips))
    assert len(e["per_rank_images_per_s"]) == 2
    # The whole step of a rank is at least as long as its own median step: total <= sum of ranks.
    assert e["images_per_s"] <= sum(e["per_rank_images_per_s"]) * 1.0001
    assert 0 < e["allreduce_fraction"] < 1
    assert e["threads_per_rank"] == base["extra_info"]["threads_per_rank"] == 1
    # MFU per process, against the run's own fp32 GEMM calibration.
    assert e["achieved_tflops"] == pytest.approx(e["flops_per_image"] * e["images_per_s"] / 1e12)
    # The peak of one rank's cores (its threads), from the hardware, not the GEMM (docs/measurement-notes.md).
    assert e["mfu_peak_tflops"] == pytest.approx(run.suite["calibration"]["peak"]["tflops"]["fp32"])
    assert e["mfu"] == pytest.approx(e["achieved_tflops"] / 2 / e["mfu_peak_tflops"])
    frame = runs_to_frame([run])
    assert sorted(frame["world_size"]) == [1, 2]
    assert frame.loc[frame["world_size"] == 2, "scaling_efficiency"].item() == pytest.approx(e["scaling_efficiency"])


@pytest.mark.slow
def test_saved_run_records_failed_isolation_and_rounds_like_the_suites(two_rank_run):
    from runrecord.schema import SCHEMA_VERSION
    from runrecord.store import read_run

    r, storage = two_rank_run
    assert r.returncode == 0, r.stderr
    rec = read_run(_saved(storage)[0])
    s = rec.alexnet
    assert (s.schema_version, s.preset, s.failed, s.skipped, s.isolation) == (SCHEMA_VERSION, "ddp", [], [], "process")
    assert (s.rounds, s.warmup_rounds) == (3, 1)  # SMALL: --steps 3 --warmup 1
    assert s.calibrations == {"cpu": s.calibration} and s.calibration["gflops"] > 0
    assert rec.machine_info["suite_schema_version"] == SCHEMA_VERSION and rec.machine_info["torch_num_threads"] == 1
    base, ddp = rec.benchmarks
    assert (base.isolation.mode, base.isolation.launch) == ("process", "python")
    assert (ddp.isolation.mode, ddp.isolation.launch) == ("process", "torchrun")
    # stats are pytest-benchmark's for the saved rounds
    assert ddp.stats["rounds"] == 3 and ddp.stats["median"] == pytest.approx(statistics.median(ddp.samples))


@pytest.mark.slow
def test_report_draws_the_scaling_curve_from_a_saved_ddp_run(two_rank_run, tmp_path):
    r, storage = two_rank_run
    assert r.returncode == 0, r.stderr
    rep = run_cli("report", str(_saved(storage)[0]), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr
    png = tmp_path / "rep" / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scaling.png" in (tmp_path / "rep" / "index.html").read_text()


@pytest.mark.slow
def test_every_rank_samples_its_own_process_and_the_run_combines_them(two_rank_run):
    r, storage = two_rank_run
    assert r.returncode == 0, r.stderr
    base, ddp = json.loads(_saved(storage)[0].read_text())["benchmarks"]
    tel = ddp["extra_info"]["telemetry"]
    assert tel["kind"] == "psutil", tel["reason"]
    ranks = tel["per_rank"]
    assert [t["rank"] for t in ranks] == [0, 1] and all(t["kind"] == "psutil" for t in ranks)
    assert all(t["images"] == 2 * 3 for t in ranks)  # batch 2 x 3 timed steps, each rank its own
    assert tel["summary"]["images"] == 2 * 2 * 3 and tel["summary"]["ranks"] == 2
    # Two processes' CPU shares add up; each rank's peak RSS is its own process's.
    assert tel["summary"]["cpu_percent_mean"] == pytest.approx(sum(t["summary"]["cpu_percent_mean"] for t in ranks))
    assert tel["summary"]["rss_peak_bytes"] == max(t["summary"]["rss_peak_bytes"] for t in ranks)
    assert base["extra_info"]["telemetry"]["per_rank"][0]["rank"] == 0


def _rank_tel(rank, *, energy_j, power_w, images, kind="nvml"):
    tel = {"kind": kind, "reason": None if kind != "unavailable" else "no NVML here", "interval_s": 0.1,
           "window_s": 5.0, "series": [{"t": 0.0, "power_w": power_w}], "unavailable": {}, "notes": [],
           "summary": {} if kind == "unavailable" else {
               "energy_j": energy_j, "energy_j_per_image": energy_j / images, "power_mean_w": power_w,
               "gpu_util_mean": 90.0 + rank, "temperature_max_c": 60 + rank, "throttle_reasons": ["sw_power_cap"] * rank,
               "window_s": 5.0 + rank}}
    return {"rank": rank, "device": f"cuda:{rank}", "host": "h", "images": images, "telemetry": tel}


def test_energy_per_image_sums_the_ranks_energies_over_their_images():
    ranks = [_rank_tel(0, energy_j=1000.0, power_w=200.0, images=640),
             _rank_tel(1, energy_j=1300.0, power_w=260.0, images=640)]
    tel = combine_telemetry(ranks)
    s = tel["summary"]
    assert s["energy_j"] == 2300.0 and s["images"] == 1280
    assert s["energy_j_per_image"] == pytest.approx(2300.0 / 1280)  # not rank 0's 1000 J over all images
    assert s["power_mean_w"] == 460.0  # two GPUs' power together
    assert s["gpu_util_mean"] == 90.5 and s["temperature_max_c"] == 61 and s["window_s"] == 6.0
    assert s["throttle_reasons"] == ["sw_power_cap"]
    assert [t["device"] for t in tel["per_rank"]] == ["cuda:0", "cuda:1"]
    json.dumps(tel)


def test_a_rank_without_telemetry_leaves_no_short_sum():
    ranks = [_rank_tel(0, energy_j=1000.0, power_w=200.0, images=640),
             _rank_tel(1, energy_j=0.0, power_w=0.0, images=640, kind="unavailable")]
    tel = combine_telemetry(ranks)
    assert tel["kind"] == "nvml"
    assert tel["summary"]["energy_j"] is None and tel["summary"]["energy_j_per_image"] is None
    assert tel["summary"]["power_mean_w"] is None
    assert "rank 1: telemetry unavailable (no NVML here)" in tel["notes"]
    none = combine_telemetry([ranks[1]])
    assert none["kind"] == "unavailable" and none["reason"] == "no NVML here"


@pytest.mark.slow
def test_parameters_identical_across_ranks_after_stepping_on_different_batches(two_rank_run):
    r, storage = two_rank_run
    assert r.returncode == 0, r.stderr
    e = json.loads(_saved(storage)[0].read_text())["benchmarks"][1]["extra_info"]
    before, after = e["param_digest_before"], e["per_rank_param_digest"]
    assert len(after) == 2 and after[0] == after[1], "ranks diverged: gradients were not all-reduced"
    assert after[0] != before, "the timed steps did not change the weights"
    assert e["params_identical"] is True


@pytest.mark.slow
def test_failing_rank_exits_nonzero_with_its_error_and_saves_nothing(tmp_path):
    t0 = time.monotonic()
    r = run_cli("ddp", "--nproc", "2", *SMALL, "--storage", str(tmp_path), "--timeout", str(LAUNCH_TIMEOUT_S),
                env={FAIL_RANK_ENV: "1"}, timeout=2 * LAUNCH_TIMEOUT_S + 60)
    assert r.returncode == 3, (r.stdout, r.stderr)  # the work failed (1 means a regression, never this)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("alexnet-bench ddp: error: the 2-process torchrun run failed"), last
    assert "rank 1: RuntimeError: rank 1 failed on purpose" in last
    assert _saved(tmp_path) == []
    assert time.monotonic() - t0 < 2 * LAUNCH_TIMEOUT_S


def test_a_launch_that_overruns_is_stopped_with_its_detached_children(tmp_path):
    # Mimic torchrun: a parent that ignores SIGTERM, with a worker in its own session.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        f"open({str(tmp_path / 'child.pid')!r}, 'w').write(str(c.pid))\n"
        "time.sleep(600)\n"
    )
    t0 = time.monotonic()
    # 3 s: the script (no torch) starts its child and writes child.pid in well under 1 s.
    with pytest.raises(ddp_launch.RunFailed, match=r"did not finish within --timeout 3 s"):
        ddp_launch.launch([sys.executable, "-c", script], what="the test launch", env={}, timeout_s=3,
                        log=tmp_path / "log", error_dir=tmp_path / "err", grace_s=1)
    assert time.monotonic() - t0 < 40
    child = int((tmp_path / "child.pid").read_text())
    try:
        gone = psutil.Process(child).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped by init
    except psutil.NoSuchProcess:
        gone = True
    assert gone, "the worker outlived the stopped launch"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--nproc", "0"], "--nproc 0"),
        (["--nproc", "2", "--mode", "inference"], "use --mode train"),
        (["--nproc", "2", "--steps", "0"], "--steps 0"),
        (["--nproc", "2", "--device", "cuda:0"] if not torch.cuda.is_available() else ["--nproc", "64", "--device", "cuda"], "cuda"),
        (["--nproc", "2", "--save", "a/b"], "--save 'a/b'"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path, capsys):
    from bench.cli import main  # in-process: the same path as the console script, minus a torch import

    with pytest.raises(SystemExit) as exc:
        main(["ddp", *args, "--storage", str(tmp_path)])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert _saved(tmp_path) == []


def test_the_rank_parses_its_own_flags_without_the_cli():
    code = (
        "import sys\n"
        "from bench.ddp.rank import _config, _parse\n"
        "cfg = _config(_parse(['--device', 'cpu', '--batch-size', '4', '--resolution', '96', '--amp', 'bf16', "
        "'--channels-last', '--steps', '3']))\n"
        "print(cfg.flat()['batch_size'], cfg.resolution, cfg.amp, cfg.channels_last, cfg.tf32, cfg.world_size)\n"
        "print(sorted(m for m in sys.modules if m == 'bench.cli' or m.startswith('bench.cli.')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["4 (96, 96) bf16 True False 1", "[]"]
    # A bad value is RunConfig's own error, naming the valid ones.
    with pytest.raises(ValueError, match="amp 'fp8' is not valid"):
        from bench.ddp.rank import _config, _parse

        _config(_parse(["--device", "cpu", "--amp", "fp8"]))


def test_the_launch_plan_runs_the_ranks_first_then_the_baseline(tmp_path):
    base = RunConfig(device="cpu", resolution=65)
    cfg = base.replace(world_size=2, dist_backend="gloo")
    ddp, baseline = ddp_launch.plan(base, cfg)
    assert (ddp.key, baseline.key) == ("ddp", "baseline")
    cmd = ddp.command(["--steps", "3"])
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[cmd.index("--nproc-per-node") + 1] == "2"
    assert cmd[-3:] == ["bench.ddp.rank", "--steps", "3"]
    assert baseline.command(["--steps", "3"]) == [sys.executable, "-m", "bench.ddp.rank", "--steps", "3"]
    env = ddp_launch.child_env(3, gloo=True)
    assert env["OMP_NUM_THREADS"] == "3" and env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)


def test_config_world_size_and_backend_are_validated_and_in_the_case_id():
    cfg = RunConfig(device="cpu", resolution=65, world_size=4, dist_backend="gloo")
    assert cfg.case_id().endswith("-cpu-ddp4")
    assert RunConfig(device="cpu", resolution=65).case_id().endswith("-cpu")
    assert RunConfig.from_flat(cfg.flat()) == cfg
    for bad, needle in [
        (dict(world_size=0), "world size 0"),
        (dict(world_size=2), "dist_backend 'none'"),
        (dict(dist_backend="mpi"), "none, gloo, nccl"),
        (dict(dist_backend="nccl"), "use gloo on CPU"),
    ]:
        with pytest.raises(ValueError, match=needle):
            RunConfig(device="cpu", resolution=65, **bad)


def test_busy_time_counts_overlapping_all_reduces_once():
    assert busy_time([]) == 0
    assert busy_time([(0.5, 2.0), (0.0, 1.0), (3.0, 4.0)]) == pytest.approx(3.0)
    assert busy_time([(0.0, 4.0), (1.0, 2.0)]) == pytest.approx(4.0)


def test_summarise_takes_the_slowest_rank_per_step():
    def rank(steps, ar, digest):
        return {"step_s": steps, "allreduce_s": ar, "threads": 1, "peak_memory_bytes": 1,
                "memory_kind": "cpu_peak_rss", "param_digest_before": "a", "param_digest_after": digest}

    result = {"config": {"batch_size": 4},
              "ranks": [rank([1.0, 2.0, 1.0], [0.5, 0.5, 0.5], "b"), rank([2.0, 1.0, 1.0], [0.0, 1.0, 0.5], "b")]}
    fig = summarise(result)
    assert fig["step_s"] == [2.0, 2.0, 1.0]
    assert fig["images_per_s"] == pytest.approx(8 / 2.0)
    assert fig["per_rank_images_per_s"] == pytest.approx([4.0, 4.0])
    assert fig["allreduce_fraction"] == pytest.approx((1.5 / 4 + 1.5 / 4) / 2)
    assert fig["params_identical"] and fig["params_changed"]


def test_save_run_takes_the_next_number_and_never_overwrites(tmp_path):
    first = ddp_cmd.save_run([], storage=f"file://{tmp_path}", name="x", threads=1)
    before = first.read_text()
    second = ddp_cmd.save_run([], storage=str(tmp_path), name="x", threads=1)
    assert (first.name, second.name) == ("0001_x.json", "0002_x.json")
    assert first.read_text() == before


@pytest.mark.gpu
def test_two_nccl_ranks_on_two_gpus(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs for 2 nccl ranks; {torch.cuda.device_count()} visible")
    r = run_cli("ddp", "--nproc", "2", "--device", "cuda", "--batch-size", "8", "--resolution", "96", "--steps", "5",
                "--storage", str(tmp_path), timeout=600)
    assert r.returncode == 0, r.stderr
    e = json.loads(_saved(tmp_path)[0].read_text())["benchmarks"][1]["extra_info"]
    assert e["config"]["dist_backend"] == "nccl" and e["params_identical"] is True
    # Each rank sampled its own GPU; the run's J/image is all ranks' energy over all ranks' images.
    tel = e["telemetry"]
    assert tel["kind"] == "nvml", tel["reason"]
    assert [t["device"] for t in tel["per_rank"]] == ["cuda:0", "cuda:1"]
    energies = [t["summary"]["energy_j"] for t in tel["per_rank"]]
    assert all(x is not None and x > 0 for x in energies), tel["unavailable"]
    assert tel["summary"]["energy_j_per_image"] == pytest.approx(sum(energies) / (2 * 8 * 5))


def test_the_energy_window_follows_the_timed_steps_with_one_step_count_for_every_rank(monkeypatch):
    """On a GPU each rank's energy comes from a window of back-to-back steps after the timed ones;
    every rank must take the same number (each all-reduces with the others), so rank 0's count is
    broadcast. Here: a real gloo process group of one rank on the CPU, a 0.3 s window."""
    import socket

    from bench.ddp.rank import energy_window_s, run_worker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    cfg = RunConfig(batch_size=2, resolution=(65, 65), device="cpu", dist_backend="gloo")
    result = run_worker(cfg, steps=3, warmup=1, threads=1, timeout_s=60, window_s=0.3)
    [rank] = result["ranks"]
    window = rank["telemetry_window"]
    median = sorted(rank["step_s"])[1]
    assert window["seconds"] == 0.3 and window["steps"] >= 1 and window["steps"] * median >= 0.3 * 0.99
    assert rank["images"] == 2 * window["steps"] and len(rank["step_s"]) == 3
    assert energy_window_s(cfg) == 0.0 and energy_window_s(cfg.replace(device="cuda")) == 5.0
    plain = run_worker(cfg.replace(dist_backend="none"), steps=3, warmup=1, threads=1, timeout_s=60)
    assert plain["ranks"][0]["telemetry_window"] == {"what": "the timed steps", "steps": 3}
