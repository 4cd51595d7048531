"""``alexnet-bench max-batch``: the search, and the CPU path bounded by --memory-limit."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli.commands.max_batch import Try, _run_try_in_child, parse_bytes, search_max_batch
from bench.workers.faults import ENABLE_ENV, MAX_BATCH_FAULT_ENV as FAULT_ENV, PIDFILE_ENV
from bench.workers.proc import is_fatal_device_error, is_oom
from tests.conftest import REPO


@pytest.mark.parametrize("limit", [1, 2, 37, 64, 65, 1000])
def test_search_finds_the_boundary_in_few_tries(limit: int) -> None:
    tried: list[int] = []

    def fits(b: int) -> Try:
        tried.append(b)
        return Try(b, b <= limit, None, "")

    best, tries = search_max_batch(fits, start=1, upper=4096)
    assert best == limit
    assert len(tries) == len(tried) <= 2 * 13  # doubling then bisection: ~2 log2(limit)
    assert any(b == limit + 1 and not t.fits for b, t in zip(tried, tries))  # the boundary was checked


def test_search_respects_the_cap_and_a_failing_start() -> None:
    assert search_max_batch(lambda b: Try(b, True, None, ""), start=1, upper=100)[0] == 100
    assert search_max_batch(lambda b: Try(b, b <= 5, None, ""), start=64, upper=100)[0] == 5
    assert search_max_batch(lambda b: Try(b, False, None, ""), start=1, upper=100)[0] == 0


def test_parse_bytes() -> None:
    assert parse_bytes("8GiB") == 8 * 2**30
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2GB") == 2 * 10**9
    with pytest.raises(ValueError, match="memory limit '8XB' is not valid"):
        parse_bytes("8XB")


@pytest.mark.slow
def test_cpu_max_batch_within_memory_limit(cli) -> None:
    # A generous limit: every try fits, so the answer is the cap, and the peak is reported.
    r = cli("max-batch", "--device", "cpu", "--mode", "inference", "--resolution", "65",
            "--memory-limit", "64GiB", "--start", "2", "--max-batch", "4", "--steps", "1")
    assert r.returncode == 0, r.stderr
    assert "largest batch that fits: 4 (the --max-batch cap)" in r.stdout
    peaks = [int(m.replace(",", "")) for m in re.findall(r"peak\s+([\d,]+) MiB", r.stdout)]
    assert len(peaks) == 2 and all(p > 0 for p in peaks)
    # A limit below what the process needs at all: nothing fits, one line, exit status 2 (the
    # input asked for too little memory; 1 means a regression, never this).
    r = cli("max-batch", "--device", "cpu", "--mode", "inference", "--resolution", "65",
            "--memory-limit", "100MiB", "--max-batch", "4", "--steps", "1")
    assert r.returncode == 2 and "no batch fits" in r.stderr and "over the memory limit" in r.stdout, (r.stdout, r.stderr)


def test_cpu_max_batch_needs_a_memory_limit(cli_main) -> None:
    r = cli_main("max-batch", "--device", "cpu")
    assert r.returncode == 2 and "--memory-limit is required" in r.stderr


@pytest.mark.parametrize("message", [
    # PyTorch's wording of the sticky CUDA errors (cudaGetErrorString) and of cuBLAS's.
    "CUDA error: an illegal memory access was encountered",
    "CUDA error: device-side assert triggered",
    "CUDA error: unspecified launch failure",
    "CUDA error: misaligned address",
    "CUDA error: an illegal instruction was encountered\nSearch for `cudaErrorIllegalInstruction' in https://docs.nvidia.com",
    "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, opa, opb, m, n, k, &alpha, a, lda, "
    "b, ldb, &beta, c, ldc)`",
])
def test_sticky_cuda_errors_are_fatal(message: str) -> None:
    assert is_fatal_device_error(RuntimeError(message))
    assert not is_oom(RuntimeError(message))


@pytest.mark.parametrize("message", [
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "Expected canUse32BitIndexMath(input) to be true, but got false.",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input.",
    "CUBLAS_STATUS_NOT_SUPPORTED when calling `cublasSgemm`",
    "illegal value for argument",
])
def test_other_errors_are_not_fatal(message: str) -> None:
    assert not is_fatal_device_error(RuntimeError(message))


def test_failure_classification_imports_without_torch() -> None:
    code = "import sys; import bench.workers.proc as f; assert not f.is_oom(RuntimeError('x')); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("action, expected", [
    ("raise", "error: RuntimeError: test fault at batch 4: Expected canUse32BitIndexMath(input) to be true"),
    ("fatal", "fatal CUDA error (its process is discarded): RuntimeError: test fault: CUDA error: an illegal memory access"),
    ("kill", "killed by SIGKILL"),
])
def test_a_try_that_fails_other_than_oom_does_not_fit_with_its_reason(monkeypatch, action: str, expected: str) -> None:
    from alexnet.config import RunConfig

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv(ENABLE_ENV, "1")
    monkeypatch.setenv(FAULT_ENV, f"{action}:2")
    peak, why = _run_try_in_child(RunConfig(device="cpu", mode="inference", batch_size=4, resolution=(65, 65)), steps=1)
    assert peak is None and why.startswith(expected), why


@pytest.mark.slow
def test_the_search_goes_on_past_a_non_oom_error(cli) -> None:
    # Batches above 2 raise a non-OOM error in their (fresh) process; only batch 2 runs for real.
    r = cli("max-batch", "--device", "cpu", "--mode", "inference", "--resolution", "65", "--memory-limit", "64GiB",
            "--start", "2", "--max-batch", "16", "--steps", "1", env={ENABLE_ENV: "1", FAULT_ENV: "raise:2"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split(":")[0].split()[1] for ln in lines if ln.startswith("batch ")] == ["2", "4", "3"]
    assert re.search(r"batch +4: does not fit .* error: RuntimeError: test fault at batch 4: .*canUse32BitIndexMath", r.stdout)
    assert "largest batch that fits: 2 for inference-d2l-b2-65x65-fp32-cpu" in r.stdout
    assert "note: batch 3 failed for a reason other than memory" in r.stdout


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_a_try_that_overruns_is_killed_with_its_child_and_does_not_fit(monkeypatch, tmp_path: Path) -> None:
    from alexnet.config import RunConfig

    pidfile = tmp_path / "try.pid"
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv(ENABLE_ENV, "1")
    monkeypatch.setenv(FAULT_ENV, "hang:2")  # the try sleeps, with a child in its process group
    monkeypatch.setenv(PIDFILE_ENV, str(pidfile))
    cfg = RunConfig(device="cpu", mode="inference", batch_size=4, resolution=(65, 65))
    t0 = time.monotonic()
    # The child's fault hook fires before it imports torch (max_batch._child_main), so a few
    # seconds are room enough for it to start, write its pids and hang.
    peak, why = _run_try_in_child(cfg, steps=1, timeout_s=3)
    assert 3 <= time.monotonic() - t0 < 3 + 15
    assert peak is None and why.startswith("timed out: still running after --try-timeout 3 s"), why
    pids = [int(pidfile.read_text()), int(Path(str(pidfile) + ".child").read_text())]
    deadline = time.monotonic() + 5
    while not all(map(_gone, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(map(_gone, pids)), "a process of the overrun try outlived it"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "100000"])
def test_a_bad_try_timeout_is_one_line_exit_2(cli_main, value: str) -> None:
    r = cli_main("max-batch", "--device", "cpu", "--memory-limit", "1GiB", "--try-timeout", value)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--try-timeout {value}" in lines[0] and "it must be > 0 and at most 86400 seconds" in lines[0], lines


@pytest.mark.gpu
def test_gpu_max_batch_finds_a_batch(cli) -> None:
    r = cli("max-batch", "--device", "cuda", "--resolution", "224", "--max-batch", "64")
    assert r.returncode == 0 and "largest batch that fits: 64" in r.stdout
