"""A GPU box with torch, pytest, pytest-benchmark, pandas, matplotlib and nvidia-ml-py, and
``pip install --no-deps -e .``, runs ``alexnet-bench gpu-check`` and ``pytest -m gpu``: the
optional packages (scipy, jinja2, psutil, tqdm, ruptures, torchvision) are imported only by
the functions that use them.

Checked in a fresh interpreter whose import system refuses those packages (a ``sys.meta_path``
finder that raises ``ModuleNotFoundError`` for them, as a missing package does).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

BLOCKED = ("scipy", "jinja2", "psutil", "tqdm", "ruptures", "torchvision")

_BLOCKER = textwrap.dedent(f"""
    import sys

    BLOCKED = {BLOCKED!r}

    class _Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, _Refuse())
""")

# What gpu-check and the suite import: the CLI (every command module, through its parser),
# the subject, the instruments, the suite's worker side, and the pytest files of bench/.
_MODULES = [
    "alexnet.config", "alexnet.model", "alexnet.runtime", "alexnet.flops", "alexnet.data", "alexnet.pipeline",
    "alexnet.train",
    "bench.cli", "bench.cli.commands.gpu_check", "bench.cli.commands.max_batch", "bench.instruments.timing", "bench.instruments.mfu",
    "bench.workers.proc", "bench.instruments.envinfo", "bench.suite.presets", "runrecord.samples", "bench.workloads.measure", "bench.instruments.telemetry",
    "bench.instruments.profiling", "bench.ddp.rank", "bench.workloads.loop", "bench.conftest", "bench.test_matrix", "bench.test_loop",
    # The case worker machinery (bench/suite/runner.py, bench/workers/), where this checkout has it.
    "bench.suite.runner", "bench.workers.launcher", "bench.workers.worker", "bench.workers.zygote",
]


def _run(code: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKER + textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_the_blocker_blocks() -> None:
    out = _run("import scipy\n")
    assert out.returncode != 0 and "blocked by the test" in out.stderr


def test_gpu_check_and_the_suite_import_without_the_optional_packages() -> None:
    code = f"""
        import importlib, importlib.util, sys
        for name in {_MODULES!r}:
            if name.startswith("bench.") and importlib.util.find_spec(name) is None:
                continue  # a module this checkout does not have yet
            importlib.import_module(name)
        from bench.cli import build_parser
        build_parser()  # imports every command module
        from bench.instruments.envinfo import machine_info
        assert machine_info()["torchvision_version"] is None

        # The torchvision variant is a valid config that is skipped with its reason.
        from alexnet.config import RunConfig
        from alexnet.runtime import unsupported_reason
        from alexnet.model import build_model
        cfg = RunConfig(variant="torchvision", device="cpu", batch_size=2)
        reason = unsupported_reason(cfg)
        assert reason and "torchvision" in reason, reason
        try:
            build_model("torchvision")
        except ValueError as exc:
            assert "not importable" in str(exc)
        else:
            raise AssertionError("built torchvision's AlexNet without torchvision")
        assert unsupported_reason(RunConfig(device="cpu", batch_size=2)) is None

        # The suite collects every preset's cases, torchvision's included.
        import pytest
        rc = pytest.main(["bench/", "--collect-only", "-q", "-p", "no:cacheprovider", "--preset", "standard"])
        assert rc == 0, rc
        print("blocked and imported:", sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}))
    """
    out = _run(code)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "blocked and imported: []" in out.stdout
    assert "train-torchvision-b256-224x224-fp32-cudnnbench-tf32-cuda" in out.stdout  # collected, not crashed


# torchvision present but not importable (as a PyPI torchvision beside another torch build is):
# found, then its import fails. torch._dynamo's import looks packages up with find_spec and
# expects None or a spec, so `_BLOCKER`'s refusal at lookup cannot stand in for it here.
_BROKEN_TORCHVISION = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys

    class _Broken(importlib.abc.Loader):
        def create_module(self, spec):
            raise ImportError("torchvision is broken here (the test)")

        def exec_module(self, module):
            pass

    class _Find:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torchvision":
                return importlib.machinery.ModuleSpec(name, _Broken())
            return None

    sys.meta_path.insert(0, _Find())
""")


def test_loop_cases_without_torchvision_the_device_pipeline_runs_and_the_dataloader_is_unsupported() -> None:
    code = """
        from alexnet.config import RunConfig
        from alexnet.runtime import backend_switches
        from bench.workloads.loop import LoopStepper
        from bench.workloads.measure import UnsupportedCase

        cfg = RunConfig(mode="train", device="cpu", batch_size=4, resolution=(65, 65), pipeline="device")
        with backend_switches(cfg):
            step = LoopStepper(cfg, synthetic_size=32)
            step()
            step()
        assert len(step.compute_s) == 2
        try:
            LoopStepper(cfg.replace(pipeline="dataloader"), synthetic_size=32)
        except UnsupportedCase as exc:
            assert "dataloader pipeline needs torchvision" in str(exc), exc
        else:
            raise AssertionError("the dataloader pipeline ran without torchvision")
        print("ok", sorted(m for m in sys.modules if m.split(".")[0] == "torchvision"))
    """
    out = subprocess.run([sys.executable, "-c", _BROKEN_TORCHVISION + textwrap.dedent(code)], cwd=REPO,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ok []" in out.stdout

