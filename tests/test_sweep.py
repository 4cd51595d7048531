"""The sweep's pure parts, in-process and without torch: the plan (every case in one shard, stability,
balance on the full preset), the shard index, the resume filter, status, merge, the Slurm script."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.sweep.merge import merge_sweep
from bench.sweep.plan import assign_lpt, collect_cases, make_plan, time_limit_s
from bench.sweep.shard import done_cases, new_attempt, shard_index
from bench.sweep.slurm import sbatch_script
from bench.sweep.status import shard_states

OPTIONS = {"rounds": 20, "warmup_rounds": 5, "steps_per_round": "auto", "telemetry_seconds": None,
           "correctness": True, "case_timeout": 900.0}


@pytest.fixture(scope="module")
def full_cases():
    return collect_cases("full", {"device": ["cuda"]})


@pytest.mark.parametrize("shards", [64, 256])
def test_full_plan_puts_every_case_in_one_shard_balanced(full_cases, shards):
    plan = make_plan([dict(c) for c in full_cases], shards=shards, options=OPTIONS, preset="full", selection={})
    ids = [c["case_id"] for c in plan["cases"]]
    assert len(ids) == len(set(ids)) == 11522  # 11,520 step cases and 2 loop cases
    assert all(0 <= c["shard"] < shards for c in plan["cases"])
    assert plan["balance"]["max_over_mean"] <= 1.05
    assert {c["shard"] for c in plan["cases"]} == set(range(shards))


def test_plan_is_the_same_whatever_the_collection_order(full_cases):
    some = [dict(c) for c in full_cases[::37]]
    a = make_plan([dict(c) for c in some], shards=8, options=OPTIONS, preset="full", selection={})
    random.Random(1).shuffle(some)
    b = make_plan(some, shards=8, options=OPTIONS, preset="full", selection={})
    assert {c["case_id"]: c["shard"] for c in a["cases"]} == {c["case_id"]: c["shard"] for c in b["cases"]}
    assert a["plan_id"] == b["plan_id"]


def test_lpt_ties_do_not_depend_on_pythonhashseed_and_planning_needs_no_torch():
    code = ("import json, sys; from bench.sweep.plan import assign_lpt, collect_cases; "
            "collect_cases('full', {'device': ['cuda'], 'batch_size': [32]}); assert 'torch' not in sys.modules; "
            "print(json.dumps(assign_lpt({f'case{i}': 1.0 for i in range(50)}, 7), sort_keys=True))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1
    assert json.loads(outs.pop()) == assign_lpt({f"case{i}": 1.0 for i in range(50)}, 7)


def test_plan_warns_of_a_case_too_big_for_a_shard_and_derives_the_time_limit():
    cases = [{"case_id": f"c{i}", "kind": "step", "config": {"device": "cuda", "compile": "max-autotune" if i == 0 else "off"}}
             for i in range(6)]
    plan = make_plan(cases, shards=3, options=OPTIONS, preset="full", selection={})
    assert plan["warnings"] and "c0" in plan["warnings"][0]
    assert plan["time_limit_s"] == time_limit_s(plan["balance"]["max_s"], "cuda") >= 600
    assert plan["time_limit_s"] % 60 == 0
    with pytest.raises(ValueError, match="--device is required"):
        collect_cases("tiny", {})


def test_shard_index_from_the_engines_variables():
    assert shard_index(2, 4, {}) == (2, "--shard")
    assert shard_index(None, 4, {"SLURM_ARRAY_TASK_ID": "3"}) == (3, "SLURM_ARRAY_TASK_ID")
    assert shard_index(None, 4, {"JOB_COMPLETION_INDEX": "1"}) == (1, "JOB_COMPLETION_INDEX")
    for env, match in (({}, "no shard index"), ({"SLURM_ARRAY_TASK_ID": "9"}, "shards 0-3"),
                       ({"JOB_COMPLETION_INDEX": "x"}, "not a shard index")):
        with pytest.raises(ValueError, match=match):
            shard_index(None, 4, env)


# --- a fabricated sweep folder ------------------------------------------------------------------

FP = {"cpu": "EPYC", "gpus": ["H100 80GB, 81559 MiB, 550.1"], "torch": "2.11.0", "python": "3.11.7"}
CODE = {"commit": "abc", "dirty": False, "diff_sha256": None}
PLAN = {"plan_id": "p1", "preset": "tiny", "shards": 2, "options": OPTIONS, "selection": {},
        "cases": [{"case_id": f"c{i}", "kind": "step", "config": {}, "shard": i % 2} for i in range(4)]}


def _entry(cid: str, wall: float = 1.0) -> dict:
    return {"name": f"test_step[{cid}]", "fullname": f"bench/test_matrix.py::test_step[{cid}]", "group": None,
            "params": {}, "stats": {"data": [0.1]}, "extra_info": {"case_id": cid, "case_wall_s": wall}}


def _attempt(sweep: Path, shard: int, cases: list[str], *, gpu: str = "H100", driver: str = "550.1",
             failed: tuple[str, ...] = (), skipped: tuple[str, ...] = (), fp=FP, code=CODE, started: float = 0.0,
             host: str = "n1", saved: bool = True, journal: tuple[str, ...] = ()):
    a = new_attempt(sweep, shard, {"plan_id": "p1", "plan_options": OPTIONS, "fingerprint": fp, "code": code},
                    host=host)
    meta = json.loads((a.path / "attempt.json").read_text())
    meta["started"] = started
    (a.path / "attempt.json").write_text(json.dumps(meta))
    if saved:
        run = {"machine_info": {"gpu_name": gpu, "gpu_driver": driver, "torch_version": "2.11.0", "node": host},
               "commit_info": {"id": "abc", "dirty": False}, "datetime": "2026-12-03T00:00:00", "version": "5.3.1",
               "benchmarks": [_entry(c) for c in cases],
               "alexnet": {"schema_version": 3, "preset": "cases", "skipped": [{"case_id": c, "reason": "fp16 on CPU"} for c in skipped],
                           "failed": [{"case_id": c, "reason": "worker died"} for c in failed], "calibration": {"gflops": 1.0}}}
        (a.path / "Linux-CPython-3.11-64bit").mkdir()
        (a.path / "Linux-CPython-3.11-64bit" / f"0001_sweep-s{shard:04d}.json").write_text(json.dumps(run))
    if journal:
        (a.path / "journal.jsonl").write_text("".join(json.dumps({"case_id": c, "status": "done", "entry": _entry(c)}) + "\n"
                                                      for c in journal) + '{"case_id": "cut')
    return a


def test_resume_skips_what_matches_and_reruns_failures(tmp_path):
    _attempt(tmp_path, 0, ["c0"], failed=("c2",), skipped=("c4",))
    _attempt(tmp_path, 1, [], saved=False, journal=("c1",))
    assert set(done_cases(tmp_path, PLAN, FP, CODE)) == {"c0", "c4", "c1"}  # c2 failed: it runs again
    assert done_cases(tmp_path, PLAN, {**FP, "gpus": ["A100"]}, CODE) == {}
    assert done_cases(tmp_path, PLAN, FP, {**CODE, "commit": "def"}) == {}
    assert done_cases(tmp_path, {**PLAN, "options": {**OPTIONS, "rounds": 30}}, FP, CODE) == {}


def test_merge_keeps_the_latest_success_and_lists_what_is_missing(tmp_path):
    _attempt(tmp_path, 0, ["c0"], failed=("c2",), started=1.0)
    _attempt(tmp_path, 0, ["c0", "c2"], started=2.0, host="n2")
    _attempt(tmp_path, 1, [], saved=False, journal=("c1",), started=3.0)  # killed; journal only
    merged, missing, lines = merge_sweep(tmp_path, PLAN)
    (m,) = merged
    cases = {b["extra_info"]["case_id"]: b["extra_info"]["sweep"] for b in m.doc["benchmarks"]}
    assert set(cases) == {"c0", "c1", "c2"} and missing == ["c3"]
    assert cases["c0"]["host"] == "n2" and cases["c0"]["attempt"] == 2 and cases["c1"]["run"] == "journal"
    assert m.doc["alexnet"]["failed"] == [] and m.doc["alexnet"]["sweep"]["failed_then_succeeded"] == ["c2"]
    assert m.doc["alexnet"]["preset"] == "tiny" and len(m.doc["alexnet"]["sweep"]["shards"]) == 2
    assert any("c0: measured 2 times" in line for line in lines)
    states = {r["shard"]: r["state"] for r in shard_states(tmp_path, PLAN)}
    # shard 1's attempt has not ended (no end.json) and ran on another host: it may still run
    assert states == {0: "done", 1: "running"}
    (tmp_path / "shard-0001.a1.n1" / "end.json").write_text('{"exit_status": 143}')
    assert shard_states(tmp_path, PLAN)[1]["state"] == "failed"
    _attempt(tmp_path, 1, ["c3"], started=4.0)
    assert {r["shard"]: r["state"] for r in shard_states(tmp_path, PLAN)} == {0: "done", 1: "done"}


def test_merge_never_joins_different_hardware_unless_allowed(tmp_path):
    _attempt(tmp_path, 0, ["c0", "c2"], gpu="H100")
    _attempt(tmp_path, 1, ["c1", "c3"], gpu="A100", fp={**FP, "gpus": ["A100"]})
    merged, missing, lines = merge_sweep(tmp_path, PLAN)
    assert len(merged) == 2 and not missing and any("differ in gpu_name" in line for line in lines)
    drv = tmp_path / "drivers"
    _attempt(drv, 0, ["c0", "c2"], driver="550.1")
    _attempt(drv, 1, ["c1", "c3"], driver="560.2", fp={**FP, "gpus": ["H100 80GB, 81559 MiB, 560.2"]})
    assert len(merge_sweep(drv, PLAN)[0]) == 2
    (m,) = merge_sweep(drv, PLAN, allow=["driver"])[0]
    assert m.doc["alexnet"]["sweep"]["allowed_env_diff"]["values"] == {"gpu_driver": ["550.1", "560.2"]}
    with pytest.raises(ValueError, match="not valid"):
        merge_sweep(drv, PLAN, allow=["colour"])


def test_slurm_script_is_one_array_with_requeue_signal_exec_and_pinned_gpu(tmp_path):
    plan = {**PLAN, "time_limit_s": 3600, "cases": [{**c, "config": {"device": "cuda"}} for c in PLAN["cases"]]}
    text = sbatch_script(plan, tmp_path / "plan.json", tmp_path / "sweep", repo=tmp_path, gpu_type="h100", parallel=1)
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@120",
                 "#SBATCH --gres=gpu:h100:1", "#SBATCH --time=0-01:00:00"):
        assert line in text.splitlines()
    assert text.splitlines()[-1].startswith("exec ") and "--resume" in text
    with pytest.raises(ValueError, match="MaxArraySize"):
        sbatch_script({**plan, "shards": 1002}, tmp_path / "p", tmp_path, repo=tmp_path)


def test_pytest_bench_runs_exactly_a_plans_shard_with_the_plans_options(tmp_path, bench_inline, monkeypatch):
    """``pytest bench/ --sweep-plan PLAN --shard K``: the shard's cases and nothing else; K from
    --shard or the engine's index variable; an option that differs from the plan's, a shard the
    plan has not, or --shard alone, is one line (pytest's usage error)."""
    cases = collect_cases("tiny", {"device": ["cpu"]})
    plan = make_plan([dict(c) for c in cases], shards=2, options=OPTIONS, preset="tiny", selection={})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    for k in (0, 1):
        proc = bench_inline("--sweep-plan", str(path), "--shard", str(k), "--collect-only")
        assert proc.returncode == 0, proc.stderr
        got = sorted(ln.split("[", 1)[1].rstrip("]") for ln in proc.stdout.splitlines() if "::test_" in ln)
        assert got == sorted(c["case_id"] for c in plan["cases"] if c["shard"] == k)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert bench_inline("--sweep-plan", str(path), "--collect-only").returncode == 0
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    for args, message in [(["--shard", "0", "--rounds", "12"], "--rounds 12 differs from the plan's rounds 20"),
                          (["--shard", "0", "--rounds", "20"], None),
                          (["--shard", "2"], "shard 2 (from --shard) is not valid; the plan has shards 0-1"),
                          ([], "no shard index: give --shard K or set one of SLURM_ARRAY_TASK_ID")]:
        proc = bench_inline("--sweep-plan", str(path), *args, "--collect-only")
        if message is None:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode == pytest.ExitCode.USAGE_ERROR and message in proc.stderr, (args, proc.stderr)
    proc = bench_inline("--shard", "0", "--collect-only")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR and "--shard needs --sweep-plan PLAN" in proc.stderr
