"""`alexnet-bench history`: series across commits, change points, the page, and nightly-CI behaviour.

The acceptance tests build a series from a REAL saved run of the tiny preset (the session's shared
run, ``shared_tiny_run`` in tests/conftest.py): each point is a copy of it with a
fake commit (``commit_info`` id and time), its rounds multiplied by a per-run factor from a fixed
seed (heavy-tailed: Student t with 3 degrees of freedom, log sd about 0.03), and a planted x1.3
in the later points' rounds. The pace samples are left as saved, so paced rounds carry the step.
The detection itself is also tested on plain arrays, against ruptures' own l1 cost.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import ruptures as rpt

from bench.cli import main
from reports.history import build_history, find_run_files
from reports.history_accept import read_acceptances
from reports.history_detect import (MIN_SEGMENT, RowL1Cost, bootstrap_ratio, detect, fails, find_creep, noise_sigma,
                                    segment)
from tests.conftest import REPO, run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"
SEED = 13
STEP = 1.3
N_POINTS = 24
STEP_AT = 12  # index of the first commit with the planted step
NOISE_SD = 0.03
N_SCALE_CASES = 10
T0 = 1_780_000_000  # commit times: one day apart from here (2026-05-28)


# --- building series from a real run -----------------------------------------------------------


@pytest.fixture(scope="session")
def real_run(shared_tiny_run) -> Path:
    return shared_tiny_run.path


def fake_commit(i: int, salt: str = "") -> str:
    return hashlib.sha1(f"history-test-{salt}{i}".encode()).hexdigest()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def scale_rounds(bench: dict, factor: float) -> None:
    """Multiply a saved case's timed rounds (and the stats derived from them) by ``factor``."""
    stats = bench["stats"]
    stats["data"] = [v * factor for v in stats["data"]]
    for key in ("min", "max", "mean", "median", "q1", "q3", "iqr", "stddev", "ld15iqr", "hd15iqr", "total"):
        if isinstance(stats.get(key), (int, float)):
            stats[key] *= factor


def write_series(src: Path, dest: Path, *, n: int = N_POINTS, step_at: int | None = STEP_AT, factor: float = STEP,
                 seed: int = SEED, salt: str = "", noise_sd: float = NOISE_SD,
                 edit: Callable[[int, dict], None] | None = None) -> list[str]:
    """``n`` copies of a saved run as ``dest/<machine_id>/NNNN_nightly.json``, one fake commit each,
    with per-run noise (fixed seed) and ``factor`` planted from commit ``step_at`` on. Returns the commits."""
    base = json.loads(src.read_text(encoding="utf-8"))
    rng = np.random.default_rng(seed)
    # Heavy-tailed run-to-run noise, like real nightly medians (Student t, 3 d.o.f., sd NOISE_SD).
    noise = np.exp(rng.standard_t(3, size=n) * noise_sd / np.sqrt(3))
    commits = []
    folder = dest / "Linux-CPython-3.11-64bit"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        doc = copy.deepcopy(base)
        commit = fake_commit(i, salt)
        commits.append(commit)
        doc["commit_info"].update(id=commit, time=_iso(T0 + 86400 * i), dirty=False, branch="main")
        doc["datetime"] = _iso(T0 + 86400 * i + 3600)
        f = noise[i] * (factor if step_at is not None and i >= step_at else 1.0)
        for bench in doc["benchmarks"]:
            scale_rounds(bench, f)
        if edit:
            edit(i, doc)
        (folder / f"{i + 1:04d}_nightly.json").write_text(json.dumps(doc), encoding="utf-8")
    return commits


@pytest.fixture(autouse=True)
def _no_job_summary(monkeypatch):
    """In-process runs must not append to a CI job summary that the test run itself has."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def history_main(capsys, *args: str) -> tuple[int, str, list[str]]:
    """``alexnet-bench history ARGS`` in this process (no Python start-up per call)."""
    try:
        code = main(["history", *args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


@pytest.fixture(scope="module")
def step_series(real_run, tmp_path_factory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("step-series")
    return base / "runs", write_series(real_run, base / "runs")


@pytest.fixture(scope="module")
def flat_series(real_run, tmp_path_factory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("flat-series")
    return base / "runs", write_series(real_run, base / "runs", step_at=None)


@pytest.fixture(scope="module")
def step_cli(step_series, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """The acceptance run, as a user runs it: a new process, --json, --markdown, --fail-on-regression."""
    runs, _ = step_series
    out = tmp_path_factory.mktemp("step-cli")
    r = run_cli("history", str(runs), "--out", str(out / "page"), "--json", str(out / "h.json"),
                "--markdown", str(out / "h.md"), "--fail-on-regression", "--repo", str(out),
                "--accepted-file", str(out / "accepted.json"), timeout=300, env={"GITHUB_STEP_SUMMARY": ""})
    assert (out / "h.json").is_file(), r.stderr
    return r, out, json.loads((out / "h.json").read_text(encoding="utf-8"))


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.ids: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "script":
            self.scripts += 1
        if attrs.get("id"):
            self.ids.append(attrs["id"])

    def handle_data(self, data):
        self.text.append(data)


def parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    return page


# --- acceptance: a planted x1.3 in a real series ----------------------------------------------


@pytest.mark.slow
def test_planted_step_is_found_within_one_commit_with_an_interval_covering_it(step_cli, real_run):
    r, out, doc = step_cli
    cases = [b["extra_info"]["case_id"] for b in json.loads(real_run.read_text())["benchmarks"]]
    assert sorted(s["case"] for s in doc["series"]) == sorted(cases)
    for s in doc["series"]:
        assert len(s["points"]) == N_POINTS and s["paced"], s["notes"]
        changes = [c for c in doc["change_points"] if c["case"] == s["case"]]
        near = [c for c in changes if abs(fake_commit_index(c["commit"]) - STEP_AT) <= 1]
        assert len(near) == 1, f"{s['case']}: change points at {[fake_commit_index(c['commit']) for c in changes]}"
        c = near[0]
        assert c["ratio"] > 1 and c["verdict"] == "regression"
        assert c["ci_low"] <= STEP <= c["ci_high"], c
        assert fake_commit_index(c["previous_commit"]) == fake_commit_index(c["commit"]) - 1
    # The step is the newest change of every series, beyond 5% with its whole interval: nightly CI fails.
    assert r.returncode == 1, r.stderr
    assert {f["case"] for f in doc["failing"]} == set(cases)


def fake_commit_index(commit: str) -> int:
    return next(i for i in range(1000) if fake_commit(i) == commit)


@pytest.mark.slow
def test_the_json_lists_series_and_change_points_with_their_fields(step_cli):
    _, _, doc = step_cli
    for s in doc["series"]:
        assert {"case", "machine", "points"} <= s.keys()
        times = [p["time"] for p in s["points"]]
        assert times == sorted(times)
        for p in s["points"]:
            assert {"commit", "time", "median_s"} <= p.keys()
            assert 0 < p["median_s"] < 10  # seconds per step, raw
    assert doc["change_points"]
    for c in doc["change_points"]:
        assert {"case", "machine", "commit", "previous_commit", "ratio", "ci_low", "ci_high", "verdict"} <= c.keys()
        assert c["ci_low"] <= c["ratio"] <= c["ci_high"]


@pytest.mark.slow
def test_each_change_prints_the_ab_command_that_confirms_it(step_cli):
    r, out, doc = step_cli
    for c in doc["change_points"]:
        expected = f'alexnet-bench ab {c["previous_commit"][:12]} {c["commit"][:12]} --preset tiny -k "{c["case"]} and not loop"'
        assert c["ab_command"] == expected
        assert expected in r.stdout
    assert r.stdout.splitlines()[-1] == str(out / "page" / "index.html")
    md = (out / "h.md").read_text(encoding="utf-8")
    assert "regression" in md and all(c["case"] in md for c in doc["change_points"])


@pytest.mark.slow
def test_the_page_has_one_figure_and_anchor_per_series_and_the_table_first(step_cli):
    _, out, doc = step_cli
    index = out / "page" / "index.html"
    page = parse(index)
    assert page.scripts == 0
    keys = [s["key"] for s in doc["series"]]
    assert sorted(page.images) == sorted(f"{k}.png" for k in keys)
    for src in page.images:
        assert (out / "page" / src).read_bytes()[:8] == PNG_MAGIC
    assert all(k in page.ids for k in keys)
    html = index.read_text(encoding="utf-8")
    assert html.index('id="changes"') < min(html.index(f'id="{k}"') for k in keys)
    assert 'href="#' + keys[0] + '"' in html  # the table links to the series


@pytest.mark.slow
def test_the_same_series_without_the_step_reports_no_regression(flat_series, capsys, tmp_path):
    runs, _ = flat_series
    code, out, err = history_main(capsys, str(runs), "--out", str(tmp_path / "p"), "--json", str(tmp_path / "h.json"),
                                  "--fail-on-regression", "--repo", str(tmp_path))
    assert code == 0, err
    doc = json.loads((tmp_path / "h.json").read_text())
    assert not [c for c in doc["change_points"] if c["verdict"] == "regression"], doc["change_points"]
    assert doc["failing"] == [] and doc["creep"] == []


# --- grouping, order, software and schema -------------------------------------------------------


@pytest.mark.slow
def test_different_hardware_is_never_one_line_and_software_changes_are_marked(real_run, tmp_path):
    def edit(i: int, doc: dict) -> None:
        if i % 2:
            doc["machine_info"]["cpu_model"] = "Another CPU"
            doc["machine_info"]["cpu"]["brand_raw"] = "Another CPU"
        if i >= 10:
            doc["machine_info"]["torch_version"] = "9.9.9"

    write_series(real_run, tmp_path / "runs", n=20, step_at=None, edit=edit)
    history = build_history([str(tmp_path / "runs")], repo=None)
    n_cases = len(json.loads(real_run.read_text())["benchmarks"])
    assert len(history.series) == 2 * n_cases
    machines = {s.machine for s in history.series}
    assert len(machines) == 2 and any(m.startswith("Another CPU") for m in machines)
    for s in history.series:
        # Files are numbered i + 1: one series holds only odd-numbered or only even-numbered ones.
        assert len({int(Path(r.path).name[:4]) % 2 for p in s.points for r in p.runs}) == 1
        assert len(s.points) == 10
        changes = s.software_changes()
        assert len(changes) == 1 and changes[0]["changes"][0]["what"] == "torch"
        assert changes[0]["changes"][0]["to"] == "9.9.9"
        assert s.points[changes[0]["index"]].software["torch_version"] == "9.9.9"


def test_a_change_of_steps_per_round_starts_a_series_of_its_own(real_run, tmp_path):
    """Per-step times of k-step blocks and of single steps are never joined into one line."""
    def edit(i: int, doc: dict) -> None:
        if i >= 6:
            for bench in doc["benchmarks"]:
                bench["extra_info"]["steps_per_round"] = 4

    write_series(real_run, tmp_path / "runs", n=12, step_at=None, edit=edit)
    history = build_history([str(tmp_path / "runs")], repo=None)
    n_cases = len(json.loads(real_run.read_text())["benchmarks"])
    assert len(history.series) == 2 * n_cases
    blocked = [s for s in history.series if s.case_id.endswith("(4 steps/round)")]
    assert len(blocked) == n_cases and all(len(s.points) == 6 for s in history.series)


@pytest.mark.slow
def test_a_torch_upgrade_on_the_same_commit_is_a_new_point(real_run, tmp_path):
    def edit(i: int, doc: dict) -> None:
        if i >= 8:
            doc["machine_info"]["torch_version"] = "9.9.9"
        if 8 <= i < 12:  # nights with no new commit: the same code, re-run after a torch upgrade
            doc["commit_info"].update(id=fake_commit(7), time=_iso(T0 + 86400 * 7))

    write_series(real_run, tmp_path / "runs", n=16, step_at=8, factor=1.3, edit=edit)
    history = build_history([str(tmp_path / "runs")], repo=None)
    s = history.series[0]
    commits = [p.commit for p in s.points]
    assert commits == [fake_commit(i) for i in range(8)] + [fake_commit(7)] + [fake_commit(i) for i in range(12, 16)]
    assert len(s.points[8].runs) == 4 and s.points[8].software["torch_version"] == "9.9.9"
    assert s.points[7].software["torch_version"] != "9.9.9"
    rows = [r for r in history.change_rows() if r["case"] == s.case_id and r["index"] == 8]
    assert len(rows) == 1 and rows[0]["software_change"].startswith("torch") and rows[0]["verdict"] == "regression"
    assert rows[0]["ab_command"] == ""  # the code did not change: ab cannot confirm it


@pytest.mark.slow
def test_schema_versions_are_read_together_but_peak_memory_is_not_joined(real_run, tmp_path):
    def edit(i: int, doc: dict) -> None:
        schema = 1 if i < 6 else 2
        doc["alexnet"]["schema_version"] = doc["machine_info"]["suite_schema_version"] = schema
        for bench in doc["benchmarks"]:
            # Schema 1: the whole process's RSS; schema 2: the case's own peak.
            bench["extra_info"]["peak_memory_bytes"] = (1200 if schema == 1 else 200) * 2**20

    write_series(real_run, tmp_path / "runs", n=12, step_at=None, edit=edit)
    history = build_history([str(tmp_path / "runs")], repo=None)
    n_cases = len(json.loads(real_run.read_text())["benchmarks"])
    assert len(history.series) == n_cases  # timings are joined across the schemas
    for s in history.series:
        assert len(s.points) == 12
        memory = s.memory()
        assert memory["schemas"] == [2] and memory["first_index"] == 6
        assert memory["first_bytes"] == memory["last_bytes"] == 200 * 2**20 and "schema 2" in memory["note"]
    assert any("schema versions 1, 2" in n for n in history.notes)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


@pytest.mark.slow
def test_points_follow_first_parent_history_when_the_repository_is_at_hand(real_run, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    ids = []
    for i in range(6):
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"c{i}")
        ids.append(_git(repo, "rev-parse", "HEAD"))

    def edit(i: int, doc: dict) -> None:
        # Commit times run backwards (rebased history): only git knows the real order.
        doc["commit_info"].update(id=ids[i], time=_iso(T0 - 86400 * i))

    write_series(real_run, tmp_path / "runs", n=6, step_at=None, edit=edit)
    history = build_history([str(tmp_path / "runs")], repo=repo)
    assert history.order_method == "first-parent history"
    assert [p.commit for p in history.series[0].points] == ids
    by_time = build_history([str(tmp_path / "runs")], repo=None)
    assert [p.commit for p in by_time.series[0].points] == ids[::-1]
    assert by_time.order_method == "commit time" and any("commit time" in n for n in by_time.notes)

    def no_time(i: int, doc: dict) -> None:
        doc["commit_info"].pop("time")
        doc["datetime"] = _iso(T0 + 3600 * (5 - i))

    write_series(real_run, tmp_path / "runs2", n=6, step_at=None, edit=no_time)
    by_run = build_history([str(tmp_path / "runs2")], repo=None)
    assert by_run.order_method == "run time" and any("run time" in n for n in by_run.notes)
    assert [p.commit for p in by_run.series[0].points] == [fake_commit(i) for i in range(5, -1, -1)]


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_corrupt_or_foreign_file_is_skipped_and_listed_strict_exits_2(real_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    write_series(real_run, runs, n=8, step_at=None)
    corrupt = runs / "Linux-CPython-3.11-64bit" / "0009_nightly.json"
    corrupt.write_text('{"machine_info": {', encoding="utf-8")
    foreign = runs / "notes" / "package.json"
    foreign.parent.mkdir()
    foreign.write_text('{"name": "' + HOSTILE + '"}', encoding="utf-8")
    code, out, err = history_main(capsys, str(runs), "--out", str(tmp_path / "p"), "--repo", str(tmp_path))
    assert code == 0
    assert any(str(corrupt) in line and "corrupt JSON" in line for line in err)
    assert any(str(foreign) in line and "not a pytest-benchmark run" in line for line in err)
    page = (tmp_path / "p" / "index.html").read_text(encoding="utf-8")
    assert str(corrupt) in page and str(foreign) in page

    code, out, err = history_main(capsys, str(runs), "--out", str(tmp_path / "p2"), "--strict", "--repo", str(tmp_path))
    assert code == 2 and len(err) == 1 and "--strict: 2 file(s)" in err[0]
    assert not (tmp_path / "p2").exists()


def test_a_missing_folder_or_no_runs_is_one_line_and_exit_2(tmp_path, capsys):
    code, _, err = history_main(capsys, str(tmp_path / "nope"), "--out", str(tmp_path / "p"))
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]
    empty = tmp_path / "empty"
    (empty / "ab" / "m").mkdir(parents=True)
    (empty / "ab" / "m" / "0001_ab.json").write_text("{}")  # A/B experiments are not history
    code, _, err = history_main(capsys, "--storage", str(empty), "--out", str(tmp_path / "p"))
    assert code == 2 and len(err) == 1 and "no saved runs" in err[0]
    assert not (tmp_path / "p").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text("[1, 2]")
    code, _, err = history_main(capsys, str(bad), "--out", str(tmp_path / "p"))
    assert code == 2 and len(err) == 1 and "no readable runs" in err[0]
    code, _, err = history_main(capsys, str(bad), "--out", str(tmp_path / "p"), "--threshold", "150%")
    assert code == 2 and len(err) == 1 and "--threshold" in err[0]


@pytest.mark.slow
def test_ab_runs_dirty_trees_and_interrupted_runs_are_left_out(real_run, tmp_path):
    storage = tmp_path / ".benchmarks"

    def dirty_or_cut(i: int, doc: dict) -> None:
        doc["commit_info"]["dirty"] = i == 3
        if i == 5:  # a night cut short by a signal: partial, not a point of its commit
            doc["alexnet"]["interrupted"] = {"signal": "SIGTERM", "not_run": ["x"], "collected": 4}

    write_series(real_run, storage, n=8, step_at=None, edit=dirty_or_cut)
    write_series(real_run, storage / "ab", n=3, step_at=None, salt="ab")
    history = build_history([], storage=storage, repo=None)
    commits = {p.commit for s in history.series for p in s.points}
    assert commits == {fake_commit(i) for i in range(8) if i not in (3, 5)}
    assert any("uncommitted changes" in n and "0004_nightly" in n for n in history.notes)
    assert any("interrupted run(s) left out" in n and "0006_nightly (SIGTERM)" in n for n in history.notes)
    files, _ = find_run_files([], storage=storage)
    assert all("/ab/" not in str(f) for f in files) and len(files) == 8


@pytest.mark.slow
def test_earlier_outputs_are_never_overwritten(flat_series, tmp_path, capsys):
    runs, _ = flat_series
    (tmp_path / "h.json").write_text("earlier")
    code, _, err = history_main(capsys, str(runs), "--out", str(tmp_path / "p"), "--json", str(tmp_path / "h.json"))
    assert code == 2 and "already exists" in err[0] and (tmp_path / "h.json").read_text() == "earlier"
    assert not (tmp_path / "p").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = history_main(capsys, str(runs), "--out", str(other))
    assert code == 2 and "holds no history page" in err[0] and (other / "notes.txt").read_text() == "mine"
    # An earlier history page is replaced whole, and nothing is left beside it.
    for _ in range(2):
        code, out, err = history_main(capsys, str(runs), "--out", str(tmp_path / "p"), "--repo", str(tmp_path))
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.json", "other", "p"]


# --- nightly CI: acceptances and the job summary ---------------------------------------------------


@pytest.mark.slow
def test_accept_silences_a_regression_and_lives_in_a_file(step_series, tmp_path, capsys, real_run, monkeypatch):
    runs, commits = step_series
    case = json.loads(real_run.read_text())["benchmarks"][0]["extra_info"]["case_id"]
    accepted = tmp_path / "benchmarks-accepted.json"
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    args = [str(runs), "--fail-on-regression", "--accepted-file", str(accepted), "--repo", str(tmp_path)]
    code, out, err = history_main(capsys, *args, "--out", str(tmp_path / "p1"), "--accept", f"{commits[STEP_AT][:10]}:{case}",
                                  "--reason", "bigger model on purpose")
    assert code == 1, "the other cases still regress"
    entries = read_acceptances(accepted)
    assert [(a.commit, a.case, a.reason) for a in entries] == [(commits[STEP_AT][:10], case, "bigger model on purpose")]
    # Every case accepted (no CASE): the nightly job goes green, and the page shows the acceptance.
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, err = history_main(capsys, *args, "--out", str(tmp_path / "p2"), "--accept", commits[STEP_AT][:10])
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert code == 0, out
    page = (tmp_path / "p2" / "index.html").read_text(encoding="utf-8")
    assert "bigger model on purpose" in page and "(accepted)" in page
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n") and "## Benchmark history" in text and "(accepted)" in text
    # Typos are refused before anything is written.
    code, _, err = history_main(capsys, *args, "--out", str(tmp_path / "p3"), "--accept", "deadbeefdeadbeef")
    assert code == 2 and "no saved run is from a commit" in err[0]
    code, _, err = history_main(capsys, *args, "--out", str(tmp_path / "p3"), "--accept", f"{commits[1]}:no-such-case")
    assert code == 2 and "no series has case 'no-such-case'" in err[0]
    code, _, err = history_main(capsys, *args, "--out", str(tmp_path / "p3"), "--accept", "HEAD")
    assert code == 2 and "is not a commit id" in err[0]
    assert len(read_acceptances(accepted)) == 2 and not (tmp_path / "p3").exists()


@pytest.mark.slow
def test_creep_of_minor_steps_fails_the_nightly_until_accepted(real_run, tmp_path, capsys):
    def staircase(i: int, doc: dict) -> None:  # +4% every 6 commits: each step minor, 12% in all
        for bench in doc["benchmarks"]:
            scale_rounds(bench, 1.04 ** (i // 6))

    commits = write_series(real_run, tmp_path / "runs", n=24, step_at=None, noise_sd=0.003, edit=staircase)
    args = [str(tmp_path / "runs"), "--fail-on-regression", "--repo", str(tmp_path), "--accepted-file",
            str(tmp_path / "accepted.json"), "--json"]
    code, out, err = history_main(capsys, *args, str(tmp_path / "h1.json"), "--out", str(tmp_path / "p1"))
    doc = json.loads((tmp_path / "h1.json").read_text())
    assert {c["verdict"] for c in doc["change_points"]} == {"minor"}
    assert sorted({c["index"] for c in doc["change_points"]}) == [6, 12, 18]
    assert doc["creep"] and all(c["ratio"] == pytest.approx(1.04**3, rel=0.02) and c["fails"] for c in doc["creep"])
    assert code == 1 and "creep" in out
    code, out, err = history_main(capsys, *args, str(tmp_path / "h2.json"), "--out", str(tmp_path / "p2"),
                                  "--accept", commits[18])
    assert code == 0, out
    assert json.loads((tmp_path / "h2.json").read_text())["creep"] == []


@pytest.mark.slow
def test_saved_strings_are_escaped_on_the_page(real_run, tmp_path, capsys):
    def edit(i: int, doc: dict) -> None:
        doc["benchmarks"][0]["extra_info"]["case_id"] = HOSTILE
        doc["machine_info"]["torch_version"] = HOSTILE if i >= 4 else "2.14.1"

    write_series(real_run, tmp_path / "runs", n=8, step_at=None, edit=edit)
    code, _, err = history_main(capsys, str(tmp_path / "runs"), "--out", str(tmp_path / "p"), "--repo", str(tmp_path))
    assert code == 0, err
    html = (tmp_path / "p" / "index.html").read_text(encoding="utf-8")
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert parse(tmp_path / "p" / "index.html").scripts == 0


# --- the detection on plain arrays ------------------------------------------------------------------


def test_the_row_cost_equals_ruptures_l1_cost():
    y = np.log(np.random.default_rng(0).lognormal(0, 0.1, size=37)).reshape(-1, 1)
    ours, theirs = RowL1Cost().fit(y), rpt.costs.CostL1().fit(y)
    worst = max(abs(ours.error(s, e) - theirs.error(s, e)) for s in range(37) for e in range(s + 2, 38))
    assert worst < 1e-12
    pen = 0.3
    assert [*segment(y[:, 0], pen=pen), 37] == rpt.Pelt(model="l1", min_size=MIN_SEGMENT, jump=1).fit(y).predict(pen=pen)


def test_a_step_is_found_where_it_is_and_flat_noise_gives_none():
    rng = np.random.default_rng(1)
    noise = np.exp(rng.standard_t(3, size=40) * 0.02)
    flat = detect([[v] for v in noise])
    assert flat.changes == []
    stepped = noise.copy()
    stepped[25:] *= 1.10
    d = detect([[v] for v in stepped])
    # The 3 commits before the step have noise +2.5, +1.6 and +0.8 sd: the scan puts it at the first of them.
    assert len(d.changes) == 1 and abs(d.changes[0].index - 25) <= 3
    assert [c.index for c in detect([[v] for v in stepped], detector="pelt").changes] == [25]
    c = d.changes[0]
    assert c.verdict == "regression" and c.ci_low <= 1.10 <= c.ci_high and fails(c, threshold=0.05) == (c.ci_low > 1.05)
    assert 0.01 < d.sigma < 0.04  # the step barely moves the noise estimate


def test_segments_are_never_shorter_than_three_commits():
    values = [1.0] * 10 + [3.0, 3.0] + [1.0] * 10  # two wild nights cannot be a segment of their own
    for detector in ("scan", "pelt"):
        d = detect([[v] for v in values], detector=detector)
        assert all(e - s >= MIN_SEGMENT for s, e in zip(d.starts, [*d.starts[1:], len(values)]))
    d = detect([[v] for v in values], detector="pelt")
    assert d.changes
    values = [1.0] * 10 + [3.0, 3.0, 3.0] + [1.0] * 10  # three can
    d = detect([[v] for v in values], detector="pelt")
    assert [c.index for c in d.changes] == [10, 13]
    # The scan cuts out a blip (a regression fixed a few commits later) as a segment of its own; a
    # permutation test at 1% needs 4 commits of it here (3 among 23 lie together by chance in 0.8%).
    values = [1.0] * 10 + [3.0] * 4 + [1.0] * 10
    assert [c.index for c in detect([[v] for v in values]).changes] == [10, 14]
    for detector in ("scan", "pelt"):  # 5 points cannot hold two segments
        assert detect([[1.0], [1.0], [2.0], [2.0], [2.0]], detector=detector).changes == []


def test_minor_steps_add_up_to_creep_against_the_first_segment():
    values = [1.0] * 8 + [1.03] * 8 + [1.06] * 8 + [1.09] * 8
    runs = [[v] for v in values]
    d = detect(runs, threshold=0.05)
    assert [c.index for c in d.changes] == [8, 16, 24] and {c.verdict for c in d.changes} == {"minor"}
    creep = find_creep(runs, d, threshold=0.05)
    assert len(creep) == 1 and creep[0].reference == "first and best" and creep[0].ratio == pytest.approx(1.09)
    assert find_creep(runs, d, threshold=0.05, since=16) == []  # after an accepted change at 16: one minor step


def test_bootstrap_interval_is_reproducible_and_brackets_the_ratio():
    a, b = [1.0, 1.1, 0.9, 1.05, 0.95], [1.3, 1.4, 1.2, 1.35, 1.25]
    first, second = bootstrap_ratio(a, b), bootstrap_ratio(a, b)
    assert first == second and first[1] <= first[0] <= first[2] and first[0] == pytest.approx(1.3)


def test_noise_sigma_is_robust_to_one_step():
    rng = np.random.default_rng(2)
    y = rng.normal(0, 0.05, size=200)
    assert noise_sigma(y) == pytest.approx(0.05, rel=0.2)
    y[100:] += 0.5
    assert noise_sigma(y) == pytest.approx(0.05, rel=0.2)


def test_the_history_command_starts_without_torch():
    code = ("import sys\nfrom bench.cli import build_parser\nbuild_parser()\n"
            "import bench.cli.commands.history, reports.history, reports.history_page\nprint('torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


# --- scale: 200 commits by 10 cases (a quarter of the 200 x 40 in docs/history.md) ---------------------------------------------------------------


@pytest.mark.slow
def test_200_commits_by_10_cases_build_in_15_s_and_5_mb(real_run, tmp_path, capsys):
    base = json.loads(real_run.read_text(encoding="utf-8"))
    template = base["benchmarks"][0]
    # Time and size grow with the number of series: a quarter of the cases against a quarter of the
    # bounds (60 s and 20 MB for 40 cases) costs a quarter of the test time.
    cases = []
    for j in range(N_SCALE_CASES):
        bench = copy.deepcopy(template)
        bench["extra_info"]["case_id"] = f"{template['extra_info']['case_id']}-v{j}"
        bench["extra_info"]["config"] = {**template["extra_info"]["config"], "seed": j}
        cases.append(bench)
    base["benchmarks"] = cases
    src = tmp_path / "forty.json"
    src.write_text(json.dumps(base), encoding="utf-8")
    write_series(src, tmp_path / "runs", n=200, step_at=150, factor=1.2)
    t0 = time.perf_counter()
    code, out, err = history_main(capsys, str(tmp_path / "runs"), "--out", str(tmp_path / "p"), "--repo", str(tmp_path))
    elapsed = time.perf_counter() - t0
    assert code == 0, err
    size = sum(p.stat().st_size for p in (tmp_path / "p").iterdir())
    print(f"200 commits x {N_SCALE_CASES} cases: {elapsed:.1f} s, {size / 2**20:.1f} MiB")
    assert elapsed <= 60 * N_SCALE_CASES / 40 and size <= 20 * 2**20 * N_SCALE_CASES / 40
    page = parse(tmp_path / "p" / "index.html")
    assert len(page.images) == N_SCALE_CASES and len([i for i in page.ids if i.startswith("s-")]) == N_SCALE_CASES
    html = (tmp_path / "p" / "index.html").read_text(encoding="utf-8")
    assert html.index('id="changes"') < html.index('class="series" id="s-')
    shutil.rmtree(tmp_path / "runs")  # about 25 MB of saved runs: not worth keeping in pytest's temp dirs


def test_the_ratio_is_the_shift_of_the_runs_with_a_mann_whitney_interval():
    from reports.history_detect import shift_ratio, suspected

    before, after = [1.0, 1.02, 0.98, 1.01, 0.99, 1.0], [1.10, 1.12, 1.08]
    ratio, low, high = shift_ratio(before, after)
    assert ratio == pytest.approx(1.10, rel=0.01) and low < ratio < high and high - low < 0.1
    assert shift_ratio(before, after) == (ratio, low, high)  # no randomness
    d = detect([[v] for v in [1.0] * 21 + [1.2] * 3])
    assert [c.index for c in d.changes] == [21] and suspected(d.changes[0], 24)
    d = detect([[v] for v in [1.0] * 18 + [1.2] * 6])
    assert [c.index for c in d.changes] == [18] and not suspected(d.changes[0], 24)
