"""Power and false alarms of `alexnet-bench history`'s change-point detectors, from real A/A runs.

    python studies/history_power.py /tmp/aa-runs --series 400 [--json out.json]

1. Reads every saved run under the folder: real runs of *identical* code, one after another on
   one machine (how the ones in docs/history.md were made is written there). For each run and
   case it takes the paced median (each round over the mean of the pace samples around it,
   `runrecord.samples.paced_samples`, as `history` does), and the raw median for comparison.
2. Residuals: the log of each paced median minus its case's median log; pooled over the cases
   and divided by their sd, so the pool has sd 1 and keeps its shape (heavy tails included).
3. Simulates series of 40 commits, one run each: residuals drawn with replacement, scaled to a
   log sd of 0.02, 0.03 or 0.06, exponentiated, and a planted step (x1.03, 1.05, 1.08, 1.10)
   on the last 3, 5, 8 or 15 commits; flat series for false alarms. Each series goes through
   `reports.history_detect.detect` with the scan (binary segmentation, clipped scores, a
   permutation test at 1% per series: the default) and with PELT; the *ideal*
   column is a one-sided scan of the mean with the noise known (Gaussian noise of the same sd,
   threshold for 1% false alarms per 40-run series, the bound any detector can reach).
4. Counts, with Wilson 95% intervals: a change within one commit of the planted one and slower
   (``found``), within two, a ``regression`` verdict, and how often the change's 95% interval
   covers the planted ratio among the found ones. Prints markdown tables (docs/history.md).

The simulation depends on numpy's generator only through ``--seed``: the same runs and seed give
the same tables.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reports.history_detect import detect, noise_sigma  # noqa: E402
from runrecord.samples import paced_samples  # noqa: E402

NOISES = (0.02, 0.03, 0.06)
STEPS = (1.03, 1.05, 1.08, 1.10)
AFTERS = (3, 5, 8, 15)
N_COMMITS = 40
DETECTORS = ("scan", "pelt")
IDEAL_ALPHA = 0.01
IDEAL_MIN = 3  # splits leaving at least 3 commits on each side, as the detectors


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def fmt(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    if n >= 1000:  # false-alarm rates: the count and a decimal
        return f"{k}/{n}: {100 * k / n:.2f}% ({100 * lo:.2f}-{100 * hi:.2f})"
    return f"{100 * k / n:.0f}% ({100 * lo:.0f}-{100 * hi:.0f})"


# --- the A/A residuals ------------------------------------------------------------------------


def read_aa(folder: Path) -> dict:
    paced: dict[str, list[float]] = {}
    raw: dict[str, list[float]] = {}
    files = sorted(folder.rglob("*.json"))
    for f in files:
        doc = json.loads(f.read_text(encoding="utf-8"))
        for b in doc.get("benchmarks", []):
            case = (b.get("extra_info") or {}).get("case_id") or b.get("name")
            data = np.asarray(b["stats"]["data"], dtype=float)
            pace = np.asarray(((b.get("extra_info") or {}).get("pace") or {}).get("samples") or [], dtype=float)
            ps = paced_samples(data, pace) if pace.size else None
            raw.setdefault(case, []).append(float(np.median(data)))
            if ps is not None:
                paced.setdefault(case, []).append(float(np.median(ps)))
    if not paced:
        raise SystemExit(f"no runs with pace samples under {folder}")
    res = np.concatenate([np.log(v) - np.median(np.log(v)) for v in paced.values()])
    res_raw = np.concatenate([np.log(v) - np.median(np.log(v)) for v in raw.values()])
    return {"files": len(files), "cases": {c: len(v) for c, v in paced.items()}, "paced": res, "raw": res_raw,
            "raw_ms": {c: (1e3 * min(v), 1e3 * max(v)) for c, v in raw.items()}}


def describe(res: np.ndarray) -> str:
    sd = float(np.std(res, ddof=1))
    mad = 1.4826 * float(np.median(np.abs(res - np.median(res))))
    kurt = float(np.mean(((res - res.mean()) / res.std()) ** 4) - 3)
    return f"sd {sd:.3f}, robust sd {mad:.3f}, range {res.min():+.3f} … {res.max():+.3f}, excess kurtosis {kurt:.1f}"


# --- the ideal detector --------------------------------------------------------------------------


def ideal_stat(y: np.ndarray, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided (slower) known-noise scan of the mean: per series, the largest z and its split."""
    n = y.shape[-1]
    ks = np.arange(IDEAL_MIN, n - IDEAL_MIN + 1)
    cs = np.cumsum(y, axis=-1)
    total = cs[..., -1:]
    before = cs[..., ks - 1] / ks
    after = (total - cs[..., ks - 1]) / (n - ks)
    z = (after - before) / (sd * np.sqrt(1 / ks + 1 / (n - ks)))
    j = np.argmax(z, axis=-1)
    return z[np.arange(z.shape[0]), j], ks[j]


def ideal_threshold(rng: np.random.Generator, n: int = N_COMMITS, reps: int = 40000) -> float:
    z, _ = ideal_stat(rng.standard_normal((reps, n)), 1.0)
    return float(np.quantile(z, 1 - IDEAL_ALPHA))


# --- the simulation ----------------------------------------------------------------------------------


def simulate(pool: np.ndarray, rng: np.random.Generator, *, sd: float, step: float | None, after: int,
             n_series: int, n: int = N_COMMITS, ideal_t: float | None = None) -> dict:
    at = n - after
    out: dict = {d: {"found": 0, "within2": 0, "regression": 0, "any": 0, "covered": 0, "suspected": 0}
                 for d in DETECTORS}
    sigmas = []
    for _ in range(n_series):
        y = sd * rng.choice(pool, size=n)
        if step is not None:
            y[at:] += math.log(step)
        values = [[v] for v in np.exp(y)]
        sigmas.append(noise_sigma(y))
        for d in DETECTORS:
            det = detect(values, detector=d)
            o = out[d]
            o["any"] += bool(det.changes)
            o["regression"] += any(c.verdict == "regression" for c in det.changes)
            if step is None:
                continue
            near = [c for c in det.changes if abs(c.index - at) <= 1 and c.ratio > 1]
            near2 = [c for c in det.changes if abs(c.index - at) <= 2 and c.ratio > 1]
            o["within2"] += bool(near2)
            if near:
                o["found"] += 1
                o["covered"] += near[0].ci_low <= step <= near[0].ci_high
                o["suspected"] += near[0].after[1] == n and near[0].after[1] - near[0].after[0] < 6
    if ideal_t is not None:
        g = sd * rng.standard_normal((n_series, n))
        if step is not None:
            g[:, at:] += math.log(step)
        z, k = ideal_stat(g, sd)
        hit = z > ideal_t
        out["ideal"] = {"any": int(hit.sum()),
                        "found": int((hit & (np.abs(k - at) <= 1)).sum()) if step is not None else 0,
                        "within2": int((hit & (np.abs(k - at) <= 2)).sum()) if step is not None else 0}
    out["sigma_median"] = float(np.median(sigmas))
    out["n"] = n_series
    return out


def resolution_factors(pool: np.ndarray, rng: np.random.Generator, *, n_series: int, sd: float = 0.03) -> dict:
    """Per number of runs after the step: the step (log units / the median noise_sigma) found within one
    commit by the scan in 90% of series, interpolated on a grid of steps."""
    out = {}
    grid = np.arange(1.02, 1.31, 0.01)
    sig = []
    for after in (3, 5, 8):
        found = []
        for step in grid:
            r = simulate(pool, rng, sd=sd, step=float(step), after=after, n_series=n_series)
            found.append(r["scan"]["found"] / n_series)
            sig.append(r["sigma_median"])
            if found[-1] >= 0.95:
                break
        found = np.asarray(found)
        idx = int(np.argmax(found >= 0.9)) if (found >= 0.9).any() else None
        if idx is None:
            out[after] = None
            continue
        lo = max(idx - 1, 0)
        f0, f1 = found[lo], found[idx]
        s0, s1 = math.log(grid[lo]), math.log(grid[idx])
        step90 = s1 if f1 == f0 else s0 + (0.9 - f0) / (f1 - f0) * (s1 - s0)
        out[after] = {"step90": math.expm1(step90), "log_step90": step90}
    med = float(np.median(sig))
    for after, v in out.items():
        if v:
            v["k"] = v["log_step90"] / med
    out["sigma_median"] = med
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, help="folder of saved A/A runs of identical code")
    ap.add_argument("--series", type=int, default=400, help="series per cell (default 400)")
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--flat-series", type=int, help="flat series per noise level (default: --series)")
    ap.add_argument("--json", type=Path, help="also write every count here")
    ap.add_argument("--no-resolution", action="store_true", help="skip the resolution factors (slow)")
    ap.add_argument("--shape", choices=("aa", "t3"), default="aa",
                    help="noise shape: the A/A residuals (default) or Student t with 3 d.o.f. (heavier tails)")
    ap.add_argument("--steps", choices=("all", "none"), default="all", help="none: only the flat series")
    ap.add_argument("--noises", default=",".join(str(v) for v in NOISES), help="log sds, comma-separated")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    aa = read_aa(args.runs)
    pool = aa["paced"] / np.std(aa["paced"], ddof=1)
    if args.shape == "t3":  # a large pool of Student t (3 d.o.f.), sd 1: heavier tails than most A/A runs
        pool = np.random.default_rng(args.seed + 1).standard_t(3, size=100_000) / math.sqrt(3)
        print("noise shape: Student t, 3 degrees of freedom (not the A/A residuals)")
    noises = tuple(float(v) for v in args.noises.split(","))
    print(f"A/A: {aa['files']} runs, cases {aa['cases']}")
    print(f"raw medians (ms): {aa['raw_ms']}")
    print(f"paced residuals: {describe(aa['paced'])}")
    print(f"raw residuals:   {describe(aa['raw'])}")
    rng = np.random.default_rng(args.seed)
    ideal_t = ideal_threshold(rng)
    results: dict = {"aa": {k: aa[k] for k in ("files", "cases", "raw_ms")}, "ideal_threshold": ideal_t, "cells": []}
    n = args.series
    print(f"\nideal one-sided known-noise scan: threshold z > {ideal_t:.2f} (1% of flat 40-run series)\n")
    print("| noise (log sd) | step | runs after | scan: found ±1 | scan ±2 | scan: interval covers | "
          "PELT: found ±1 | PELT ±2 | PELT: interval covers | ideal ±1 | ideal ±2 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sd in noises:
        nf = args.flat_series or n
        r = simulate(pool, rng, sd=sd, step=None, after=0, n_series=nf, ideal_t=ideal_t)
        results["cells"].append({"sd": sd, "step": None, "after": None, **r})
        print(f"| {sd} | flat, any change | | {fmt(r['scan']['any'], nf)} | | | {fmt(r['pelt']['any'], nf)} | | | "
              f"{fmt(r['ideal']['any'], nf)} | |")
        print(f"| {sd} | flat, a regression | | {fmt(r['scan']['regression'], nf)} | | | "
              f"{fmt(r['pelt']['regression'], nf)} | | | | |")
        if args.steps == "none":
            continue
        for step in STEPS:
            for after in AFTERS:
                r = simulate(pool, rng, sd=sd, step=step, after=after, n_series=n, ideal_t=ideal_t)
                results["cells"].append({"sd": sd, "step": step, "after": after, **r})
                s, p, i = r["scan"], r["pelt"], r["ideal"]
                cov = (lambda o: fmt(o["covered"], o["found"]) if o["found"] else "—")
                print(f"| {sd} | x{step:.2f} | {after} | {fmt(s['found'], n)} | {fmt(s['within2'], n)} | {cov(s)} | "
                      f"{fmt(p['found'], n)} | {fmt(p['within2'], n)} | {cov(p)} | {fmt(i['found'], n)} | "
                      f"{fmt(i['within2'], n)} |", flush=True)
    # The acceptance test's setting: 24 commits, x1.10 on the last 5, log sd 0.03.
    for d_n, d_after, d_step in ((24, 5, 1.10), (24, 8, 1.08)) if args.steps == "all" else ():
        r = simulate(pool, rng, sd=0.03, step=d_step, after=d_after, n_series=n, n=d_n)
        results["cells"].append({"sd": 0.03, "step": d_step, "after": d_after, "commits": d_n, **r})
        print(f"\n{d_n} commits, x{d_step} on the last {d_after}, sd 0.03: scan found {fmt(r['scan']['found'], n)}, "
              f"covered {r['scan']['covered']}/{r['scan']['found']}, suspected {r['scan']['suspected']}; "
              f"PELT found {fmt(r['pelt']['found'], n)}, covered {r['pelt']['covered']}/{r['pelt']['found']}")
    for sd in noises if args.steps == "all" else ():
        cells = [c for c in results["cells"] if c["sd"] == sd and c["step"] and "commits" not in c]
        for d in DETECTORS:
            f = sum(c[d]["found"] for c in cells)
            cv = sum(c[d]["covered"] for c in cells)
            print(f"coverage, sd {sd}, {d}: {cv}/{f} found steps ({fmt(cv, f) if f else '—'})")
        print(f"median noise_sigma estimate at sd {sd}: {cells[0]['sigma_median']:.4f}")
    if not args.no_resolution and args.steps == "all":
        res = resolution_factors(pool, rng, n_series=max(n // 2, 100))
        results["resolution"] = res
        print(f"\nresolution (scan, sd 0.03, 90% found within one commit): {json.dumps(res)}")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
