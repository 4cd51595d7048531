"""A real run of the benchmark matrix (tiny preset), as a user starts it, and what it saves."""

from __future__ import annotations

import statistics
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

# The documented extra_info keys of every case (docs/saved-run-format.md).
EXTRA_INFO_KEYS = {
    "config", "case_id", "kind", "images_per_s", "images_per_s_iqr", "step_time_s", "step_time_iqr_s", "rounds",
    "flops_per_image", "achieved_tflops", "mfu", "mfu_peak_tflops", "mfu_peak_source", "peak_memory_bytes",
    "peak_memory_reserved_bytes", "memory_kind", "compile_time_s", "correctness", "warnings", "telemetry",
}


def _pytest_bench(*args: str, storage: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", "-rs",
         f"--benchmark-storage=file://{storage}", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.fixture(scope="module")
def tiny_run(shared_tiny_run) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """The session's shared run (tests/conftest.py): ``--preset tiny --amp off,fp16``, saved as ``tiny``.

    fp16 on CPU is unsupported: those 3 cases must be skipped with a reason and recorded."""
    files = sorted(shared_tiny_run.storage.glob("*/0001_tiny.json"))
    assert files == [shared_tiny_run.path], f"expected STORAGE/<machine>/0001_tiny.json, found {list(shared_tiny_run.storage.rglob('*'))}"
    return shared_tiny_run.proc, shared_tiny_run.storage, shared_tiny_run.doc()


def test_run_saves_samples_and_documented_extra_info(tiny_run) -> None:
    _, _, run = tiny_run
    benches = run["benchmarks"]
    assert len(benches) == 3
    for b in benches:
        assert len(b["stats"]["data"]) >= 10, "raw samples are saved by default"
        extra = b["extra_info"]
        assert EXTRA_INFO_KEYS <= set(extra), EXTRA_INFO_KEYS - set(extra)
        cfg = extra["config"]
        assert b["name"].endswith(f"[{extra['case_id']}]")
        assert extra["step_time_s"] == pytest.approx(statistics.median(b["stats"]["data"]))
        assert extra["images_per_s"] == pytest.approx(statistics.median(2 / t for t in b["stats"]["data"]))
        assert extra["images_per_s"] > 0
        assert extra["achieved_tflops"] == pytest.approx(extra["flops_per_image"] * extra["images_per_s"] / 1e12)
        assert extra["mfu"] is not None and extra["mfu"] > 0  # CPU: against the run's measured GEMM
        assert extra["memory_kind"] == "cpu_peak_rss_worker" and extra["peak_memory_bytes"] > 0
        assert extra["memory_rise_bytes"] is not None and extra["idle_rss_bytes"] > 0
        assert extra["compile_time_s"] is None  # the tiny cases are eager
        # fp32 eager on the same batch and weights as the reference: equal up to the rounding of
        # a different convolution algorithm (channels_last).
        assert extra["correctness"]["reference"] == "fp32 eager"
        assert extra["correctness"]["loss_rel_diff"] < 1e-5
        assert extra["correctness"]["max_abs_logits_diff"] < 1e-4
        assert extra["telemetry"]["kind"] == "psutil"
        assert cfg["device"] == "cpu" and cfg["batch_size"] == 2
        # The pace GEMM brackets every timed round: R rounds, R + 1 pace samples.
        pace = extra["pace"]
        assert pace["kernel"] == "mm 512x512 fp32" and pace["flops"] == 2 * 512**3
        assert len(pace["samples"]) == len(b["stats"]["data"]) + 1 and min(pace["samples"]) > 0


def test_run_records_skips_machine_and_calibration(tiny_run) -> None:
    proc, _, run = tiny_run
    section = run["alexnet"]
    assert section["schema_version"] == 3 and section["preset"] == "tiny"
    assert section["failed"] == [] and section["isolation"] == "process"
    assert len(section["skipped"]) == 3
    for s in section["skipped"]:
        assert s["config"]["amp"] == "fp16" and "fp16 autocast is not supported on CPU" in s["reason"]
        assert s["fullname"].startswith("bench/test_matrix.py::test_step[")
    assert section["calibration"]["gflops"] > 0 and section["calibration"]["samples_s"]
    mi = run["machine_info"]
    assert mi["suite_schema_version"] == 3 and mi["torch_version"] and "cpu_model" in mi
    assert "3 skipped" in proc.stdout


def test_pytest_benchmark_reads_the_saved_run(tiny_run) -> None:
    _, storage, _ = tiny_run
    cli = Path(sys.executable).with_name("pytest-benchmark")
    listed = subprocess.run([str(cli), "--storage", f"file://{storage}", "list"], capture_output=True, text=True)
    assert listed.returncode == 0 and "0001_tiny.json" in listed.stdout
    compared = subprocess.run([str(cli), "--storage", f"file://{storage}", "compare", "0001"],
                              capture_output=True, text=True)
    assert compared.returncode == 0, compared.stderr
    assert "train-d2l-b2-65x65-fp32-cpu" in compared.stdout


def test_bad_preset_and_axis_value_are_usage_errors(tmp_path: Path, bench_inline) -> None:
    proc = bench_inline("--preset", "huge", f"--benchmark-storage=file://{tmp_path}")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--preset 'huge' is not valid; choose from tiny, quick, standard, full" in proc.stderr
    proc = bench_inline("--preset", "tiny", "--compile", "fast", f"--benchmark-storage=file://{tmp_path}")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert "compile 'fast' is not valid; choose from off, default, reduce-overhead, max-autotune" in proc.stderr


@pytest.mark.slow
def test_standard_preset_collects_gpu_cases_and_skips_them_on_cpu(tmp_path: Path, bench_inline) -> None:
    proc = bench_inline("--preset", "standard", "--collect-only")
    assert proc.returncode == 0
    assert "test_step[train-d2l-b256-224x224-fp32-cudnnbench-tf32-cuda]" in proc.stdout
    assert "test_step[train-d2l-b256-224x224-bf16-compile_max-autotune-cl-cudnnbench-tf32-cuda]" in proc.stdout
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CUDA cases would run, not skip")
    proc = _pytest_bench("--preset", "standard", "-k", "b32 or inference", storage=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2 skipped" in proc.stdout and "CUDA is not available" in proc.stdout


def test_repo_root_pytest_does_not_collect_bench() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert cfg["testpaths"] == ["tests"]


def test_alexnet_bench_run_wraps_pytest(tmp_path: Path, cli) -> None:
    r = cli("run", "--preset", "tiny", "--save", "x", "--storage", str(tmp_path), "--dry-run", "--", "-k", "train")
    assert r.returncode == 0
    line = r.stdout.strip().splitlines()[0]
    assert "-m pytest" in line and "--preset tiny" in line and "--benchmark-save=x" in line
    assert f"--benchmark-storage=file://{tmp_path}" in line and line.endswith("-k train")
    r = cli("run", "--preset", "huge")
    assert r.returncode == 2 and "preset 'huge' is not valid" in r.stderr
    r = cli("run", "--preset", "tiny", "--save", "x", "--storage", str(tmp_path), "--", "--amp", "fp8")
    assert r.returncode == 2  # pytest's usage error becomes the CLI's bad-input status
    assert not list(tmp_path.rglob("*.json"))


def _case_file(tmp_path: Path, rows) -> Path:
    import json

    path = tmp_path / "cases.json"
    path.write_text(json.dumps({"cases": rows}))
    return path


TINY_INFER = {"mode": "inference", "batch_size": 2, "resolution": "65x65", "device": "cpu"}


def test_a_case_list_replaces_the_preset_and_bad_lists_are_one_line(tmp_path: Path, bench_inline) -> None:
    rows = [{"config": {**TINY_INFER, "device": "cuda", "compile": "reduce-overhead"}},
            {"config": {**TINY_INFER, "device": "cuda", "compile": "reduce-overhead"}, "label": "again"},
            {"config": {"device": "cuda", "amp": "bf16"}, "telemetry_seconds": 5, "timer_check": True},
            {"config": {"batch_size": 32, "resolution": "96x96", "device": "cpu", "pipeline": "device"}, "kind": "loop"}]
    proc = bench_inline("--cases", str(_case_file(tmp_path, rows)), "--collect-only")
    assert proc.returncode == 0, proc.stdout
    ids = [ln.strip() for ln in proc.stdout.splitlines() if "::test_" in ln]
    assert ids == ["bench/test_loop.py::test_loop[loop-train-d2l-b32-96x96-fp32-cpu-device]",
                   "bench/test_matrix.py::test_step[inference-d2l-b2-65x65-fp32-compile_reduce-overhead-cuda]",
                   "bench/test_matrix.py::test_step[inference-d2l-b2-65x65-fp32-compile_reduce-overhead-cuda~again]",
                   "bench/test_matrix.py::test_step[train-d2l-b128-224x224-bf16-cuda]"]  # the rest is the seed's
    bad = [([{"config": TINY_INFER}, {"config": TINY_INFER}], "case 2 is case 1 again"),
           ([{"config": {**TINY_INFER, "batch": 4}}], "unknown config key(s) ['batch']"),
           ([{"config": TINY_INFER, "repeat": 2}], "unknown key(s) repeat; valid keys: config, kind, label"),
           ([{"config": {**TINY_INFER, "amp": "fp8"}}], "amp 'fp8' is not valid"),
           ([{"config": TINY_INFER, "kind": "epoch"}], "kind 'epoch' is not valid; choose from step, loop"),
           ([], "expected a non-empty list of cases")]
    for rows, message in bad:
        proc = bench_inline("--cases", str(_case_file(tmp_path, rows)), "--collect-only")
        assert proc.returncode == pytest.ExitCode.USAGE_ERROR and message in proc.stderr, (message, proc.stderr)
    proc = bench_inline("--cases", str(_case_file(tmp_path, [{"config": TINY_INFER}])), "--batch-sizes", "4",
                        "--collect-only")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR and "cannot be combined with --batch-size" in proc.stderr
    proc = bench_inline("--cases", str(tmp_path / "missing.json"), "--collect-only")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR and "cannot read it" in proc.stderr


@pytest.mark.slow
def test_ctrl_c_to_alexnet_bench_run_saves_what_was_measured_marked_and_leaves_no_process(tmp_path: Path) -> None:
    """SIGINT to `alexnet-bench run` (a terminal's Ctrl-C) mid-case: it is forwarded to pytest once,
    the case's worker is stopped, the measured case is saved with alexnet.interrupted naming the
    case not run, and the command says so in one line, exit 130; no process of the run is left."""
    import json
    import signal
    import time

    from bench.workers import faults

    rows = [{"config": TINY_INFER}, {"config": TINY_INFER, "label": "again"}]
    pidfile, zygotes = tmp_path / "hang.pid", tmp_path / "zygotes"
    env = {**os.environ, "PYTHONPATH": str(REPO), faults.ENABLE_ENV: "1",
           faults.CASE_FAULT_ENV: json.dumps({"~again": "hang"}), faults.PIDFILE_ENV: str(pidfile),
           faults.ZYGOTE_PIDFILE_ENV: str(zygotes)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--save", "cut", "--storage", str(tmp_path / "runs"),
                             "--", "--cases", str(_case_file(tmp_path, rows)), "-p", "no:cacheprovider"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (pidfile.exists() and pidfile.read_text().strip()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the second case's worker hangs at its rounds: the first case is done
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out[-2000:], err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "alexnet-bench run: interrupted (SIGINT); the cases measured so far are saved in "), err
    [saved] = sorted((tmp_path / "runs").glob("*/*_cut.json"))
    doc = json.loads(saved.read_text())
    assert [b["extra_info"]["case_id"] for b in doc["benchmarks"]] == ["inference-d2l-b2-65x65-fp32-cpu"]
    assert doc["alexnet"]["interrupted"] == {"signal": "SIGINT", "not_run": ["inference-d2l-b2-65x65-fp32-cpu~again"],
                                             "collected": 2}
    pids = [int(pidfile.read_text())] + [int(p) for p in zygotes.read_text().split()]
    time.sleep(1)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", pid


def test_the_axis_options_take_the_clis_spelling_and_the_plural(bench_inline) -> None:
    """One spelling documented (the one-config commands', `--batch-size`), the plural accepted."""
    ids = []
    for flags in (["--batch-size", "4", "--resolution", "70", "--mode", "inference"],
                  ["--batch-sizes", "4", "--resolutions", "70", "--modes", "inference"]):
        proc = bench_inline("--preset", "tiny", *flags, "--collect-only")
        assert proc.returncode == 0, proc.stderr
        ids.append(sorted(ln for ln in proc.stdout.splitlines() if "::test_step[" in ln))
    assert ids[0] == ids[1] and ids[0] and all("-b4-70x70-" in i for i in ids[0])
