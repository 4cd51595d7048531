"""How often does `alexnet-bench ab`'s duet flag a change? The study behind its defaults.

    python studies/duet_error_rates.py aa   --out DIR [--case CASE] [--sessions 160] [--rounds 30]
    python studies/duet_error_rates.py live --out DIR [--case CASE] [--effects 1.00,1.02,1.05,1.10] [--reps 5]
    python studies/duet_error_rates.py analyse --out DIR
    python studies/duet_error_rates.py bootstrap --store DIR[,DIR...] --json FILE [--reps 1000]
    python studies/duet_error_rates.py simulate --json FILE [--sd 0.027,0.035,0.046] [--cases 10]

``aa`` runs one long A/A ``ab`` (the same commit on both sides) and keeps every session's
saved runs. ``analyse`` cuts those sessions into disjoint comparisons of ``n`` sessions, plants
slowdowns by scaling the head side's rounds (x1.02, x1.05, x1.10), subsamples the rounds per
side, and counts how often each rule flags, for each estimator: the error rates, with
Clopper-Pearson 95% intervals. ``bootstrap`` runs the sequential rule `ab` uses on comparisons
drawn with replacement from the saved sessions of every case found, per case and family-wise.
``live`` makes a throwaway git repository whose head commit does
a known amount of *extra work* in its step (a matmul timed to that share of the step, not a
wall-clock spin, which would not drift with the machine) and runs ``ab`` with the defaults
against it, ``--reps`` times per effect; with ``--select EXPR`` the ``ab`` runs every case that
``-k EXPR`` selects (for example the whole quick preset's step cases, ``"not loop"``) and the extra
work is planted in ``--case`` alone, so one case of many must be flagged and no other.
Results go to DIR/*.json; docs/compare.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = ("alexnet", "bench", "reports", "runrecord", "pyproject.toml")
DEFAULT_CASE = "inference-d2l-b32-96x96-fp32-cpu"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=study", "-c", "user.email=s@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def _repo_copy(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in SUITE:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, root / name)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    return root


def _ab(repo: Path, base: str, head: str, *args: str, storage: Path, json_out: Path) -> tuple[int, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench", "ab", base, head, "--repo", str(repo), "--storage",
                           str(storage), "--json", str(json_out), *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "GITHUB_STEP_SUMMARY": ""})
    if proc.returncode not in (0, 1):
        raise SystemExit(f"ab failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.returncode, time.monotonic() - t0


# --- A/A sessions ------------------------------------------------------------------------------
def cmd_aa(args: argparse.Namespace) -> None:
    out = Path(args.out)
    repo = _repo_copy(out / "aa-repo")
    # --fixed: every session (a clear A/A would stop the sequential duet at its first look).
    rc, took = _ab(repo, "HEAD", "HEAD", "--preset", args.preset, "-k", f"({args.case}) and not loop", "--repeats",
                   str(args.sessions), "--rounds", str(args.rounds), "--seed", "1", "--fixed", storage=out / "aa-store",
                   json_out=out / "aa-ab.json")
    (out / "aa-meta.json").write_text(json.dumps({"case": args.case, "sessions": args.sessions, "rounds": args.rounds,
                                                  "seconds": took, "exit": rc, "when": time.strftime("%F %T"),
                                                  "load_1min_at_end": open("/proc/loadavg").read().split()[0]}))
    print(f"aa: {args.sessions} sessions in {took / 60:.1f} min")


def _sessions(store: Path) -> list[dict]:
    """Every saved session: base and head rounds and pace samples, in session order."""
    from runrecord.store import RunStore, read_run

    by_session: dict[str, dict] = {}
    for p in RunStore(store).saved():
        [case] = read_run(p).benchmarks
        duet = case.duet
        s = by_session.setdefault(duet.session, {})
        s[duet.side] = (case.samples, case.extra_info["pace"]["samples"])
        s["index"] = int(duet.session.rsplit("-", 1)[1])
    return [s for _, s in sorted(by_session.items(), key=lambda kv: kv[1]["index"]) if "base" in s and "head" in s]


def _case_sessions(stores: list[Path], estimator: str | None = None, rounds: int | None = None) -> dict[str, list[float]]:
    """Per case, every saved session's log ratio by its saved estimator (or ``estimator``), in session order;
    with ``rounds``, from each side's first ``rounds`` rounds only (what a session of fewer rounds saw)."""
    from runrecord.store import RunStore, read_run

    from reports.compare import duet_session_log_ratio

    by: dict[tuple[str, str], dict] = {}
    for store in stores:
        for p in RunStore(store).saved():
            [case] = read_run(p).benchmarks
            duet = case.duet
            if duet is None or duet.estimator is None:
                continue
            s = by.setdefault((case.extra_info["case_id"], duet.session), {"est": estimator or duet.estimator})
            s[duet.side] = (case.samples, case.extra_info["pace"]["samples"])
            s["index"] = int(duet.session.rsplit("-", 1)[1])
    out: dict[str, list[float]] = {}
    for (case_id, _), s in sorted(by.items(), key=lambda kv: (kv[0][0], kv[1]["index"])):
        if "base" in s and "head" in s:
            (b, bp), (h, hp) = s["base"], s["head"]
            if rounds is not None:
                b, bp, h, hp = b[:rounds], bp[:rounds + 1], h[:rounds], hp[:rounds + 1]
            out.setdefault(case_id, []).append(duet_session_log_ratio(b, h, estimator=s["est"], base_pace=bp,
                                                                      head_pace=hp))
    return out


def cmd_bootstrap(args: argparse.Namespace) -> None:
    """The sequential rule (reports.compare.sequential) on comparisons drawn from saved A/A sessions.

    Each comparison draws up to ``--max-sessions`` sessions of a case with replacement, in draw
    order, adds log(effect) to each (the head side's rounds scaled by the effect: exact for the raw
    and adjacent estimators, whose medians scale) and runs the rule look by look, as `ab` does: counts of
    ``regression`` with Clopper-Pearson 95% intervals, and the mean number of sessions it used.
    Family-wise: one draw per case per replicate, all cases at once; "any flagged" counts them.
    """
    import numpy as np

    from reports.compare import DUET_THRESHOLD, duet_estimate, verdict
    from reports.compare.sequential import run_rule

    stores = [Path(x) for x in args.store.split(",")]
    per_case = {c: np.asarray(d) for c, d in _case_sessions(stores, args.estimator, args.rounds).items()
                if len(d) >= args.min_sessions}
    if args.center:  # an A/A's sessions estimate no change: draw from them shifted to mean 0
        per_case = {c: d - d.mean() for c, d in per_case.items()}
    counts = _looks(args)
    futility = _futility(args)
    rng = np.random.default_rng(args.seed)
    effects = [float(e) for e in args.effects.split(",")]
    result = {"stores": [str(s) for s in stores], "looks": list(counts), "alpha": args.alpha, "center": args.center,
              "rounds": args.rounds,
              "futility": futility,
              "estimator": args.estimator or "as saved",
              "threshold": DUET_THRESHOLD, "reps": args.reps, "cases": {}, "family": {}}
    for case_id, d in per_case.items():
        result["cases"][case_id] = {"sessions": int(d.size), "mean": float(d.mean()), "sd": float(d.std(ddof=1)),
                                    "rates": {}}
    for effect in effects:
        any_flag = 0
        flags = {c: 0 for c in per_case}
        fixed = {c: 0 for c in per_case}  # the fixed-count rule on all the drawn sessions, for comparison
        used = {c: [] for c in per_case}
        unchanged = {c: 0 for c in per_case}
        for _ in range(args.reps):
            hit = False
            for case_id, d in per_case.items():
                draw = d[rng.integers(0, d.size, size=args.max_sessions)] + math.log(effect)
                look = run_rule(draw, counts, alpha=args.alpha, threshold=DUET_THRESHOLD, futility=futility)
                flags[case_id] += look.verdict == "regression"
                unchanged[case_id] += look.verdict == "unchanged"
                fixed[case_id] += verdict(duet_estimate(draw, estimator=args.estimator or "raw"), alpha=args.alpha,
                                          threshold=DUET_THRESHOLD) == "regression"
                hit |= look.verdict == "regression"
                used[case_id].append(look.n)
            any_flag += hit
        for case_id in per_case:
            lo, hi = _cp(flags[case_id], args.reps)
            result["cases"][case_id]["rates"][f"{effect:.2f}"] = {
                "flagged": flags[case_id], "ci_low": lo, "ci_high": hi, "mean_sessions": float(np.mean(used[case_id])),
                "fixed_flagged": fixed[case_id], "unchanged": unchanged[case_id],
                "stopped_at": {str(n): int(np.sum(np.asarray(used[case_id]) == n)) for n in counts}}
        lo, hi = _cp(any_flag, args.reps)
        result["family"][f"{effect:.2f}"] = {"any_flagged": any_flag, "ci_low": lo, "ci_high": hi}
    Path(args.json).write_text(json.dumps(result, indent=1))
    for case_id, c in result["cases"].items():
        print(f"{case_id}: {c['sessions']} sessions, mean {c['mean']:+.4f}, sd {c['sd']:.4f}")
        for eff, r in c["rates"].items():
            print(f"  x{eff}: {r['flagged']}/{args.reps} [{r['ci_low']:.3f}, {r['ci_high']:.3f}], "
                  f"unchanged {r['unchanged']}, mean sessions {r['mean_sessions']:.1f}, stopped at {r['stopped_at']}; "
                  f"fixed {args.max_sessions}: {r['fixed_flagged']}/{args.reps}")
    if len(per_case) > 1:
        for eff, r in result["family"].items():
            print(f"family of {len(per_case)} cases, x{eff} on every case: any flagged {r['any_flagged']}/{args.reps} "
                  f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]")


def cmd_simulate(args: argparse.Namespace) -> None:
    """The sequential rule on normal session log ratios at given spreads: per case and, for ``--cases``
    independent cases with the same effect, the chance that at least one is flagged."""
    import numpy as np

    from reports.compare import DUET_THRESHOLD
    from reports.compare.sequential import run_rule

    counts = _looks(args)
    futility = _futility(args)
    rng = np.random.default_rng(args.seed)
    out = []
    for sd in (float(x) for x in args.sd.split(",")):
        for effect in (float(e) for e in args.effects.split(",")):
            res = [run_rule(rng.normal(math.log(effect), sd, args.max_sessions), counts, alpha=args.alpha,
                            threshold=DUET_THRESHOLD, futility=futility) for _ in range(args.reps)]
            k = sum(r.verdict == "regression" for r in res)
            same = sum(r.verdict == "unchanged" for r in res)
            lo, hi = _cp(k, args.reps)
            fam = [1 - (1 - p) ** args.cases for p in (k / args.reps, lo, hi)]
            row = {"sd": sd, "effect": effect, "futility": futility, "flagged": k, "reps": args.reps, "ci_low": lo, "ci_high": hi,
                   "unchanged": same, "mean_sessions": float(np.mean([r.n for r in res])), "cases": args.cases,
                   "any_of_cases": fam}
            out.append(row)
            print(f"sd {sd:.3f} x{effect:.3f}: {k}/{args.reps} [{lo:.3f}, {hi:.3f}], unchanged {same}, mean sessions "
                  f"{row['mean_sessions']:.1f}; any of {args.cases} cases: {fam[0]:.3f} [{fam[1]:.3f}, {fam[2]:.3f}]",
                  flush=True)
    Path(args.json).write_text(json.dumps(out, indent=1))


def _futility(args: argparse.Namespace) -> float:
    from reports.compare.sequential import FUTILITY_LEVEL

    return FUTILITY_LEVEL if args.futility is None else args.futility


def _looks(args: argparse.Namespace) -> tuple[int, ...]:
    from reports.compare.sequential import looks

    if args.early is None:
        return looks(args.max_sessions)
    return looks(args.max_sessions, early=[int(x) for x in args.early.split(",") if x.strip()])


def _cp(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return ci.low, ci.high


def cmd_analyse(args: argparse.Namespace) -> None:
    import numpy as np

    from reports.compare import DUET_ESTIMATORS, duet_estimate, duet_session_log_ratio, verdict

    out = Path(args.out)
    sessions = _sessions(out / "aa-store")
    rounds_saved = min(len(s["base"][0]) for s in sessions)
    print(f"{len(sessions)} A/A sessions, {rounds_saved} rounds per side")
    results = {"sessions": len(sessions), "rounds_saved": rounds_saved, "sd": {}, "rates": []}
    thresholds = [float(t) for t in args.thresholds.split(",")]
    for estimator in DUET_ESTIMATORS:
        for r in sorted({int(x) for x in args.rounds.split(",")} | {rounds_saved}):
            if r > rounds_saved:
                continue
            d = []
            for s in sessions:
                (b, bp), (h, hp) = s["base"], s["head"]
                d.append(duet_session_log_ratio(b[:r], h[:r], estimator=estimator, base_pace=bp[: r + 1],
                                                head_pace=hp[: r + 1]))
            d = np.asarray(d)
            results["sd"][f"{estimator}/{r}"] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)),
                                                 "mad_sd": float(1.4826 * np.median(np.abs(d - np.median(d))))}
            for n in (int(x) for x in args.n.split(",")):
                groups = [d[i:i + n] for i in range(0, len(d) - n + 1, n)]
                for effect in (1.00, 1.02, 1.05, 1.10):
                    for thr in thresholds:
                        flagged = sum(verdict(duet_estimate(g + math.log(effect), estimator=estimator), alpha=args.alpha,
                                              threshold=thr) == "regression" for g in groups)
                        lo, hi = _cp(flagged, len(groups))
                        results["rates"].append({"estimator": estimator, "rounds": r, "sessions": n, "effect": effect,
                                                 "threshold": thr, "flagged": flagged, "comparisons": len(groups),
                                                 "ci_low": lo, "ci_high": hi})
    (out / "analysis.json").write_text(json.dumps(results, indent=1))
    for key, v in results["sd"].items():
        print(f"session log-ratio {key}: mean {v['mean']:+.4f}, sd {v['sd']:.4f}, robust sd {v['mad_sd']:.4f}")
    for row in results["rates"]:
        if row["rounds"] == rounds_saved or row["rounds"] == int(args.focus_rounds):
            print(f"{row['estimator']:8} r{row['rounds']:<3} n{row['sessions']:<3} thr {row['threshold']:.3f} "
                  f"x{row['effect']:.2f}: {row['flagged']}/{row['comparisons']} "
                  f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]")


# --- live effects: extra work in the head's step ------------------------------------------------
EXTRA_WORK = '''
# --- study only (studies/duet_error_rates.py): a known amount of extra work per step ---------
_EXTRA_N = {n}
_EXTRA = None


_ONLY = {only!r}  # a case id: the extra work goes into that case's step alone (None: every case's)


def _planted(cfg):
    return _ONLY is None or cfg.case_id() == _ONLY


def _extra_work(device):
    global _EXTRA
    if _EXTRA is None:
        g = torch.Generator().manual_seed(1)
        a = torch.randn(_EXTRA_N, _EXTRA_N, generator=g).to(device)
        _EXTRA = (a, a.clone(), torch.empty(_EXTRA_N, _EXTRA_N, device=device))
    a, b, c = _EXTRA
    torch.mm(a, b, out=c)
'''


def _calibrate_extra(case: str, share: float) -> tuple[int, float]:
    """The matmul size that makes the case's step ``share`` slower, measured as the duet measures.

    One process with the duet worker's allocator policy (`bench.instruments.allocator.pin_malloc`) times
    the step alone and the step with the extra matmul in front (as the study's head commit does
    it), interleaved, each timed call after one untimed one (the duet's ``--rewarm 1``), 30
    times for each of two sizes. The extra time is fitted as a * n**3 from both sizes' median
    ratios, which averages out the machine's drift better than timing the matmul alone (the
    first version did that and overstated the effect in the duet: a "5%" matmul measured 3.7%).
    """
    code = f'''
import json, statistics, time, torch
from bench.instruments.allocator import pin_malloc
pin_malloc()
from bench.suite.presets import build_cases
from alexnet.runtime import StepRunner
cfg = next(c for c in build_cases("quick") if c.case_id() == {case!r})
r = StepRunner.build(cfg); x, y = r.random_batch()
sizes = (512, 768)
mats = {{n: (torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)) for n in sizes}}
def plain(): r.step(x, y)
def extra(n):
    a, b, c = mats[n]
    def f():
        torch.mm(a, b, out=c); r.step(x, y)
    return f
fns = {{"plain": plain, **{{n: extra(n) for n in sizes}}}}
def timed(f):
    f(); t0 = time.perf_counter(); f(); return time.perf_counter() - t0
for f in fns.values(): timed(f)
t = {{k: [] for k in fns}}
for _ in range(30):
    for k, f in fns.items(): t[k].append(timed(f))
base = statistics.median(t["plain"])
per = statistics.median([(statistics.median(t[n]) / base - 1) / n**3 for n in sizes])
n = max(16, round((({share}) / per) ** (1 / 3) / 16) * 16)
print(json.dumps({{"n": n, "share": per * n**3, "step_s": base,
                  "measured": {{str(k): statistics.median(v) / base - 1 for k, v in t.items() if k != "plain"}}}}))
'''
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"calibration: {got}", flush=True)
    return int(got["n"]), float(got["share"])


def _effects(args: argparse.Namespace) -> list[float]:
    return [float(e) for e in args.effects.split(",")]


def cmd_live(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repo = _repo_copy(out / f"live-repo-{int(time.time())}")
    base = _git(repo, "rev-parse", "HEAD")
    heads = {}
    for effect in _effects(args):
        if effect == 1.0:
            heads[effect] = (base, 0, 0.0)
            continue
        if args.sizes:  # mm sizes from an earlier calibration: the same commits again
            n, share = dict(zip(_effects(args), (int(x) for x in args.sizes.split(","))))[effect], float("nan")
        else:
            n, share = _calibrate_extra(args.case, effect - 1)
        _git(repo, "checkout", "-q", base)
        rt = repo / "alexnet" / "runtime.py"
        text = rt.read_text()
        text = text.replace("    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:\n",
                            "    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:\n"
                            "        if self._planted:\n"
                            "            _extra_work(self.cfg.device)\n", 1)
        # Decided once per runner (a case id is a string built from the config), not every step.
        text = text.replace("class StepRunner:\n", "class StepRunner:\n    _planted = __import__('functools').cached_property(lambda self: _planted(self.cfg))\n", 1)
        only = args.case if args.select else None
        rt.write_text(text + EXTRA_WORK.format(n=n, only=only))
        _git(repo, "commit", "-q", "-am", f"study: {effect - 1:.0%} more work per step (mm {n}x{n})")
        heads[effect] = (_git(repo, "rev-parse", "HEAD"), n, share)
        print(f"x{effect:.2f}: extra mm {n}x{n}, measured share of the step {share:.3f}", flush=True)
    rows = []
    for rep in range(args.reps):
        for effect, (sha, n, share) in heads.items():
            js = out / f"live-{effect:.2f}-{rep}-{int(time.time())}.json"
            select = f"({args.select or args.case}) and not loop"
            rc, took = _ab(repo, base, sha, "--preset", args.preset, "-k", select,
                           storage=out / "live-store", json_out=js)
            cases = json.loads(js.read_text())["cases"]
            case = next(c for c in cases if c["case"] == args.case) if args.select else cases[0]
            rows.append({"effect": effect, "extra_mm_n": n, "measured_share": share, "rep": rep, "exit": rc,
                         "verdict": case["verdict"], "ratio": case["ratio"], "ci_low": case["ci_low"],
                         "ci_high": case["ci_high"], "seconds": took,
                         "others": {c["case"]: [c["verdict"], c["ratio"]] for c in cases if c is not case}})
            flagged = [c["case"] for c in cases if c is not case and c["verdict"] == "regression"]
            print(f"live x{effect:.2f} rep {rep}: {case['verdict']} x{case['ratio']:.3f} "
                  f"[{case['ci_low']:.3f}, {case['ci_high']:.3f}] exit {rc} in {took:.0f} s"
                  + (f"; {len(cases) - 1} other cases, flagged: {flagged or 'none'}" if args.select else ""),
                  flush=True)
            (out / f"live{args.tag}.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("aa")
    a.add_argument("--out", required=True)
    a.add_argument("--case", default=DEFAULT_CASE, help="a -k expression: one case, or several (cases run in turn)")
    a.add_argument("--preset", default="quick")
    a.add_argument("--sessions", type=int, default=160)
    a.add_argument("--rounds", type=int, default=30)
    z = sub.add_parser("analyse")
    z.add_argument("--out", required=True)
    z.add_argument("--n", default="4,6,8,10")
    z.add_argument("--rounds", default="10,15,20,30")
    z.add_argument("--focus-rounds", default="20")
    z.add_argument("--thresholds", default="0.02,0.025,0.03,0.035,0.04,0.05")
    z.add_argument("--alpha", type=float, default=0.01)
    b = sub.add_parser("bootstrap")
    b.add_argument("--store", required=True, help="folders of saved ab runs, comma-separated")
    b.add_argument("--json", required=True, help="where the results go")
    b.add_argument("--reps", type=int, default=1000)
    b.add_argument("--max-sessions", type=int, default=30)
    b.add_argument("--min-sessions", type=int, default=10, help="cases with fewer saved sessions are left out")
    b.add_argument("--effects", default="1.00,1.02,1.05,1.10")
    b.add_argument("--alpha", type=float, default=0.01)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--estimator", default=None, help="re-derive each session's log ratio with this estimator "
                   "(raw, adjacent, paced) from the saved rounds; default: the estimator each run was saved with")
    b.add_argument("--center", action="store_true",
                   help="shift each case's sessions to mean 0 first (their A/A mean is itself a noisy estimate)")
    b.add_argument("--rounds", type=int, default=None,
                   help="judge each session on its first ROUNDS rounds per side (default: all it saved)")
    b.add_argument("--futility", type=float, default=None,
                   help="the one-sided level of the unchanged stop (default: the rule's own, FUTILITY_LEVEL)")
    b.add_argument("--early", default=None, help="the rule's looks before every-5 ones, comma-separated "
                   "(default: ab's, 6,8,10,12; 6,10 is the rule of earlier on 2026-12-03)")
    m = sub.add_parser("simulate")
    m.add_argument("--json", required=True)
    m.add_argument("--sd", default="0.027,0.035,0.046")
    m.add_argument("--effects", default="1.00,1.02,1.05,1.10")
    m.add_argument("--reps", type=int, default=2000)
    m.add_argument("--cases", type=int, default=10)
    m.add_argument("--max-sessions", type=int, default=30)
    m.add_argument("--alpha", type=float, default=0.01)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--futility", type=float, default=None,
                   help="the one-sided level of the unchanged stop (default: the rule's own, FUTILITY_LEVEL)")
    m.add_argument("--early", default=None, help="as for bootstrap")
    v = sub.add_parser("live")
    v.add_argument("--out", required=True)
    v.add_argument("--case", default=DEFAULT_CASE)
    v.add_argument("--preset", default="quick")
    v.add_argument("--effects", default="1.00,1.02,1.05,1.10")
    v.add_argument("--reps", type=int, default=5)
    v.add_argument("--sizes", default=None, help="extra mm size per effect (skips the calibration), e.g. 496,656,832")
    v.add_argument("--tag", default="", help="suffix of the results file, live<TAG>.json")
    v.add_argument("--select", default=None, metavar="EXPR",
                   help="-k expression of the cases ab runs (e.g. 'not loop': the whole preset); the extra work "
                        "is then planted in --case alone")
    args = p.parse_args()
    {"aa": cmd_aa, "analyse": cmd_analyse, "live": cmd_live, "bootstrap": cmd_bootstrap,
     "simulate": cmd_simulate}[args.cmd](args)


if __name__ == "__main__":
    main()
