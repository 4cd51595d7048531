"""Shared test helpers. GPU tests are marked ``gpu`` and skip with a reason on CPU.

``slow`` marks a test that takes more than about 5 s on the 2-core CPU machine (a real run of
the suite, a trained model, several fresh interpreters); ``pytest -m "not slow"`` is the inner
loop. Every test that reads the shared real run (``shared_tiny_run``) is marked slow here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests import machine

REPO = Path(__file__).resolve().parents[1]
# Set by pytest-xdist in each of its workers; a child `pytest bench/` that inherited them would
# take itself for an xdist worker, and pytest-benchmark disables benchmarks there.
XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


def pytest_configure(config):
    worker = getattr(config, "workerinput", None)  # only in an xdist worker
    machine.setup(worker["testrunuid"] if worker else None)
    for name in XDIST_ENV:  # what this worker starts (CLI processes, `pytest bench/`) is no xdist worker
        os.environ.pop(name, None)
    if worker and "OMP_NUM_THREADS" not in os.environ:
        # Two workers, each with torch's default of one thread per core, oversubscribe the cores:
        # OpenMP's waiting threads spin, and the same tests cost about 30% more CPU time in all.
        # One intra-op thread per process here and in what it starts (tests/machine.py).
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // int(worker["workercount"])))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Every test holds the machine shared; `tests.machine.exclusive` sections wait for the rest."""
    with machine.hold_shared():
        yield


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the marks below must be on the items by then
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared_tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)  # the first of them pays for the run
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m bench ARGS`` as a user would, capturing output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def cli_main(capsys, monkeypatch):
    """``alexnet-bench ARGS`` through the same `bench.cli.main`, in this process, as a
    CompletedProcess: for input refused before any work (exit 2), where a fresh interpreter
    would cost most of the test (the commands import torch before they validate)."""

    def call(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        from bench.cli import main

        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:
            rc = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), rc, out.out, out.err)

    return call


# --- real runs of the suite ------------------------------------------------------------------

# The shared run: the tiny preset (3 d2l CPU cases at batch 2, 65x65), with fp16 asked for too:
# fp16 on the CPU is unsupported, so its 3 cases are skipped with a reason and recorded.
SHARED_RUN_ARGS = ("--preset", "tiny", "--amp", "off,fp16")
BENCH_TIMEOUT_S = 600  # a tiny run takes well under 30 s idle; the shared 2-core machine is slower


def run_bench(*args: str, storage: Path, env: dict | None = None, timeout: float = BENCH_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python -m pytest bench/ ARGS`` as a user starts it, saving into ``storage``."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", "-rs",
         f"--benchmark-storage=file://{storage}", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


@pytest.fixture
def bench_inline(capsys, monkeypatch):
    """``pytest bench/ ARGS`` run in this process, as a CompletedProcess (returncode, stdout, stderr).

    For what ends before any worker starts: usage errors (exit 4) and ``--collect-only``. It is
    the same entry point a user's ``pytest bench/`` goes through, without the cost of a fresh
    interpreter; anything that measures a case runs in a process of its own (`run_bench`)."""
    monkeypatch.chdir(REPO)

    def call(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        rc = pytest.main(["bench/", "-p", "no:cacheprovider", "-q", *args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), int(rc), out.out, out.err)

    return call


@dataclass(frozen=True)
class SavedRun:
    """A real run of the suite: the pytest process, its storage folder and the one file it saved."""

    proc: subprocess.CompletedProcess
    storage: Path
    path: Path

    def doc(self) -> dict:
        return json.loads(self.path.read_text(encoding="utf-8"))


def save_run(storage: Path, name: str, *args: str) -> SavedRun:
    """Run the suite with ARGS, saved as ``name`` into ``storage``; it must pass and save one new file."""
    before = set(storage.glob("*/*.json"))
    proc = run_bench(*args, f"--benchmark-save={name}", storage=storage)
    new = sorted(set(storage.glob("*/*.json")) - before)
    assert proc.returncode == 0, f"run failed ({proc.returncode}): {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    assert len(new) == 1, f"expected one new STORAGE/<machine>/NNNN_{name}.json, found {new}"
    return SavedRun(proc, storage, new[0])


@pytest.fixture(scope="session")
def shared_tiny_run(request, tmp_path_factory) -> SavedRun:
    """One real run (``SHARED_RUN_ARGS``) for every test that only reads a saved run, made once per
    test run on first use, and shared by the xdist workers: the first to need it makes it in the
    folder they share (the parent of each worker's basetemp, pytest-xdist's documented recipe for
    a once-per-run fixture), the others read it, all under the machine lock. Readers copy it
    before changing anything; nothing writes into its storage. It is made with the machine to
    itself: `compare` judges it against a second run of the same code. Both are made with the one
    intra-op thread a test gets (not ``all_cores``): their rounds are judged pace-normalised, and a
    two-thread pace GEMM scales with the second core where the tiny cases' steps do not, so a
    moment's load on that core (outside the tests' lock) moved one case's pace by x1.5 and
    `compare` called identical code a x1.6 regression (tests/machine.py, ``exclusive``)."""
    root = tmp_path_factory.getbasetemp()
    if getattr(request.config, "workerinput", None) is not None:  # an xdist worker: the run's shared folder
        root = root.parent
    home = root / "shared-tiny-run"
    record = home / "proc.json"
    with machine.exclusive():
        if record.exists():
            saved = json.loads(record.read_text())
            proc = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])
            return SavedRun(proc, Path(saved["storage"]), Path(saved["path"]))
        home.mkdir(parents=True, exist_ok=True)
        run = save_run(home / "storage", "tiny", *SHARED_RUN_ARGS)
        record.write_text(json.dumps({"args": [str(a) for a in run.proc.args], "returncode": run.proc.returncode,
                                       "stdout": run.proc.stdout, "stderr": run.proc.stderr,
                                       "storage": str(run.storage), "path": str(run.path)}))
        return run
