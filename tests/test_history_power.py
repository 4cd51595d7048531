"""The history's power where it matters: a step in the newest commits of short nightly series.

Over many seeds (not one), 24-run series are built in memory from the session's REAL saved tiny
run (``shared_tiny_run``): each run a copy with a fake commit, its rounds multiplied by a
heavy-tailed factor (Student t, 3 degrees of freedom, log sd 0.03) and x1.10 planted on the last
5 runs. What ``history --json`` would write (`History.to_dict`) must report it at the right commit
(within one), as a regression (suspected or not), with an interval covering 1.10, in at least 90%
of the seeds; the same series without the step must report no regression in any seed. The series
go through `build_history` directly (parsed runs, no files, no page), so 2 x 50 series cost a few
seconds. docs/history.md has the simulation these figures come from.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from reports.history import build_history
from reports.load import Run

N_SEEDS = 50
N_POINTS = 24
AFTER = 5  # runs with the step, at the end of the series
STEP = 1.10
NOISE_SD = 0.03
T0 = 1_780_000_000


def _commit(seed: int, i: int) -> str:
    return f"{seed:08x}{i:08x}".ljust(40, "0")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def _series(base: dict, seed: int, *, step: bool) -> list[Run]:
    """24 parsed runs of the first case of ``base``: per-run noise from ``seed``, x1.10 on the last 5."""
    rng = np.random.default_rng(seed)
    noise = np.exp(rng.standard_t(3, size=N_POINTS) * NOISE_SD / np.sqrt(3))
    bench = base["benchmarks"][0]
    runs = []
    for i in range(N_POINTS):
        f = noise[i] * (STEP if step and i >= N_POINTS - AFTER else 1.0)
        # Only what changes is copied: the rounds (pace samples stay as saved, so paced rounds carry f).
        stats = {**bench["stats"], "data": [v * f for v in bench["stats"]["data"]], "median": bench["stats"]["median"] * f}
        doc = {**base, "benchmarks": [{**bench, "stats": stats}],
               "commit_info": {**base["commit_info"], "id": _commit(seed, i), "time": _iso(T0 + 86400 * i),
                               "dirty": False},
               "datetime": _iso(T0 + 86400 * i + 3600)}
        runs.append(Run(path=f"mem/{seed}/{i:04d}_nightly.json", run_id=f"{i + 1:04d}", name="nightly", raw=doc))
    return runs


@pytest.fixture(scope="module")
def base_run(shared_tiny_run) -> dict:
    return json.loads(shared_tiny_run.path.read_text(encoding="utf-8"))


def test_a_step_in_the_last_5_runs_is_found_at_its_commit_with_its_interval_in_90_percent_of_seeds(base_run):
    found, false_alarms, misses = 0, [], []
    at = N_POINTS - AFTER
    for seed in range(N_SEEDS):
        doc = build_history(runs=_series(base_run, seed, step=True), repo=None).to_dict()
        (series,) = doc["series"]
        assert series["paced"] and series["detector"] == "scan" and series["noise"]["resolves_within_5_runs"] > 0
        hits = [c for c in doc["change_points"]
                if abs(int(c["commit"][8:16], 16) - at) <= 1 and c["verdict"] == "regression"
                and c["ci_low"] <= STEP <= c["ci_high"]]
        if hits:
            found += 1
            c = hits[0]
            # Seen in the newest 4-6 runs: suspected when fewer than 6, with those runs and the ab command.
            assert c["suspected"] == (len(series["points"]) - c["index"] < 6)
            if c["suspected"]:
                assert c["confirming_commits"] == [p["commit"] for p in series["points"][c["index"]:]]
            assert c["ab_command"].startswith(f"alexnet-bench ab {c['previous_commit'][:12]} {c['commit'][:12]}")
        else:
            misses.append((seed, [(int(c["commit"][8:16], 16), round(c["ratio"], 3), round(c["ci_low"], 3),
                                   round(c["ci_high"], 3)) for c in doc["change_points"]]))
        flat = build_history(runs=_series(base_run, seed, step=False), repo=None).to_dict()
        if any(c["verdict"] == "regression" for c in flat["change_points"]) or flat["failing"]:
            false_alarms.append(seed)
    print(f"x{STEP} on the last {AFTER} of {N_POINTS} runs: found {found}/{N_SEEDS}; misses {misses}; "
          f"flat series with a regression: {false_alarms}")
    assert found >= 0.9 * N_SEEDS, misses
    assert false_alarms == []
