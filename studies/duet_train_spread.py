"""Where does the train case's extra session spread come from? Interleaved A/A duet sessions of setups.

    python studies/duet_train_spread.py --out DIR [--case train-d2l-b32-96x96-fp32-cpu] [--sessions 12]

Each setup is an A/A duet (this working tree on both sides, through `bench.duet.session` as `ab`
runs it: pinned malloc, re-warm 1, 10 rounds, the raw estimator) with something changed on both
sides; the setups' sessions are taken in turn (A B C A B C ...), so a change in the machine's
load hits them alike. Per setup: the session log ratios' sd (and a robust sd) by ``--estimator``
(default adjacent, `ab`'s), the median within-session robust sd of the adjacent round pairs'
log ratios, the median round, and the wall time of a session. Results in DIR/spread.json; docs/compare.md quotes them.

Setups:
- ``now``: the duet as it is;
- ``nommap``: glibc never mmaps (``GLIBC_TUNABLES=glibc.malloc.mmap_max=0`` on both launchers).
  The train step frees and re-allocates a 64 MiB buffer (the 4096x4096 classifier layer's
  gradient-sized temporaries) every step; 64 MiB is above the largest mmap threshold glibc
  accepts (32 MiB), so even a pinned worker mmaps it anew and page-faults 16,385 times a step
  (`getrusage`, measured), where the inference step faults about twice a round. With mmap off
  it comes from the heap, which the pinned trim threshold keeps: 0 faults a step.
- ``rounds20``: 20 rounds per side instead of 10;
- ``rewarm0``: no untimed step before a timed round (a train step is about 200 ms here: does the
  first step after the other side's round still pay for cold caches?);
- ``rounds6``: 6 rounds per side instead of 10 (a shorter session).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name: (launcher environment, rounds per side, re-warming steps before each timed round)
SETUPS = {"now": ({}, 10, 1), "nommap": ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}, 10, 1),
          "rounds20": ({}, 20, 1), "rewarm0": ({}, 10, 0), "rounds6": ({}, 6, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--case", default="train-d2l-b32-96x96-fp32-cpu")
    p.add_argument("--sessions", type=int, default=12, help="sessions per setup")
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--estimator", default="adjacent", help="how a session becomes one ratio (raw, adjacent)")
    args = p.parse_args()

    from bench.duet.session import DuetSide, Launchers, collect_cases, run_session, shim_dir
    from reports.compare import duet_session_log_ratio

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="train-spread-"))
    [case] = collect_cases(REPO, preset="quick", keyword=f"{args.case} and not loop", pytest_args=[],
                           python=sys.executable)
    shim = shim_dir(tmp)
    setups = args.setups.split(",")
    launchers = {}
    for name in setups:
        env = SETUPS[name][0]
        sides = {s: DuetSide(name=s, ref="HEAD", sha="-", worktree=REPO, python=sys.executable, shim=shim, env=env)
                 for s in ("base", "head")}
        launchers[name] = Launchers(sides, tmp, sessions_per_launcher=4)
    rng = random.Random(1)
    rows = {n: [] for n in setups}
    started = time.strftime("%F %T")
    load = []
    for i in range(1, args.sessions + 1):
        for name in setups:
            _, rounds, rewarm = SETUPS[name]
            s = run_session(launchers[name], case["config"], index=i, rounds=rounds, warmup=2, rng=rng,
                            timeout_s=900, rewarm=rewarm, malloc="pinned")
            d = duet_session_log_ratio(s.samples["base"], s.samples["head"], estimator=args.estimator)
            med = statistics.median(s.samples["base"] + s.samples["head"])
            pairs = [math.log(h / b) for b, h in zip(s.samples["base"], s.samples["head"])]
            rows[name].append({"log_ratio": d, "median_round_s": med, "wall_s": s.wall_s,
                               "raw": duet_session_log_ratio(s.samples["base"], s.samples["head"], estimator="raw"),
                               "pair_log_ratios": pairs, "samples": s.samples, "order": s.order})
            load.append(float(open("/proc/loadavg").read().split()[0]))
            print(f"{name:9} session {i}: x{math.exp(d):.3f}, median round {med * 1e3:.0f} ms, {s.wall_s:.0f} s, "
                  f"load {load[-1]:.1f}", flush=True)
        summary = {}
        for name, r in rows.items():
            ds = [x["log_ratio"] for x in r]
            med = statistics.median(ds)
            within = statistics.median(1.4826 * statistics.median(abs(v - statistics.median(x["pair_log_ratios"]))
                                                                  for v in x["pair_log_ratios"]) for x in r)
            summary[name] = {"sessions": len(ds), "sd": statistics.stdev(ds) if len(ds) > 1 else None,
                             "estimator": args.estimator, "within_pair_robust_sd": within,
                             "robust_sd": 1.4826 * statistics.median(abs(x - med) for x in ds),
                             "median_round_s": statistics.median(x["median_round_s"] for x in r),
                             "session_wall_s": statistics.median(x["wall_s"] for x in r)}
        (out / "spread.json").write_text(json.dumps({"case": args.case, "started": started,
                                                     "ended": time.strftime("%F %T"), "load_1min": load,
                                                     "summary": summary, "sessions": rows}, indent=1))
    for lau in launchers.values():
        lau.close()
    print(json.dumps(summary, indent=1))
    subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
