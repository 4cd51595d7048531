"""`alexnet-bench compare` as CI meets it: exit 0/1/2, the case named, outputs, env refusal.

Two real runs of the suite's `tiny` preset (real noise from this machine): the session's shared
run (tests/conftest.py) and one more made the same way for this module; planted slowdowns
multiply their real samples. Pure-statistics tests on made-up
numbers say so in their names (``synthetic``).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from runrecord.samples import paced_samples
from reports.compare import DUET_THRESHOLD, QUIET_DRIFT_SD, compare_runs, round_spread, paired_estimate, runs_estimate, single_run_estimate
from reports.load import load_run
from tests import machine
from tests.conftest import SHARED_RUN_ARGS, run_cli, save_run

# IQR/median of a run's rounds up to which one run pair can resolve a 15% change against a
# quiet machine's drift floor (QUIET_DRIFT_SD 4.5%): with 10 rounds at 5% the combined sd is
# ~0.05, z ~ 2.8 > 2.58. This machine's own drift (DRIFT_SD 0.2, the default) is far larger:
# there a single pair of runs resolves nothing finer than about 1.7x, which is why the planted
# single-run tests state the drift they assume.
MAX_SPREAD = 0.05


@pytest.fixture(scope="module")
def real_runs(shared_tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """Two real runs of the same code with the same cases: the shared run, and a second one."""
    # Judged against the shared run: neither may measure another test's work, and both keep one
    # thread (the pace GEMM of a paced comparison; tests/conftest.py, shared_tiny_run).
    with machine.exclusive():
        second = save_run(tmp_path_factory.mktemp("storage"), "aa2", *SHARED_RUN_ARGS)
    return shared_tiny_run.path, second.path


def planted(src: Path, dst: Path, *, factor: float, case: int | None = 0, memory: float = 1.0) -> str:
    """Copy a real run with one case's samples (all when case is None) times ``factor``."""
    data = json.loads(src.read_text())
    benches = data["benchmarks"] if case is None else [data["benchmarks"][case]]
    for b in benches:
        b["stats"]["data"] = [t * factor for t in b["stats"]["data"]]
        if b["extra_info"].get("peak_memory_bytes") is not None:
            b["extra_info"]["peak_memory_bytes"] *= memory
    dst.write_text(json.dumps(data))
    return data["benchmarks"][case or 0]["extra_info"]["case_id"]


def precise(run: Path) -> str | None:
    """Why this run's rounds are too spread to resolve a 15% change in a single run, or None.

    On a busy, oversubscribed machine the single-run model honestly answers `noisy`; the tests
    then check that answer instead of the regression."""
    for b in json.loads(run.read_text())["benchmarks"]:
        e = b["extra_info"]
        paced = paced_samples(b["stats"]["data"], e["pace"]["samples"])
        for what, samples in (("rounds", b["stats"]["data"]), ("paced rounds", paced)):
            spread = round_spread(np.asarray(samples))
            if spread > MAX_SPREAD:
                return f"{e['case_id']}: {what} have IQR/median {spread:.0%} > {MAX_SPREAD:.0%}"
    return None


def compare_cli(*args, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """As a user runs it: a fresh ``python -m bench compare`` process. The CI job's own step
    summary (tox passes GITHUB_STEP_SUMMARY through) is never written by a test."""
    return run_cli("compare", *map(str, args), cwd=tmp_path, env={"GITHUB_STEP_SUMMARY": "", **(env or {})})


@pytest.fixture
def compare_main(capsys, monkeypatch, tmp_path):
    """The same `bench.cli.main`, in this process (a CLI process costs a torch import)."""

    def call(*args) -> subprocess.CompletedProcess:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
        try:
            rc = main(["compare", *map(str, args)])
        except SystemExit as exc:
            rc = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out.out, out.err)

    return call


def test_two_saved_runs_of_the_same_code_exit_0(real_runs, tmp_path):
    r = compare_cli(*real_runs, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no regression" in r.stdout
    assert "regression " not in r.stdout.replace("no regression", "")


def test_runs_with_other_steps_per_round_are_refused_with_one_line(shared_tiny_run, tmp_path, compare_main):
    """Per-step times from blocks of 4 steps and from single steps are not one quantity (on a GPU):
    `compare` refuses them before judging, exit 2."""
    blocked = tmp_path / "0002_blocked.json"
    data = json.loads(shared_tiny_run.path.read_text())
    for b in data["benchmarks"]:
        b["extra_info"]["steps_per_round"] = 4
    blocked.write_text(json.dumps(data))
    r = compare_main(shared_tiny_run.path, blocked)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "steps per round differ" in r.stderr and "(1, 4)" in r.stderr and r.stdout == ""


def test_15_percent_slower_candidate_exits_1_and_is_named(real_runs, tmp_path):
    busy = precise(real_runs[0])
    slow = tmp_path / "0099_slow.json"
    case = planted(real_runs[0], slow, factor=1.15, case=0)
    md = tmp_path / "cmp.md"
    js = tmp_path / "cmp.json"
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step output\n")
    # A copy of the same run slowed by 15%, judged against a quiet machine's drift (4.5%).
    r = compare_cli(real_runs[0], slow, "--markdown", md, "--json", js, "--drift-sd", QUIET_DRIFT_SD,
                    tmp_path=tmp_path, env={"GITHUB_STEP_SUMMARY": str(summary)})
    row = next(line for line in r.stdout.splitlines() if line.startswith(case))
    assert "1.150" in row
    result = json.loads(js.read_text())
    verdicts = {c["case"]: c["verdict"] for c in result["cases"]}
    if busy is not None and verdicts[case] == "noisy":
        # Rounds too spread to resolve 15% in one run: `noisy`, exit 0, and the note says why.
        assert r.returncode == 0 and "noisy" in row, busy
        return
    assert r.returncode == 1, r.stdout + r.stderr
    assert "regression" in row
    others = [line for line in r.stdout.splitlines() if "-cpu" in line and not line.startswith(case)]
    assert others and all("regression" not in line for line in others)
    text = md.read_text()
    assert f"| **{case}** |" in text and "regression" in text
    # The step summary keeps what was there and gains the same markdown.
    assert summary.read_text() == "earlier step output\n" + text + "\n"
    assert result["has_regression"] is True
    assert verdicts[case] == "regression"


@pytest.mark.parametrize("factor, flagged", [(1.15, True), (1.02, False)])
def test_planted_slowdown_of_real_samples_single_run(real_runs, tmp_path, factor, flagged):
    """Every case of a real run slowed by ``factor``, judged as single runs against a quiet
    machine's drift (4.5%): 15% is caught, 2% is not (5% threshold). 10% needs `ab`'s pairs."""
    slow = tmp_path / "0099_slow.json"
    planted(real_runs[0], slow, factor=factor, case=None)
    cmp = compare_runs([load_run(real_runs[0])], [load_run(slow)], drift_sd=QUIET_DRIFT_SD)
    assert cmp.table["method"].str.contains("single run").all()
    assert np.allclose(cmp.table["ratio"], factor)
    if not flagged:
        assert not cmp.has_regression
        assert set(cmp.table["verdict"]) <= {"unchanged", "noisy"}
    elif precise(real_runs[0]) is None:
        assert cmp.has_regression and set(cmp.table["verdict"]) == {"regression"}
    else:  # a busy machine: never unchanged or faster, and `noisy` only through the spread gate
        assert set(cmp.table["verdict"]) <= {"regression", "noisy"}


def test_pace_removes_a_machine_that_was_slower_for_the_whole_candidate_run(real_runs, tmp_path):
    """Real samples; the candidate machine planted 1.5x slower (rounds *and* pace GEMM): paced,
    the code is judged unchanged; raw (--no-pace), the same runs read 1.5x."""
    data = json.loads(real_runs[0].read_text())
    for b in data["benchmarks"]:
        b["stats"]["data"] = [t * 1.5 for t in b["stats"]["data"]]
        b["extra_info"]["pace"]["samples"] = [t * 1.5 for t in b["extra_info"]["pace"]["samples"]]
    slow_machine = tmp_path / "0099_slowmachine.json"
    slow_machine.write_text(json.dumps(data))
    paced = compare_runs([load_run(real_runs[0])], [load_run(slow_machine)])
    assert np.allclose(paced.table["ratio"], 1.0) and not paced.has_regression
    assert paced.table["paced"].all() and any("pace-normalised" in n for n in paced.notes)
    raw = compare_runs([load_run(real_runs[0])], [load_run(slow_machine)], pace=False, drift_sd=QUIET_DRIFT_SD)
    assert np.allclose(raw.table["ratio"], 1.5) and not raw.table["paced"].any()


def test_runs_saved_without_pace_are_judged_on_raw_times_and_say_so(real_runs, tmp_path):
    data = json.loads(real_runs[1].read_text())
    for b in data["benchmarks"]:
        del b["extra_info"]["pace"]
    old = tmp_path / "0099_old.json"
    old.write_text(json.dumps(data))
    cmp = compare_runs([load_run(real_runs[0])], [load_run(old)])
    assert not cmp.table["paced"].any()
    assert any("no pace samples" in n for n in cmp.notes)
    assert cmp.table["method"].str.startswith("single run").all()


@pytest.mark.parametrize("speed, gated", [(1 / 1.3, True), (1.05, False)])
def test_calibration_gemm_gates_raw_single_run_verdicts(real_runs, tmp_path, speed, gated):
    """The same run against itself with only its calibration GEMM's speed changed: beyond
    MAX_CALIBRATION_SHIFT (~16%) the machine changed state between the runs, so raw times get
    `noisy` with a note; a 5% change in the GEMM leaves the verdicts alone. The ratio itself is
    never divided by the GEMM's speed."""
    data = json.loads(real_runs[0].read_text())
    data["alexnet"]["calibration"]["gflops"] *= speed
    other = tmp_path / "0099_cal.json"
    other.write_text(json.dumps(data))
    base = compare_runs([load_run(real_runs[0])], [load_run(real_runs[0])], pace=False)
    cmp = compare_runs([load_run(real_runs[0])], [load_run(other)], pace=False)
    assert np.allclose(cmp.table["ratio"], 1.0)
    shifted = [n for n in cmp.notes if "calibration GEMM ran at" in n]
    if gated:
        assert set(cmp.table["verdict"]) == {"noisy"} and len(shifted) == 1 and "0.77x" in shifted[0]
    else:
        assert not shifted and list(cmp.table["verdict"]) == list(base.table["verdict"])
    paced = compare_runs([load_run(real_runs[0])], [load_run(other)])  # paced cases skip this gate
    assert not any("calibration GEMM ran at" in n for n in paced.notes)


def test_memory_growth_is_a_regression_of_its_own(real_runs, tmp_path):
    fat = tmp_path / "0099_fat.json"
    case = planted(real_runs[0], fat, factor=1.0, case=0, memory=1.25)
    cmp = compare_runs([load_run(real_runs[0])], [load_run(fat)])
    row = cmp.table.set_index("case").loc[case]
    assert row["memory_verdict"] == "regression" and row["verdict"] != "regression"
    assert cmp.has_regression
    assert compare_runs([load_run(real_runs[0])], [load_run(fat)], memory_threshold=0.30).has_regression is False


@pytest.mark.parametrize("memory, expected", [(1.0, "unchanged"), (0.846, "noisy"), (1.15, "noisy"), (0.80, "improvement")])
def test_memory_within_the_aa_noise_floor_is_never_a_verdict(real_runs, tmp_path, memory, expected):
    """Two runs of identical code have differed by up to 0.846 in peak RSS: no memory verdict inside that."""
    from reports.compare import MEMORY_FLOOR, memory_verdict

    other = tmp_path / "0099_mem.json"
    case = planted(real_runs[0], other, factor=1.0, case=0, memory=memory)
    cmp = compare_runs([load_run(real_runs[0])], [load_run(other)])
    row = cmp.table.set_index("case").loc[case]
    assert row["memory_verdict"] == expected and row["memory_floor"] == MEMORY_FLOOR
    assert any("noise floor" in n and f"{math.exp(MEMORY_FLOOR):.2f}" in n for n in cmp.notes)
    # A memory kind with no measured floor (CUDA) keeps the plain threshold.
    assert memory_verdict(0.846, threshold=0.10, floor=0.0) == "improvement"


def test_corrupt_file_exits_2_with_one_line(real_runs, tmp_path):
    bad = tmp_path / "0099_bad.json"
    bad.write_text(real_runs[0].read_text()[:200])
    r = compare_cli(real_runs[0], bad, tmp_path=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "corrupt" in r.stderr and str(bad) in r.stderr


def test_missing_file_exits_2_with_one_line(real_runs, tmp_path, compare_main):
    r = compare_main(real_runs[0], tmp_path / "nope.json")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "nope.json" in r.stderr


def test_run_without_raw_samples_exits_2_saying_how_to_save_them(real_runs, tmp_path, compare_main):
    # What pytest-benchmark writes without --benchmark-save-data: stats without "data".
    data = json.loads(real_runs[1].read_text())
    for b in data["benchmarks"]:
        del b["stats"]["data"]
    nosamples = tmp_path / "0099_nodata.json"
    nosamples.write_text(json.dumps(data))
    r = compare_main(real_runs[0], nosamples)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--benchmark-save-data" in r.stderr


def test_no_cases_in_common_exits_2(real_runs, tmp_path, compare_main):
    data = json.loads(real_runs[1].read_text())
    for b in data["benchmarks"]:
        b["extra_info"]["config"]["batch_size"] += 1000
    other = tmp_path / "0099_other.json"
    other.write_text(json.dumps(data))
    r = compare_main(real_runs[0], other)
    assert r.returncode == 2 and "no cases in common" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_environment_mismatch_refuses_then_heads_every_output_when_allowed(real_runs, tmp_path, compare_main):
    data = json.loads(real_runs[1].read_text())
    data["machine_info"]["torch_version"] = "9.9.9"
    data["machine_info"]["cpu_model"] = "Other CPU 3000"
    other = tmp_path / "0099_env.json"
    other.write_text(json.dumps(data))
    r = compare_main(real_runs[0], other)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "torch_version" in r.stderr and "9.9.9" in r.stderr and "cpu_model" in r.stderr
    assert "--allow-env-mismatch" in r.stderr

    md, js = tmp_path / "m.md", tmp_path / "m.json"
    r = compare_main(real_runs[0], other, "--allow-env-mismatch", "--markdown", md, "--json", js)
    assert r.returncode in (0, 1), r.stderr
    assert r.stdout.startswith("ENVIRONMENT DIFFERS") and "9.9.9" in r.stdout.splitlines()[1] + r.stdout.splitlines()[2]
    assert "Environment differs" in md.read_text().split("|")[0] and "9.9.9" in md.read_text().split("|")[0]
    assert any("9.9.9" in d for d in json.loads(js.read_text())["env_differences"])


def test_existing_output_file_is_never_overwritten(real_runs, tmp_path, compare_main):
    md = tmp_path / "earlier.md"
    md.write_text("earlier result")
    r = compare_main(*real_runs, "--markdown", md)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert md.read_text() == "earlier result"


def test_an_output_path_that_cannot_be_written_is_exit_2_before_any_work(shared_tiny_run, tmp_path, compare_main):
    """Exit 1 means a regression: a typo in an output path must never read as one."""
    run = shared_tiny_run.path
    for flag, path, needle in (("--markdown", tmp_path / "no" / "such" / "x.md", "does not exist"),
                               ("--json", tmp_path / "afile" / "x.json", "does not exist")):
        if flag == "--json":
            (tmp_path / "afile").write_text("a file, not a folder")
        r = compare_main(run, run, flag, path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
        assert r.stdout == ""  # refused before the comparison was printed
    from bench.cli.errors import UsageError, write_output

    (tmp_path / "adir").mkdir()
    with pytest.raises(UsageError, match="could not be written"):  # an error while writing: the same exit 2
        write_output(tmp_path / "adir", "x", "--json")


def test_several_runs_per_side_and_run_ids(real_runs, tmp_path, compare_main):
    storage = real_runs[0].parent.parent
    ids = [p.name.split("_")[0] for p in real_runs]
    r = compare_main("--storage", storage, "--baseline", *ids, "--candidate", *reversed(ids))
    assert r.returncode == 0, r.stderr
    assert "test: paced: Mann-Whitney on run medians (2 vs 2 runs)" in r.stdout
    assert "smallest possible Mann-Whitney p" in r.stdout  # 2 vs 2 runs can never reach alpha: said so
    r = compare_main("--storage", storage, ids[0])
    assert r.returncode == 2 and "expected 2 runs" in r.stderr


@pytest.mark.parametrize("value", ["5x", "150%", "-1"])
def test_bad_threshold_exits_2(real_runs, tmp_path, compare_main, value):
    r = compare_main(*real_runs, "--threshold", value)
    assert r.returncode == 2 and value in r.stderr and "5%" in r.stderr


# --- the noise models on synthetic numbers -------------------------------------------------------


def test_synthetic_within_run_samples_alone_cannot_make_a_single_run_regression():
    """Two single runs 8% apart, each with tight rounds: a rounds-only test calls it significant;
    the drift floor keeps it from being a regression (8% is within this machine's run-to-run drift)."""
    rng = np.random.default_rng(0)
    a = rng.normal(0.100, 0.001, 30)
    b = rng.normal(0.108, 0.001, 30)
    from scipy import stats

    assert stats.mannwhitneyu(a, b).pvalue < 1e-6  # the false alarm a rounds-only test raises
    est = single_run_estimate([a], [b])
    assert est.p_value > 0.01 and math.isclose(est.ratio, np.median(b) / np.median(a))


def test_synthetic_paired_runs_cancel_shared_drift():
    """Drift shared by neighbouring runs (+-15%) swamps a 10% slowdown unpaired, not paired."""
    drift = np.array([1.0, 1.15, 0.9, 1.1, 0.95, 1.05])
    base = 0.1 * drift
    cand = 0.1 * drift * 1.10 * np.array([1.01, 0.99, 1.0, 1.005, 0.995, 1.0])
    paired = paired_estimate(base, cand)
    assert paired.p_value < 0.01 and 1.08 < paired.ratio < 1.12
    unpaired = runs_estimate([np.array([x]) for x in base], [np.array([x]) for x in cand])
    assert unpaired.p_value > 0.01


def test_allow_env_diff_names_the_intended_fields_and_still_refuses_others(real_runs, tmp_path, compare_main):
    """A torch upgrade, judged on purpose: the intended difference heads the output; a different
    CPU at the same time still refuses (machine_info stubbed: two venvs of one torch never differ)."""
    data = json.loads(real_runs[1].read_text())
    data["machine_info"]["torch_version"] = "2.11.0"
    upgraded = tmp_path / "0098_torch.json"
    upgraded.write_text(json.dumps(data))
    md = tmp_path / "t.md"
    r = compare_main(real_runs[0], upgraded, "--allow-env-diff", "torch,cuda,cudnn", "--markdown", md)
    assert r.returncode in (0, 1), r.stderr
    assert r.stdout.startswith("INTENDED ENVIRONMENT DIFFERENCES") and "2.11.0" in r.stdout.splitlines()[1]
    assert "Intended environment differences" in md.read_text().split("|")[0]
    data["machine_info"]["cpu_model"] = "Other CPU 3000"
    both = tmp_path / "0097_cpu.json"
    both.write_text(json.dumps(data))
    r = compare_main(real_runs[0], both, "--allow-env-diff", "torch")
    assert r.returncode == 2 and "cpu_model" in r.stderr and "torch_version" not in r.stderr
    r = compare_main(real_runs[0], upgraded, "--allow-env-diff", "torch,gcc")
    assert r.returncode == 2 and "gcc" in r.stderr and "cudnn" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _duet_pair(base_rounds, head_rounds, *, session: int, estimator: str = "adjacent", compile: str | None = None,
               cold: tuple[float, float] = (1.0, 1.0)) -> tuple:
    """A base and a head run of one duet session, built from given rounds (as `ab` saves them)."""
    from reports.load import Run

    def run(side, rounds):
        order = ["base", "head", "head", "base"] * (len(rounds) // 2)
        config = {"case": "c", **({"compile": compile} if compile else {})}
        bench = {"name": "test_step[c]", "fullname": "bench/test_matrix.py::test_step[c]",
                 "stats": {"data": list(rounds)},
                 "extra_info": {"config": config, "case_id": "c", "cold_step_s": cold[side == "head"],
                                "pace": {"samples": [1.0] * (len(rounds) + 1)},
                                "duet": {"session": f"s{session}", "side": side, "estimator": estimator,
                                         "order": order[: 2 * len(rounds)],
                                         "compile_cache": "fresh" if session == 0 else "reused"}}}
        return Run(path=Path(f"/x/{side}{session}.json"), run_id=f"{session:04d}", name=side,
                   raw={"machine_info": {}, "benchmarks": [bench]})

    return run("base", base_rounds), run("head", head_rounds)


@pytest.mark.parametrize("estimator", ["raw", "paced", "adjacent"])
def test_duet_sessions_are_the_unit_and_the_saved_estimator_is_honoured(estimator):
    rng = np.random.default_rng(3)
    sessions = []
    for i in range(8):
        drift = np.exp(rng.normal(0, 0.2, 20))  # shared by both sides at each moment: cancels
        per_process = np.exp(rng.normal(0, 0.01))
        base = 0.1 * drift * np.exp(rng.normal(0, 0.01, 20))
        head = 0.1 * 1.10 * per_process * drift * np.exp(rng.normal(0, 0.01, 20))
        sessions.append(_duet_pair(base, head, session=i, estimator=estimator))
    c = compare_runs([b for b, _ in sessions], [h for _, h in sessions], paired=True)
    row = c.table.iloc[0]
    assert row["method"] == f"duet: {estimator} estimator, t on 8 sessions"
    assert row["threshold"] == pytest.approx(DUET_THRESHOLD)  # the duet's default threshold
    if estimator == "adjacent":  # the shared drift cancels exactly in adjacent ratios
        assert row["verdict"] == "regression" and row["ci_low"] > 1.05 and row["ci_high"] < 1.15
    # A/A: the same sessions without the change are never a regression.
    aa = [_duet_pair(b.raw["benchmarks"][0]["stats"]["data"], b.raw["benchmarks"][0]["stats"]["data"], session=i,
                     estimator=estimator) for i, (b, _) in enumerate(sessions)]
    assert not compare_runs([b for b, _ in aa], [h for _, h in aa], paired=True).has_regression


def test_a_compiled_duet_shows_its_cold_compile_from_the_fresh_session_and_never_judges_it():
    rng = np.random.default_rng(5)
    rounds = [0.1 * np.exp(rng.normal(0, 0.01, 10)) for _ in range(6)]
    compiled = [_duet_pair(r, r, session=i, compile="default", cold=(25.9, 62.6) if i == 0 else (2.0, 2.1))
                for i, r in enumerate(rounds)]
    c = compare_runs([b for b, _ in compiled], [h for _, h in compiled], paired=True)
    row = c.table.iloc[0]
    assert (row["baseline_cold_compile_s"], row["candidate_cold_compile_s"]) == (25.9, 62.6)  # the fresh session's
    assert row["verdict"] != "regression"  # x2.42 in the cold compile: shown, not judged
    assert any("cold compile" in n and "base 25.9 s, head 62.6 s (x2.42)" in n for n in c.notes)
    eager = [_duet_pair(r, r, session=i, compile="off", cold=(0.5, 0.9)) for i, r in enumerate(rounds)]
    c = compare_runs([b for b, _ in eager], [h for _, h in eager], paired=True)
    assert "baseline_cold_compile_s" not in c.table.columns and not any("cold compile" in n for n in c.notes)


def test_cpu_peak_memory_is_not_compared_across_schema_versions(real_runs, tmp_path, compare_main):
    """Schema 1 saved the whole process's RSS as peak_memory_bytes; schema 2 the case's worker.
    Times are still judged; memory gets no verdict, and a note says why."""
    data = json.loads(real_runs[0].read_text())
    data["alexnet"]["schema_version"] = 1
    for b in data["benchmarks"]:
        b["extra_info"]["memory_kind"] = "cpu_peak_rss"
        b["extra_info"]["peak_memory_bytes"] *= 3  # an old run's whole-process figure
    old = tmp_path / "0096_schema1.json"
    old.write_text(json.dumps(data))
    js = tmp_path / "m.json"
    r = compare_main(old, real_runs[1], "--json", js)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(js.read_text())
    assert {c["memory_verdict"] for c in result["cases"]} == {"n/a"}
    assert all(c["ratio"] is not None for c in result["cases"])
    assert any("peak memory not compared" in n and "schema 1" in n for n in result["notes"])


def test_an_interrupted_run_is_judged_only_when_asked(shared_tiny_run, tmp_path, compare_main):
    """A run cut short by a signal (alexnet.interrupted) would read its cases never run as gone:
    `compare` refuses it in one line (exit 2) unless --allow-partial."""
    cut = tmp_path / "0002_cut.json"
    data = json.loads(shared_tiny_run.path.read_text())
    data["alexnet"]["interrupted"] = {"signal": "SIGTERM", "not_run": ["inference-d2l-b2-65x65-fp32-cl-cpu"],
                                      "collected": 3}
    data["benchmarks"] = data["benchmarks"][:2]
    cut.write_text(json.dumps(data))
    r = compare_main(shared_tiny_run.path, cut)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "interrupted by SIGTERM (1 of 3 cases not run)" in r.stderr and "--allow-partial" in r.stderr
    r = compare_main(shared_tiny_run.path, cut, "--allow-partial")
    assert r.returncode in (0, 1) and "train-d2l-b2-65x65-fp32-cpu" in r.stdout, r.stderr
