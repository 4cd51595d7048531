"""The layout's rules (docs/architecture.md), checked on the source:

- `alexnet/` (the subject) imports nothing of ours;
- `runrecord/` (the run record) imports no torch and nothing of ours but itself;
- `reports/` (the readers) imports only the run record of ours, and no torch;
- the instruments (`bench/instruments/`) never import the command line (`bench.cli`), nor does
  the data-parallel launcher and rank worker (`bench/ddp/`);
- the subcommands (`bench/cli/commands/`) never import the CLI's entry module (`bench.cli`),
  which imports them; their usage error is `bench.cli.errors.UsageError`;
- the coordinator side of the worker machinery (`bench/workers/launcher.py`,
  `bench/workers/proc.py`) imports no torch, not even inside a function;
- in `bench/workers/`, the zygote is the one module that imports torch (it preloads it
  before forking); the worker runs in the zygote's forks and imports torch only lazily.

`layout_violations` reads a tree, so the same rules are checked on a copy with a planted
violation (the check must be able to fail).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

OURS = {"alexnet", "bench", "reports", "runrecord"}
COORDINATOR = ("bench/workers/launcher.py", "bench/workers/proc.py")


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Absolute module names imported by ``path`` (every import, or only module-level ones)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add("." * node.level + (node.module or ""))  # relative: flagged below
    return names


def _root(name: str) -> str:
    return name.split(".")[0]


def layout_violations(repo: Path) -> list[str]:
    """Every broken rule in the tree at ``repo``, one line each ("file: rule: modules")."""
    found: list[str] = []

    def check(files: list[Path], rule: str, bad) -> None:
        for p in files:
            mods = sorted(m for m in _imports(p) if bad(m))
            if mods:
                found.append(f"{p.relative_to(repo)}: {rule}: {', '.join(mods)}")

    def py(folder: str) -> list[Path]:
        return sorted((repo / folder).rglob("*.py"))

    check(py("alexnet"), "the subject imports nothing of ours", lambda m: _root(m) in OURS - {"alexnet"})
    check(py("runrecord"), "the run record imports no torch and nothing of ours",
          lambda m: _root(m) in (OURS - {"runrecord"}) | {"torch", "torchvision"})
    check(py("reports"), "the readers import only the run record (no torch)",
          lambda m: _root(m) in {"torch", "torchvision", "alexnet", "bench"})
    check(py("bench/instruments"), "instruments never import the CLI", lambda m: m == "bench.cli" or m.startswith("bench.cli."))
    check(py("bench/cli/commands"), "commands never import the CLI's entry module", lambda m: m == "bench.cli")
    check(py("bench/ddp"), "the data-parallel launcher and rank never import the CLI",
          lambda m: m == "bench.cli" or m.startswith("bench.cli."))
    check([repo / f for f in COORDINATOR if (repo / f).exists()], "the coordinator side imports no torch",
          lambda m: _root(m) in {"torch", "torchvision", "alexnet"})
    for p in py("bench/workers"):
        if p.name == "zygote.py":
            continue
        mods = sorted(m for m in _imports(p, top_level_only=True) if _root(m) == "torch")
        if mods:
            found.append(f"{p.relative_to(repo)}: only the zygote preloads torch: {', '.join(mods)}")
    for folder in ("alexnet", "bench", "reports", "runrecord"):
        for p in py(folder):
            rel = sorted(m for m in _imports(p) if m.startswith("."))
            if rel:
                found.append(f"{p.relative_to(repo)}: absolute imports only (the rules read them): {', '.join(rel)}")
    return found


def test_the_tree_keeps_the_layout_rules():
    assert layout_violations(REPO) == []


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "repo"
    for folder in ("alexnet", "bench", "reports", "runrecord"):
        shutil.copytree(REPO / folder, dst / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.parametrize(("path", "line", "rule"), [
    ("alexnet/model.py", "import bench.instruments.timing", "the subject imports nothing of ours"),
    ("runrecord/samples.py", "import torch", "the run record imports no torch"),
    ("runrecord/samples.py", "from reports.load import Run", "nothing of ours"),
    ("reports/html.py", "from bench.cli import main", "the readers import only the run record"),
    ("reports/html.py", "import torch", "the readers import only the run record"),
    ("bench/instruments/timing.py", "from bench.cli import UsageError", "instruments never import the CLI"),
    ("bench/cli/commands/report.py", "def f():\n    from bench.cli import UsageError", "commands never import the CLI's entry module"),
    ("bench/ddp/rank.py", "def f():\n    from bench.cli.commands.options import add_config_options",
     "the data-parallel launcher and rank never import the CLI"),
    ("bench/workers/launcher.py", "def f():\n    import torch", "the coordinator side imports no torch"),
    ("bench/workers/worker.py", "import torch", "only the zygote preloads torch"),
])
def test_a_planted_violation_is_found(tmp_path, path, line, rule):
    repo = _copy(tmp_path)
    target = repo / path
    target.write_text(target.read_text() + "\n" + line + "\n")
    found = layout_violations(repo)
    assert any(v.startswith(path) and rule in v for v in found), found


def _torch_after(code: str) -> bool:
    """Run ``code`` in a fresh interpreter; whether torch was imported by the end."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint('torch' in sys.modules)\n"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


def test_reading_commands_start_without_torch():
    """`compare`, `report` and `history` parse and run their paths without importing torch: a
    CLI start used to cost a torch import (about 3 s here)."""
    assert not _torch_after(
        "from bench.cli import build_parser\n"
        "build_parser()\n"
        "import bench.cli.commands.compare, bench.cli.commands.report, bench.cli.commands.history, reports.compare\n"
        "import reports.html, reports.history, reports.history_page, runrecord\n"
    ), "the CLI parser or a reading command imported torch"


def test_the_suite_coordinator_decides_a_case_without_torch():
    """What the suite's coordinator asks of a case before a worker runs it (a valid resolution,
    its FLOPs, whether it can run here) is answered without importing torch (about 1.2 s a run)."""
    assert not _torch_after(
        "import bench.suite.plugin, bench.suite.runner\n"
        "from bench.suite.presets import build_cases\n"
        "from alexnet.config import RunConfig\n"
        "from alexnet.arch import flops_per_image\n"
        "from alexnet.support import unsupported_reason\n"
        "cfg = build_cases('tiny')[0]\n"
        "assert flops_per_image(cfg.variant, cfg.resolution, train=True) > 0\n"
        "assert 'fp16' in unsupported_reason(cfg.replace(amp='fp16'))\n"
        "tv = cfg.replace(variant='torchvision')\n"
        "assert unsupported_reason(tv, import_torchvision=False) in (None, "
        "'the torchvision variant needs torchvision, which is not installed here')\n"
        "facts = {'count': 1, 'devices': [{'name': 'H200', 'bf16': True}]}\n"
        "assert 'only 1 GPU' in unsupported_reason(cfg.replace(device='cuda:1'), cuda_facts=facts)\n"
        "try:\n"
        "    RunConfig(device='cpu', resolution=(64, 64))\n"
        "    raise AssertionError('64x64 accepted')\n"
        "except ValueError as exc:\n"
        "    assert '65x65' in str(exc), exc\n"
    ), "deciding a case imported torch"
