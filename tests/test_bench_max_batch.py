"""``alexnet-bench max-batch``: the search, and the CPU path bounded by --memory-limit."""

from __future__ import annotations

import re

import pytest

from bench.commands.max_batch import Try, parse_bytes, search_max_batch


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


def test_cpu_max_batch_within_memory_limit(cli) -> None:
    # A generous limit: every try fits, so the answer is the cap, and the peak is reported.
    r = cli("max-batch", "--device", "cpu", "--mode", "inference", "--resolution", "65",
            "--memory-limit", "64GiB", "--start", "2", "--max-batch", "4", "--steps", "1")
    assert r.returncode == 0, r.stderr
    assert "largest batch that fits: 4 (the --max-batch cap)" in r.stdout
    peaks = [int(m.replace(",", "")) for m in re.findall(r"peak\s+([\d,]+) MiB", r.stdout)]
    assert len(peaks) == 2 and all(p > 0 for p in peaks)
    # A limit below what the process needs at all: nothing fits, exit status 1.
    r = cli("max-batch", "--device", "cpu", "--mode", "inference", "--resolution", "65",
            "--memory-limit", "1MiB", "--max-batch", "4", "--steps", "1")
    assert r.returncode == 1 and "largest batch that fits: 0" in r.stdout and "over the memory limit" in r.stdout


def test_cpu_max_batch_needs_a_memory_limit(cli) -> None:
    r = cli("max-batch", "--device", "cpu")
    assert r.returncode == 2 and "--memory-limit is required" in r.stderr


@pytest.mark.gpu
def test_gpu_max_batch_finds_a_batch(cli) -> None:
    r = cli("max-batch", "--device", "cuda", "--resolution", "224", "--max-batch", "64")
    assert r.returncode == 0 and "largest batch that fits: 64" in r.stdout
