"""The one-way layout: the subject (`alexnet/`) never imports the instruments or the readers,
and the readers of saved runs start without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_alexnet_imports_nothing_from_bench_or_reports():
    offenders = {
        str(p.relative_to(REPO)): sorted(m for m in _imported_modules(p) if m.split(".")[0] in {"bench", "reports"})
        for p in sorted((REPO / "alexnet").rglob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"alexnet/ must not import bench/ or reports/: {offenders}"


def test_reports_never_import_torch_or_the_instruments():
    bad = {}
    for p in sorted((REPO / "reports").rglob("*.py")):
        mods = [m for m in _imported_modules(p)
                if m.split(".")[0] in {"torch", "alexnet"} or (m.startswith("bench.") and m != "runrecord.samples")]
        if mods:
            bad[str(p.relative_to(REPO))] = mods
    assert bad == {}, f"reports/ reads saved runs only (runrecord.samples is the shared arithmetic): {bad}"


def test_reading_commands_start_without_torch():
    """`compare`, `report` (and `history`, when present) parse and run their paths without
    importing torch: a CLI start used to cost a torch import (about 3 s here)."""
    code = (
        "import sys\n"
        "from bench.cli import build_parser\n"
        "build_parser()\n"
        "import bench.cli.commands.compare, bench.cli.commands.report, bench.cli.commands.history, reports.compare, reports.html\n"
        "import reports.history, reports.history_page\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "the CLI parser or a reading command imported torch"
