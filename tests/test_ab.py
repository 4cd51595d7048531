"""`alexnet-bench ab` on a throwaway git repository holding a copy of this suite.

The A/A test runs the same code against itself through `ab` with its default repeats (30 real
runs of one tiny-preset case): no regression may be flagged, the runs must be interleaved base,
head, base, head ..., all saved in one storage dir, and the worktrees removed afterwards. The
same real runs then carry planted slowdowns: x1.02 is not flagged, x1.10 is.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.commands.ab import DEFAULT_REPEATS
from bench.samples import paced_samples
from reports.compare import compare_runs
from reports.load import Run, load_run
from tests.conftest import REPO, run_cli

SUITE = ("alexnet", "bench", "reports", "pyproject.toml")
# One small case, as CI compares a narrowed selection (-k): 12 runs of it stay cheap.
CASE = "inference-d2l-b2-65x65-fp32-cpu"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Two commits of this suite: the second changes only a comment (same code, A/A)."""
    root = tmp_path_factory.mktemp("repo")
    for name in SUITE:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, root / name)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    with open(root / "alexnet" / "__init__.py", "a") as fh:
        fh.write("# a comment: the candidate is the same code\n")
    _git(root, "commit", "-q", "-am", "head")
    return root


def scaled(run: Run, factor: float) -> Run:
    """A copy of a real run with every round's time multiplied by ``factor`` (a planted slowdown)."""
    raw = copy.deepcopy(run.raw)
    for b in raw["benchmarks"]:
        b["stats"]["data"] = [t * factor for t in b["stats"]["data"]]
    return Run(path=run.path, run_id=run.run_id, name=run.name, raw=raw)


def _median(run: Run) -> float:
    """The run's median as `compare` judges it: paced (rounds over the pace GEMM) when saved."""
    b = run.raw["benchmarks"][0]
    paced = paced_samples(b["stats"]["data"], b["extra_info"]["pace"]["samples"])
    assert paced is not None, "the suite saves R + 1 pace samples for R rounds"
    return float(np.median(paced))


def ab(repo: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # GITHUB_STEP_SUMMARY emptied: a test never writes into the CI job's own step summary.
    return run_cli("ab", *args, "--repo", str(repo), cwd=cwd, timeout=1200, env={"GITHUB_STEP_SUMMARY": ""})


def test_bad_ref_exits_2_with_one_line(repo, tmp_path):
    r = ab(repo, "no-such-ref", "HEAD", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "no-such-ref" in r.stderr
    assert _git(repo, "worktree", "list").count("\n") == 0  # nothing was checked out


def test_too_few_repeats_and_existing_output_exit_2_before_any_run(repo, tmp_path):
    r = ab(repo, "HEAD~1", "HEAD", "--repeats", "1", cwd=tmp_path)
    assert r.returncode == 2 and "--repeats 1" in r.stderr
    earlier = tmp_path / "earlier.json"
    earlier.write_text("{}")
    r = ab(repo, "HEAD~1", "HEAD", "--json", str(earlier), "--storage", str(tmp_path / "s"), cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert earlier.read_text() == "{}" and not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def aa(repo, tmp_path_factory) -> dict:
    """One A/A `ab` of the same code with the default repeats: its exit status, JSON and runs."""
    tmp = tmp_path_factory.mktemp("aa")
    storage = tmp / "store"
    earlier = storage / "Linux-earlier" / "0001_earlier.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"an": "earlier result"}')
    out = tmp / "ab.json"
    r = ab(repo, "HEAD~1", "HEAD", "--preset", "tiny", "-k", CASE, "--storage", str(storage), "--json", str(out), cwd=tmp)
    saved = sorted(p for p in storage.glob("*/*.json") if p != earlier)
    return {"r": r, "out": out, "saved": saved, "earlier": earlier}


@pytest.mark.slow
def test_same_code_through_ab_with_default_repeats_flags_no_regression(repo, aa):
    r = aa["r"]
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    result = json.loads(aa["out"].read_text())
    assert result["has_regression"] is False
    assert {c["verdict"] for c in result["cases"]} <= {"unchanged", "noisy", "improvement"}
    assert all(c["method"] == f"paced: paired t on {DEFAULT_REPEATS} run pairs" for c in result["cases"])

    # Interleaved: in the order they were saved, runs alternate base, head, base, head ...
    saved = aa["saved"]
    assert len(saved) == 2 * DEFAULT_REPEATS
    sides = [("base" if "-base-" in p.name else "head") for p in sorted(saved, key=lambda p: p.name)]
    assert sides == ["base", "head"] * DEFAULT_REPEATS
    base_sha, head_sha = _git(repo, "rev-parse", "HEAD~1"), _git(repo, "rev-parse", "HEAD")
    commits = {json.loads(p.read_text())["commit_info"]["id"] for p in saved if "-head-" in p.name}
    assert commits == {head_sha}
    commits = {json.loads(p.read_text())["commit_info"]["id"] for p in saved if "-base-" in p.name}
    assert commits == {base_sha}
    # Nothing earlier was overwritten, and the worktrees are gone.
    assert aa["earlier"].read_text() == '{"an": "earlier result"}'
    assert _git(repo, "worktree", "list").count("\n") == 0


@pytest.mark.slow
def test_planted_slowdowns_in_the_real_ab_runs(aa):
    """The head side's real samples times 1.02 are not flagged; times 1.10 are, through the pairs."""
    assert aa["r"].returncode in (0, 1), aa["r"].stderr[-3000:]
    base_runs = [load_run(p) for p in aa["saved"] if "-base-" in p.name]
    head_runs = [load_run(p) for p in aa["saved"] if "-head-" in p.name]
    assert len(base_runs) == len(head_runs) == DEFAULT_REPEATS
    same = compare_runs(base_runs, head_runs, paired=True).table.iloc[0]
    small = compare_runs(base_runs, [scaled(r, 1.02) for r in head_runs], paired=True)
    if same["ci_low"] <= 1.0 <= same["ci_high"]:
        assert not small.has_regression
    else:
        # The A/A pairs alone already sit off 1 at 95% (a 1-in-20 draw; docs/compare.md gives the
        # measured rates): 2% more may then cross 5% and alpha. Still never a verdict of faster.
        assert set(small.table["verdict"]) <= {"regression", "noisy", "unchanged"}, (same["ratio"], same["ci_low"])
    d = np.log([_median(h) / _median(b) for b, h in zip(base_runs, head_runs)])
    # The planted 10% lands on top of whatever these A/A pairs already show: a head side that
    # happened to run faster masks part of it. Resolvable only when the pairs are tight AND the
    # shifted pairs would clear both alpha (paired t, df n-1) and the 5% threshold.
    from scipy import stats

    n = len(d)
    shifted = d.mean() + np.log(1.10)
    t_needed = stats.t.ppf(1 - 0.01 / 2, n - 1)
    resolvable = shifted > np.log(1.05) and shifted / (d.std(ddof=1) / np.sqrt(n)) > t_needed
    slow = compare_runs(base_runs, [scaled(r, 1.10) for r in head_runs], paired=True)
    verdicts = set(slow.table["verdict"])
    if resolvable:
        assert slow.has_regression and verdicts == {"regression"}
    else:
        # Pairs too spread right now to resolve 10% with these pairs: the honest answer is
        # `noisy`, and a planted slowdown must never read as unchanged or faster.
        assert verdicts <= {"regression", "noisy"}, (
            f"A/A pairs mean {d.mean():+.3f}, sd {d.std(ddof=1):.3f}: x1.10 judged {verdicts}"
        )


def test_workflow_is_valid_yaml_and_runs_ab_report_and_fails_on_regression():
    yaml = pytest.importorskip("yaml", reason="pyyaml is in the test extra")
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "benchmarks.yml").read_text())
    assert "pull_request" in wf["on"]
    steps = wf["jobs"]["ab"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "alexnet-bench \"${args[@]}\"" in runs and "args=(ab " in runs and "--preset \"$PRESET\"" in runs
    assert "alexnet-bench report" in runs
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    verdict = next(s for s in steps if s.get("name") == "Verdict")["run"]
    assert "1) " in verdict and "exit 1" in verdict
    plan = wf["jobs"]["plan"]["steps"][0]["run"]
    assert '"preset": "quick"' in plan and '"preset": "standard"' in plan and '"gpu"' in plan
