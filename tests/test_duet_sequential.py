"""The duet's sequential rule (`reports.compare.sequential`), in-process: its looks, its boundaries
against published figures, its stops, how `compare` re-judges saved sequential sessions (by tag or
folder, `compare --paired --sessions`), and the one-line refusal of sessions whose sides ran with a
different re-warm count or allocator policy. No duet runs here: tests/test_ab.py's A/A is the real one.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from reports.compare import DUET_THRESHOLD, compare_runs
from reports.compare.sequential import (FUTILITY_LEVEL, crossing_probability, decide, describe_futility, design, looks,
                                        obf_constant, run_rule, saved_futility, t_boundaries)
from reports.load import Run
from tests.test_compare import compare_main  # noqa: F401, F811 - the fixture: `compare` in this process

THR = DUET_THRESHOLD


def test_the_looks():
    assert looks(30) == (4, 6, 8, 10, 12, 15, 20, 25, 30)  # 4, every 2 from 6 to 12, then every 5 from 15
    assert looks(16) == (4, 6, 8, 10, 12, 16)  # no look 1 session before the last
    assert looks(12) == (4, 6, 8, 10, 12)
    assert looks(32) == (4, 6, 8, 10, 12, 15, 20, 25, 32)  # 25 32, not 25 30 32
    assert looks(9) == (4, 6, 9) and looks(7) == (4, 7) and looks(5) == (5,) and looks(2) == (2,)
    assert looks(30, early=(6, 8, 10, 12)) == (6, 8, 10, 12, 15, 20, 25, 30)  # 2026-12-03's afternoon
    assert looks(30, early=(6, 10)) == (6, 10, 15, 20, 25, 30)  # the rule of 2026-12-03's morning
    assert looks(30, early=(10,)) == (10, 15, 20, 25, 30)  # and the one before it
    with pytest.raises(ValueError):
        looks(1)


@pytest.mark.parametrize("k, published", [(1, 1.960), (2, 1.977), (3, 2.004), (5, 2.040)])
def test_obrien_fleming_constants_match_the_published_table(k, published):
    """Jennison and Turnbull (2000), table 2.3, C_B(K, 0.05) for K equally spaced looks."""
    assert obf_constant(tuple(range(1, k + 1)), 0.05) == pytest.approx(published, abs=0.001)


def test_the_default_boundaries_spend_alpha_and_no_more():
    counts = looks(30)
    c = obf_constant(counts, 0.01)
    assert c == pytest.approx(2.6316, abs=0.001)  # looks from 10 alone: 2.6314 (4 million simulated A/As: 0.996%)
    z = [c * math.sqrt(30 / n) for n in counts]
    assert crossing_probability(z, counts) == pytest.approx(0.01, abs=2e-4)
    tb = t_boundaries(counts, 0.01)
    assert all(a > b for a, b in zip(tb, tb[1:])) and tb[-1] > z[-1]  # strict early; t wider than z
    plan = design(30, alpha=0.01)
    assert plan["looks"] == [4, 6, 8, 10, 12, 15, 20, 25, 30] and plan["futility"] == FUTILITY_LEVEL == 0.05
    # The early looks spend (almost) nothing: c as without them; at 6 only a futility stop happens.
    assert obf_constant(looks(30, early=(10,)), 0.01) == pytest.approx(c, abs=1e-3) and tb[0] > 50


def test_a_clear_aa_stops_unchanged_at_the_first_look():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.01, 30)
    assert decide(d[:9], looks(30), alpha=0.01, threshold=THR) is None  # no look at 9
    look = run_rule(d, looks(30), alpha=0.01, threshold=THR)
    assert (look.n, look.verdict) == (4, "unchanged")
    # Without the looks at 4 and 6 the same sessions stop at 8, without any before 10 at 10.
    assert run_rule(d, looks(30, early=(8, 10)), alpha=0.01, threshold=THR).n == 8
    assert run_rule(d, looks(30, early=(10,)), alpha=0.01, threshold=THR).n == 10


def test_the_unchanged_stop_is_the_90_percent_interval_and_old_runs_keep_their_level():
    """Four sessions whose 90% interval lies within the threshold but whose 95% one does not: `unchanged`
    at the look at 4 now, and not under the 97.5% bounds that runs saved earlier on 2026-12-03."""
    d = np.array([0.030, -0.008, 0.022, -0.004])  # mean 0.010, sd 0.019: 90% bound 0.032, 95% bound 0.040
    se = d.std(ddof=1) / 2
    assert d.mean() + 2.353 * se < math.log1p(THR) < d.mean() + 3.182 * se  # t(0.95; 3), t(0.975; 3)
    counts = looks(30)
    assert decide(d, counts, alpha=0.01, threshold=THR).verdict == "unchanged"
    assert decide(d, counts, alpha=0.01, threshold=THR, futility=0.025).verdict is None
    # Identical sessions (a bootstrap drawing one saved session 4 times) give no spread to test
    # against: no stop above the threshold, `unchanged` within it.
    assert decide([math.log(1.04)] * 4, counts, alpha=0.01, threshold=THR).verdict is None
    assert decide([0.01] * 4, counts, alpha=0.01, threshold=THR).verdict == "unchanged"
    # Runs saved with another level are re-judged with it; runs from before the level was saved: 1%.
    assert saved_futility({"looks": [6, 10], "futility": 0.025}) == 0.025
    assert saved_futility({"looks": [10, 15]}) == 0.01
    assert describe_futility({"looks": [6, 10], "futility": 0.025}) == "97.5% (the 95% interval)"


def test_a_clear_regression_stops_early_and_a_borderline_one_runs_to_the_end():
    rng = np.random.default_rng(1)
    clear = rng.normal(math.log(1.10), 0.027, 30)
    look = run_rule(clear, looks(30), alpha=0.01, threshold=THR)
    assert look.verdict == "regression" and look.n < 30
    # x1.03 give or take 2% in every other session: neither clearly above 3.5% nor clearly within.
    borderline = math.log(1.03) + 0.02 * np.resize([1.0, -1.0], 30)
    look = run_rule(borderline, looks(30), alpha=0.01, threshold=THR)
    assert (look.n, look.verdict) == (30, "noisy")


def test_error_rates_on_simulated_sessions_at_the_measured_spread():
    """A normal model at the inference case's session sd (0.027): the targets, with room."""
    rng = np.random.default_rng(2)
    reps = 150
    rates = {}
    for effect in (1.0, 1.02, 1.05):
        hits = [run_rule(rng.normal(math.log(effect), 0.027, 30), looks(30), alpha=0.01,
                         threshold=THR).verdict == "regression" for _ in range(reps)]
        rates[effect] = sum(hits) / reps
    assert rates[1.0] == 0 and rates[1.02] <= 0.05 and rates[1.05] >= 0.95, rates


def _pair(i: int, base: list[float], head: list[float], *, plan: dict | None, rewarm=(1, 1),
          policy=("pinned", "pinned")) -> tuple[Run, Run]:
    def run(side, rounds, rw, pol):
        duet = {"session": f"t-c-{i}", "side": side, "estimator": "raw", "order": ["base", "head"] * len(rounds),
                "rewarm": rw, "allocator": {"policy": pol}, "compile_cache": "fresh" if i == 1 else "reused"}
        if plan:
            duet["sequential"] = plan
        bench = {"name": "test_step[c]", "fullname": "bench/test_matrix.py::test_step[c]",
                 "stats": {"data": list(rounds)},
                 "extra_info": {"config": {"case": "c"}, "case_id": "c", "pace": {"samples": [1.0] * (len(rounds) + 1)},
                                "duet": duet}}
        return Run(path=f"/x/{side}{i}.json", run_id=f"{i:04d}", name=side, raw={"machine_info": {}, "benchmarks": [bench]})

    return run("base", base, rewarm[0], policy[0]), run("head", head, rewarm[1], policy[1])


def _sessions(effect: float, n: int, *, sd: float = 0.01, plan: dict | None, seed: int = 3, **kw):
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(1, n + 1):
        base = list(0.05 * np.exp(rng.normal(0, 0.005, 10)))
        head = list(0.05 * effect * np.exp(rng.normal(0, sd) + rng.normal(0, 0.005, 10)))
        pairs.append(_pair(i, base, head, plan=plan, **kw))
    return [b for b, _ in pairs], [h for _, h in pairs]


def test_compare_rejudges_a_sequential_duet_where_it_stopped():
    plan = design(30, alpha=0.01)
    base, head = _sessions(1.0, 10, plan=plan)
    row = compare_runs(base, head, paired=True).table.iloc[0]
    assert row["verdict"] == "unchanged" and "sequential: stopped at look 4 of 4/6/8/10/12/15/20/25/30" in row["method"]
    # Sessions past the stopping look (none from ab) do not change the verdict: the rule stopped at 4.
    base, head = _sessions(1.0, 15, plan=plan)
    row = compare_runs(base, head, paired=True).table.iloc[0]
    assert row["verdict"] == "unchanged" and "t on 4 sessions" in row["method"]
    assert any("futility level, 95% (the 90% interval)," in n for n in compare_runs(base, head, paired=True).notes)
    # Sessions saved with an earlier design (looks from 10) are judged by the looks they saved.
    old = {**plan, "looks": [10, 15, 20, 25, 30]}
    base, head = _sessions(1.0, 15, plan=old)
    row = compare_runs(base, head, paired=True).table.iloc[0]
    assert row["verdict"] == "unchanged" and "stopped at look 10 of 10/15/20/25/30" in row["method"]
    # A clear regression stops at the first look it crosses.
    base, head = _sessions(1.10, 30, plan=plan)
    c = compare_runs(base, head, paired=True)
    assert c.has_regression and c.table.iloc[0]["verdict"] == "regression"
    assert any("sequential rule" in n for n in c.notes)
    # Sessions cut short before the first look (an interrupted ab): no verdict, and no error.
    base, head = _sessions(1.10, 3, plan=plan)
    row = compare_runs(base, head, paired=True).table.iloc[0]
    assert row["verdict"] == "noisy" and "cut short before the first look" in row["method"]
    # Without a saved design (older runs, the study's fixed-count sessions): the t-test on all of them.
    base, head = _sessions(1.0, 12, plan=None)
    row = compare_runs(base, head, paired=True).table.iloc[0]
    assert row["method"] == "duet: raw estimator, t on 12 sessions"


@pytest.mark.parametrize("kw, what", [({"rewarm": (1, 0)}, "rewarm"),
                                      ({"policy": ("pinned", "default")}, "allocator policy")])
def test_sessions_whose_sides_differ_in_rewarm_or_allocator_are_refused(kw, what):
    base, head = _sessions(1.0, 4, plan=None, **kw)
    with pytest.raises(ValueError) as exc:
        compare_runs(base, head, paired=True)
    msg = str(exc.value)
    assert what in msg and "\n" not in msg


def _write_sessions(store, tag: str, effect: float, n: int, *, rewarm=(1, 1)) -> None:
    """Sessions saved as `ab` saves them (`bench.duet.session.save_side_run`: ab-<time>-<side>-<sha8>-c<k>-<i>)."""
    from pathlib import Path

    from bench.duet.session import DuetSide, SessionResult, save_side_run

    plan = design(30, alpha=0.01)
    base, head = _sessions(effect, n, plan=None)
    stamp = tag.removeprefix("ab-")
    sides = {s: DuetSide(name=s, ref=s, sha="0123abcd" * 5, worktree=Path("/x"), python="python", shim=Path("/x"),
                         probe={"machine_info": {"node": "t", "machine": "x86_64"}, "machine_id": "Linux-test"},
                         commit_info={"id": "0123abcd" * 5})
             for s in ("base", "head")}
    for i, (b, h) in enumerate(zip(base, head), 1):
        samples = {"base": b.raw["benchmarks"][0]["stats"]["data"], "head": h.raw["benchmarks"][0]["stats"]["data"]}
        session = SessionResult(index=i, order=["base", "head"] * 10, samples=samples,
                                pace={s: [1.0] * 11 for s in sides}, cold_s={"base": 0.1, "head": 0.1},
                                worker_pids={"base": 1, "head": 2}, wall_s=1.0, rewarm=rewarm[0],
                                allocator={s: {"policy": "pinned"} for s in sides},
                                compile_cache="fresh" if i == 1 else "reused")
        for side in ("base", "head"):
            if side == "head":
                session.rewarm = rewarm[1]
            save_side_run(storage=store, name=f"{tag}-{side}-0123abcd-c1-{i}", side=sides[side],
                          config={"mode": "inference", "device": "cpu", "case": "c"}, case_id="c", session=session,
                          estimator="raw", stamp=stamp, sequential=plan)


def test_compare_sessions_by_tag_or_folder(tmp_path, compare_main):  # noqa: F811 - the imported fixture
    store = tmp_path / "store"
    _write_sessions(store, "ab-20261203T080000", 1.10, 15)
    _write_sessions(tmp_path / "other", "ab-20261203T090000", 1.0, 10)
    saved = json.loads(next((tmp_path / "other").rglob("*-c1-2.json")).read_text())
    duet = saved["benchmarks"][0]["extra_info"]["duet"]
    assert duet["compile_cache"] == "reused" and duet["tag"] == "ab-20261203T090000" and duet["sequential"]["looks"]
    r = compare_main("--sessions", "ab-20261203T080000", "--storage", store)
    assert r.returncode == 1 and "regression" in r.stdout, r.stdout + r.stderr
    r = compare_main("--sessions", "20261203T080000", "--storage", store, "--json", tmp_path / "a.json")
    assert r.returncode == 1
    assert json.loads((tmp_path / "a.json").read_text())["cases"][0]["verdict"] == "regression"
    r = compare_main("--sessions", tmp_path / "other")
    assert r.returncode == 0 and "unchanged" in r.stdout, r.stdout + r.stderr
    for args, needle in ((("--sessions", "ab-20991231T000000", "--storage", store), "no runs saved by"),
                         (("--sessions", tmp_path, ), "ab invocations"),
                         (("--sessions", tmp_path / "other", "a", "b"), "not both")):
        r = compare_main(*args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    _write_sessions(tmp_path / "mixed", "ab-20261203T100000", 1.0, 4, rewarm=(1, 0))
    r = compare_main("--sessions", tmp_path / "mixed")
    assert r.returncode == 2 and "different rewarm" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_ab_and_compare_never_import_historys_dependencies(tmp_path):
    """The lent GPU image has scipy, numpy and pandas but not ruptures: `ab` and `compare` must run
    there. With ruptures blocked, their modules import and `compare --sessions` judges saved sessions."""
    import subprocess
    import sys

    from tests.conftest import REPO

    _write_sessions(tmp_path / "s", "ab-20261203T080000", 1.0, 10)
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ruptures":
            raise ImportError("ruptures is blocked")
sys.meta_path.insert(0, Block())
import bench.cli.commands.ab, bench.cli.commands.compare, bench.duet.session
import reports.compare, reports.compare.sequential, reports.compare.sessions
from bench.cli import main
try:
    main(["compare", "--sessions", {str(tmp_path / "s")!r}])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
assert "ruptures" not in sys.modules
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "GITHUB_STEP_SUMMARY": ""})
    assert r.returncode == 0 and "unchanged" in r.stdout, r.stdout + r.stderr


def test_compile_caches_are_per_side_fresh_first_then_reused_and_removed(tmp_path):
    from pathlib import Path

    from bench.duet.session import CompileCaches

    caches = CompileCaches(tmp_path, "train-d2l-b32-96x96-fp32-compile_default-cpu")
    (base, s1), (head, _) = caches.root("base"), caches.root("head")
    assert s1 == "fresh" and base != head and Path(base).is_dir() and Path(head).is_dir()
    caches.used()
    assert caches.root("base") == (base, "reused") and caches.root("head") == (head, "reused")
    caches.close()
    assert not Path(base).exists() and not Path(head).exists()
