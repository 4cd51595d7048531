"""The run record (`runrecord/`): its store numbers and never overwrites, its records round-trip,
older documents are read, run specs resolve, bad ones are one-line `RunLoadError`s. No torch here."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

import runrecord.store as store_mod
from runrecord.gitinfo import commit_info
from runrecord.samples import benchmark_stats, summarize
from runrecord.schema import (SCHEMA_VERSION, Case, Duet, Failure, Isolation, RunLoadError, RunRecord, Section, Skip,
                              schema_version, suite_machine_info)
from runrecord.store import RunStore, dumps, file_storage, read_run, read_run_json, run_file_id
from tests.report_runs import synthetic_run, write_run

MACHINE = "Linux-CPython-3.11-64bit"


def _record(name: str = "a") -> RunRecord:
    """A current-version run built through the typed records, with one key of each kind that a
    record does not know (they must survive the round trip)."""
    case = Case(
        group="train-cpu", name=f"test_step[{name}]", fullname=f"bench/test_matrix.py::test_step[{name}]",
        params={"case": name}, param=name,
        extra_info={"config": {"mode": "train", "device": "cpu"}, "case_id": name, "kind": "step",
                    "isolation": Isolation(mode="process", worker_pid=11, step_pid=11, env={"X": "1"}).to_json(),
                    "duet": Duet(session="s-1", side="base", ref="HEAD~1", sha="ab" * 20, estimator="paced",
                                 order=["base", "head", "head", "base"], rounds_per_side=2, worker_pid=11,
                                 python="/usr/bin/python3", session_wall_s=1.5, rewarm=1,
                                 allocator={"policy": "pinned"}).to_json()},
        options={"timer": "perf_counter", "rounds": 2, "iterations": 1},
        stats=benchmark_stats([0.010, 0.012]),
        extra={"cprofile": []},
    )
    section = Section(
        schema_version=SCHEMA_VERSION, preset="tiny", rounds=2, warmup_rounds=1,
        skipped=[Skip(name="test_step[x]", fullname="bench/test_matrix.py::test_step[x]", case_id="x",
                      config={"amp": "fp16"}, reason="fp16 autocast is not supported on CPU")],
        failed=[Failure(name="test_step[y]", fullname="bench/test_matrix.py::test_step[y]", case_id="y", config={},
                        reason="killed by SIGKILL", worker_pid=12, signal=9, signal_name="SIGKILL",
                        extra={"newer_field": 1})],
        isolation="process", calibration={"gflops": 100.0, "device": "cpu"},
        calibrations={"cpu": {"gflops": 100.0, "device": "cpu"}}, extra={"newer_section_field": True},
    )
    return RunRecord(machine_info=suite_machine_info({"node": "n"}, {"torch_version": "0"}), benchmarks=[case],
                     commit_info={"id": "0" * 40, "dirty": False}, datetime="2026-01-01T00:00:00+00:00",
                     version="5.3.1", alexnet=section, extra={"newer_top_field": [1]})


# --- the store: numbering and saving -----------------------------------------------------------


def test_numbering_is_per_machine_folder_and_never_overwrites(tmp_path):
    store = RunStore(f"file://{tmp_path}")
    first = store.save(_record(), "x", machine_id=MACHINE)
    second = store.save(_record(), "y", machine_id=MACHINE)
    other = store.save(_record(), "x", machine_id="Linux-CPython-3.12-64bit")
    assert (first.name, second.name, other.name) == ("0001_x.json", "0002_y.json", "0001_x.json")
    assert first.parent == second.parent == tmp_path / MACHINE and other.parent.name == "Linux-CPython-3.12-64bit"
    # A run saved by anyone else counts: the next number is one above the largest in the folder.
    (tmp_path / MACHINE / "0007_old.json").write_text("not even JSON")
    before = first.read_text()
    assert store.save(_record(), "x", machine_id=MACHINE).name == "0008_x.json"
    assert first.read_text() == before and (tmp_path / MACHINE / "0007_old.json").read_text() == "not even JSON"


def test_a_number_taken_meanwhile_is_never_overwritten(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    taken = store.save(_record(), "x", machine_id=MACHINE)
    real = store_mod._next_number
    stale = iter([1])  # the first scan is stale: it offers 0001, which exists by now

    monkeypatch.setattr(store_mod, "_next_number", lambda folder: next(stale, None) or real(folder))
    before = taken.read_text()
    path = store.save(_record("b"), "x", machine_id=MACHINE)
    assert path.name == "0002_x.json" and taken.read_text() == before


def test_runs_saved_at_once_under_different_names_never_share_a_number(tmp_path, monkeypatch):
    real = store_mod._next_number

    def slow(folder):  # widen the window between numbering and creating the file
        n = real(folder)
        time.sleep(0.05)
        return n

    monkeypatch.setattr(store_mod, "_next_number", slow)
    store, paths = RunStore(tmp_path), []
    threads = [threading.Thread(target=lambda i=i: paths.append(store.save(_record(), f"n{i}", machine_id=MACHINE)))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(run_file_id(p)[0] for p in paths) == ["0001", "0002", "0003", "0004"]


@pytest.mark.parametrize("name", ["", "a/b", "a:b", "a\\b"])
def test_a_name_pytest_benchmark_refuses_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="run name"):
        RunStore(tmp_path).save(_record(), name, machine_id=MACHINE)
    assert list(tmp_path.rglob("*.json")) == []


def test_the_suite_save_through_pytest_benchmark_writes_what_pytest_benchmark_writes(tmp_path):
    from pytest_benchmark.storage.file import FileStorage

    class Log:
        def __init__(self):
            self.lines = []

        def info(self, text, **_):
            self.lines.append(text)

    doc = _record().to_json()
    theirs = FileStorage(tmp_path / "theirs", logger=Log(), default_machine_id=MACHINE)
    theirs.save(doc, "smoke")
    log = Log()
    ours = file_storage(FileStorage(tmp_path / "ours", logger=log, default_machine_id=MACHINE))
    assert isinstance(ours, FileStorage)
    path = ours.save(doc, "smoke")
    assert path == (tmp_path / "ours" / MACHINE / "0001_smoke.json").resolve()
    assert path.read_bytes() == (tmp_path / "theirs" / MACHINE / "0001_smoke.json").read_bytes()
    assert log.lines == [f"Saved benchmark data in: {path}"]
    assert ours.save(doc, "smoke").name == "0002_smoke.json"
    # pytest-benchmark reads back what the store wrote, through its own storage.
    assert [str(p) for p, _ in ours.load()] == [f"{MACHINE}/0001_smoke.json", f"{MACHINE}/0002_smoke.json"]
    other = object()  # e.g. an Elasticsearch storage: left as pytest-benchmark made it
    assert file_storage(other) is other


# --- the schema: round trip and older versions -------------------------------------------------


def test_a_run_round_trips_through_the_typed_records(tmp_path):
    rec = _record()
    path = RunStore(tmp_path).save(rec, "rt", machine_id=MACHINE)
    doc = json.loads(path.read_text())
    assert doc == json.loads(dumps(rec.to_json()))
    back = read_run(path)
    assert back == rec and back.to_json() == doc
    assert back.schema_version == SCHEMA_VERSION == schema_version(doc)
    assert doc["newer_top_field"] == [1] and doc["alexnet"]["newer_section_field"] is True
    assert doc["alexnet"]["failed"][0]["newer_field"] == 1 and doc["benchmarks"][0]["cprofile"] == []
    case = back.benchmarks[0]
    assert case.isolation == Isolation(mode="process", worker_pid=11, step_pid=11, env={"X": "1"})
    # None fields of the isolation record are not written: a missing key is "not known / does not apply".
    assert set(doc["benchmarks"][0]["extra_info"]["isolation"]) == {"mode", "worker_pid", "step_pid", "env"}
    assert case.duet.rewarm == 1 and case.duet.order == ["base", "head", "head", "base"]
    assert back.alexnet.skipped[0].reason == "fp16 autocast is not supported on CPU"
    assert back.alexnet.failed[0].signal_name == "SIGKILL" and back.alexnet.failed[0].exit_code is None


def test_a_schema_1_run_is_read_with_the_meaning_of_its_version(tmp_path):
    doc = synthetic_run([({}, 100.0)], skipped=[{"name": "s", "reason": "unsupported"}])
    doc["benchmarks"][0]["extra_info"]["duet"] = {"session": "old-1", "side": "head", "order": ["head", "base"]}
    path = write_run(doc, tmp_path, 1, "old")
    rec = read_run(path)
    assert rec.schema_version == 1
    s = rec.alexnet
    assert s.schema_version == 1 and s.preset == "synthetic"
    assert s.isolation == "none"  # schema 1 ran every case in the pytest process
    assert s.failed == [] and s.rounds is None and s.calibrations == {}
    assert s.skipped == [Skip(name="s", reason="unsupported")]
    duet = rec.benchmarks[0].duet  # saved before re-warm and the allocator pin existed
    assert duet.rewarm == 0 and duet.allocator == {"policy": "default"}
    assert rec.benchmarks[0].isolation is None and rec.benchmarks[0].case_id == doc["benchmarks"][0]["extra_info"]["case_id"]


def test_a_run_without_our_section_is_read_and_has_no_schema(tmp_path):
    doc = {"machine_info": {"node": "n"}, "benchmarks": [{"name": "t", "stats": {"data": [1.0]}}]}
    rec = RunRecord.from_json(doc)
    assert rec.alexnet is None and rec.schema_version is None and schema_version(doc) is None
    assert rec.benchmarks[0].samples == [1.0] and rec.to_json()["benchmarks"][0]["extra_info"] == {}
    # schema 2 recorded only in machine_info (an earlier ddp run had no 'isolation' either)
    doc2 = {**doc, "machine_info": {"suite_schema_version": 2}, "alexnet": {"schema_version": 2, "preset": "ddp"}}
    rec2 = RunRecord.from_json(doc2)
    assert rec2.schema_version == 2 and rec2.alexnet.isolation is None and rec2.alexnet.failed == []


def test_the_machine_info_of_every_writer_carries_the_schema_version():
    info = suite_machine_info({"node": "n", "suite_schema_version": 1}, {"torch_version": "2"}, torch_num_threads=3)
    assert info == {"node": "n", "torch_version": "2", "torch_num_threads": 3, "suite_schema_version": SCHEMA_VERSION}


# --- the store: resolving and reading ----------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    store = RunStore(tmp_path / "st")
    a = store.save(_record(), "alpha", machine_id=MACHINE)
    b = store.save(_record(), "beta", machine_id=MACHINE)
    os.utime(a, (1, 1))  # the older file
    return store, a, b


def test_runs_resolve_by_id_name_path_and_latest(saved, tmp_path):
    store, a, b = saved
    assert store.resolve([]) == [b]
    assert store.resolve(["1"]) == [a] and store.resolve(["0002"]) == [b]
    assert store.resolve(["alpha", "0002_beta"]) == [a, b]
    assert RunStore("/nonexistent").resolve([str(a)]) == [a]
    assert RunStore(f"file://{store.root}").resolve(["2"]) == [b]
    # A name saved twice means its latest run.
    again = store.save(_record(), "alpha", machine_id=MACHINE)
    assert store.resolve(["alpha"]) == [again]
    assert run_file_id(again) == ("0003", "alpha") and run_file_id(tmp_path / "x.json") == ("x", "")


@pytest.mark.parametrize(("spec", "needle"), [
    ("7", "run id '7' not found in "),
    ("gamma", "run name 'gamma' not found in "),
    ("missing.json", "run file 'missing.json' not found"),
    ("some/dir/0001_x.json", "run file 'some/dir/0001_x.json' not found"),
])
def test_a_spec_that_matches_nothing_is_a_one_line_error(saved, spec, needle):
    store, _, _ = saved
    with pytest.raises(RunLoadError) as exc:
        store.resolve([spec])
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_an_id_in_two_machine_folders_is_ambiguous_and_an_empty_store_says_how_to_fill_it(saved, tmp_path):
    store, _, _ = saved
    store.save(_record(), "other", machine_id="Darwin-CPython-3.11-64bit")
    with pytest.raises(RunLoadError, match=r"run id '1' is ambiguous: .*; give the file path instead"):
        store.resolve(["1"])
    with pytest.raises(RunLoadError, match=r"no runs found in .*--benchmark-save=NAME"):
        RunStore(tmp_path / "empty").resolve([])


@pytest.mark.parametrize(("text", "needle"), [
    ("{not json", "is corrupt JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    ("[1, 2]", "is not a pytest-benchmark run: top level is list, not an object"),
    ('{"an": "earlier result"}', "is not a pytest-benchmark run: missing key(s) machine_info, benchmarks"),
    ('{"machine_info": {}, "benchmarks": [{"name": "x"}]}', "benchmark #0 has no 'name' and 'stats'"),
])
def test_a_file_that_is_not_a_run_is_a_one_line_error(tmp_path, text, needle):
    path = tmp_path / "0001_bad.json"
    path.write_text(text)
    with pytest.raises(RunLoadError) as exc:
        read_run_json(path)
    assert needle in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(RunLoadError, match="not found"):
        read_run_json(tmp_path / "nope.json")


# --- samples and git ---------------------------------------------------------------------------


def test_a_cases_stats_are_pytest_benchmarks_and_its_median_is_summarizes():
    from pytest_benchmark.stats import Stats

    data = [0.5, 0.1, 0.4, 0.3, 0.2, 0.9]
    st = benchmark_stats(data)
    ref = Stats()
    for x in data:
        ref.update(x)
    assert {k: v for k, v in st.items() if k not in ("data", "iterations")} == ref.as_dict()
    assert st["data"] == data and st["iterations"] == 1 and st["rounds"] == 6
    assert st["median"] == summarize(data).median == pytest.approx(0.35)
    with pytest.raises(ValueError, match="no samples"):
        benchmark_stats([])


def test_commit_info_describes_the_folder_it_is_given_and_restores_the_cwd(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (repo / "f").write_text("1")
    git("add", "f")
    git("commit", "-q", "-m", "one")
    cwd = os.getcwd()
    info = commit_info(repo)
    assert os.getcwd() == cwd
    assert info["id"] == git("rev-parse", "HEAD") and info["dirty"] is False and info["branch"] == "main"
    (repo / "f").write_text("2")
    assert commit_info(repo)["dirty"] is True
