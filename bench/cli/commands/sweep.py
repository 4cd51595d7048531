"""``alexnet-bench sweep plan|run|status|merge|submit``: a sweep in shards, on any engine (docs/sweeps.md).

- ``plan``: the cases collected once (no GPU needed), costs estimated, shards balanced (LPT);
- ``run PLAN --shard K``: one shard (K from ``--shard``, ``SLURM_ARRAY_TASK_ID`` or
  ``JOB_COMPLETION_INDEX``) in an attempt folder of its own under ``--storage``; ``--resume`` skips
  what the sweep already measured with the same code, machine and options;
- ``status SWEEP_DIR``: per shard done, failed, running or missing;
- ``merge SWEEP_DIR --out STORAGE``: ordinary saved runs, one per hardware and software fingerprint;
  exit 1 when cases are missing (the runs of what exists are still written);
- ``submit --slurm``: one ``sbatch --array`` script, submitted, and the merge command to run after.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

NAME = "sweep"
HELP = "a sweep in shards for a cluster: plan, run a shard, status, merge, submit to Slurm (docs/sweeps.md)"

REPO = Path(__file__).resolve().parents[3]
_FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


ACTIONS = ("plan", "run", "status", "merge", "submit")
# What each action takes besides its options (checked in `run`: the parser is one flat parser, so
# that the command follows the command line's conventions, docs/cli.md, as every other does).
_NEEDS = {"plan": ("--shards", "--out"), "run": ("PLAN", "--storage"), "status": ("SWEEP_DIR",),
          "merge": ("SWEEP_DIR", "--out"), "submit": ("PLAN", "--storage", "--slurm")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench.suite.presets import AXES

    p.add_argument("words", nargs="*", metavar="ACTION [PLAN|SWEEP_DIR]",
                   help="plan | run PLAN | status SWEEP_DIR | merge SWEEP_DIR | submit PLAN")
    pl = p.add_argument_group("plan")
    pl.add_argument("--preset", default="full", help="tiny | quick | standard | full (default full)")
    pl.add_argument("--cases", default=None, metavar="FILE", help="plan the rows of a --cases file instead of a preset")
    for axis in AXES.values():
        pl.add_argument(*axis.flags, dest=f"axis_{axis.field}", default=None, metavar="V1,V2", help=axis.valid)
    pl.add_argument("--pipelines", default=None, metavar="P1,P2", help="training-loop pipelines (default both)")
    pl.add_argument("--shards", type=int, default=None, help="how many shards")
    pl.add_argument("--costs", action="append", default=[], metavar="RUN_OR_DIR",
                    help="learn case costs from saved runs (extra_info.case_wall_s); repeatable")
    pl.add_argument("--hardware", default=None, help="which learned hardware to plan for (default: the only one)")
    pl.add_argument("--rounds", type=int, default=None, help="timed rounds (default: the preset's)")
    pl.add_argument("--warmup-rounds", type=int, default=None, help="warm-up rounds (default: the preset's)")
    pl.add_argument("--steps-per-round", default="auto", help="N | auto (default auto)")
    pl.add_argument("--telemetry-seconds", type=float, default=None, help="CUDA telemetry window (default the suite's)")
    pl.add_argument("--no-correctness", action="store_true", help="skip each case's correctness check")
    pl.add_argument("--case-timeout", type=float, default=900.0, help="seconds per case (default 900)")
    pl.add_argument("--out", default=None, metavar="PATH",
                    help="plan: the plan file (new); merge: the storage folder the merged runs are saved in")
    r = p.add_argument_group("run (one shard) and submit")
    r.add_argument("--shard", type=int, default=None,
                   help="the shard (default: $SLURM_ARRAY_TASK_ID, else $JOB_COMPLETION_INDEX)")
    r.add_argument("--storage", default=None, metavar="SWEEP_DIR", help="the sweep's folder (shared by every shard)")
    r.add_argument("--resume", action="store_true", help="skip the cases this sweep already measured (same code, "
                   "machine and options); failed cases run again")
    r.add_argument("--pytest-option", action="append", default=[], metavar="OPT",
                   help="one more pytest option for the shard's run (not a measurement option: the plan fixes those)")
    r.add_argument("--dry-run", action="store_true", help="run: list the cases; submit: print the script")
    m = p.add_argument_group("status and merge")
    m.add_argument("--plan", default=None, metavar="PLAN.json", help="default: SWEEP_DIR/plan.json")
    m.add_argument("--json", action="store_true", help="status: print the rows as JSON")
    m.add_argument("--name", default=None, help="merge: save name (default sweep-<plan id>)")
    m.add_argument("--allow-env-diff", default="", metavar="NAME[,NAME]",
                   help="merge across these differences: gpu, memory, cpu, driver, torch, cuda, cudnn, python, commit")
    sb = p.add_argument_group("submit")
    sb.add_argument("--slurm", action="store_true", help="submit to Slurm with sbatch (one array)")
    sb.add_argument("--gpu-type", default=None, help="pin the GPU type: --gres=gpu:TYPE:1 (e.g. h100)")
    sb.add_argument("--constraint", default=None, help="sbatch --constraint (a node feature naming the GPU)")
    sb.add_argument("--partition", default=None, help="sbatch --partition")
    sb.add_argument("--parallel", type=int, default=None, help="at most N shards at once (--array=...%%N)")
    sb.add_argument("--cpus-per-task", type=int, default=None, help="sbatch --cpus-per-task")
    sb.add_argument("--time", type=int, default=None, metavar="S", help="time limit per shard (default: the plan's)")
    sb.add_argument("--sbatch-option", action="append", default=[], metavar="OPT", help="another #SBATCH line")


def _plan(path: str | None, sweep_dir: Path | None = None) -> dict:
    from bench.sweep.plan import load_plan

    return load_plan(path or (sweep_dir / "plan.json"))


def _do_plan(args: argparse.Namespace) -> int:
    from bench.cli.errors import check_new_file, write_output
    from bench.suite.presets import AXES, PRESETS, parse_axis
    from bench.sweep.costs import CostModel, learn, run_files
    from bench.sweep.plan import collect_cases, make_plan

    out = Path(args.out)
    check_new_file(out, "--out")
    if args.preset not in PRESETS:
        raise ValueError(f"--preset {args.preset!r} is not valid; choose from {', '.join(PRESETS)}")
    overrides = {a.field: parse_axis(a.field, getattr(args, f"axis_{a.field}")) for a in AXES.values()
                 if getattr(args, f"axis_{a.field}") is not None}
    pipelines = [x.strip() for x in args.pipelines.split(",")] if args.pipelines else None
    spec = PRESETS[args.preset]
    options = {"rounds": args.rounds or spec.rounds,
               "warmup_rounds": spec.warmup if args.warmup_rounds is None else args.warmup_rounds,
               "steps_per_round": args.steps_per_round, "telemetry_seconds": args.telemetry_seconds,
               "correctness": not args.no_correctness, "case_timeout": args.case_timeout}
    cases = collect_cases(args.preset, overrides, pipelines=pipelines, case_file=args.cases)
    model = CostModel()
    if args.costs:
        model = learn(run_files(args.costs))
        known = sorted(model.measured)
        if args.hardware:
            if args.hardware not in known:
                raise ValueError(f"--hardware {args.hardware!r} is not in the runs of --costs; they hold: {', '.join(known)}")
            model.hardware = args.hardware
        elif len(known) == 1:
            model.hardware = known[0]
        elif known:
            raise ValueError(f"--costs holds runs of {len(known)} kinds of hardware; choose one with --hardware: "
                             f"{', '.join(known)}")
    selection = {"preset": args.preset, "cases_file": args.cases, "pipelines": pipelines,
                 "overrides": {a.flag: getattr(args, f"axis_{a.field}") for a in AXES.values()
                               if getattr(args, f"axis_{a.field}") is not None}}
    plan = make_plan(cases, shards=args.shards, options=options,
                     preset="cases" if args.cases else args.preset, selection=selection, model=model)
    write_output(out, json.dumps(plan, indent=None, separators=(",", ":")) + "\n", "--out")
    b = plan["balance"]
    print(f"plan {plan['plan_id']}: {len(cases)} cases in {plan['shards']} shards; estimated load per shard "
          f"mean {b['mean_s']:.0f} s, slowest {b['max_s']:.0f} s ({b['max_over_mean']:.4f}x the mean); "
          f"time limit per shard {plan['time_limit_s']} s; costs: "
          + ", ".join(f"{n} {k}" for k, n in sorted(plan["cost_model"]["sources"].items())))
    for w in plan["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {out}")
    return 0


def _do_run(args: argparse.Namespace) -> int:
    from bench.cli.commands.run import BENCH_DIR
    from bench.suite.presets import PRESETS
    from bench.sweep.shard import (code_state, done_cases, local_fingerprint, new_attempt, pytest_options,
                                   shard_cases, shard_index, shard_rows)

    plan = _plan(args.target)
    k, source = shard_index(args.shard, plan["shards"])
    sweep_dir = Path(args.storage)
    extra = list(args.pytest_option)
    fixed = ("--rounds", "--warmup-rounds", "--steps-per-round", "--telemetry-seconds", "--no-correctness",
             "--case-timeout", "--cases", "--preset", "--benchmark-save", "--benchmark-storage")
    clash = [a for a in extra if a.split("=", 1)[0] in fixed]
    if clash:
        raise ValueError(f"{' '.join(clash)}: the plan fixes the measurement options and the cases of every shard")
    cases = shard_cases(plan, k)
    fingerprint, code = local_fingerprint(), code_state(REPO)
    skip = done_cases(sweep_dir, plan, fingerprint, code) if args.resume else {}
    todo = [c for c in cases if c["case_id"] not in skip]
    if not todo:
        print(f"shard {k}: nothing left to run ({len(cases)} case(s) already done in {sweep_dir})")
        return 0
    if skip:
        print(f"shard {k}: resuming; {len(cases) - len(todo)} of {len(cases)} case(s) already done, {len(todo)} to run")
    if args.dry_run:
        print("\n".join(c["case_id"] for c in todo))
        return 0
    sweep_dir.mkdir(parents=True, exist_ok=True)
    plan_copy = sweep_dir / "plan.json"
    if not plan_copy.exists():
        try:
            with open(plan_copy, "x") as fh:
                fh.write(Path(args.target).read_text())
        except FileExistsError:
            pass
    attempt = new_attempt(sweep_dir, k, {"plan_id": plan["plan_id"], "plan_options": plan["options"],
                                         "fingerprint": fingerprint, "code": code, "index_source": source,
                                         "cases": [c["case_id"] for c in todo],
                                         "resumed_from": sorted(set(skip) & {c["case_id"] for c in cases})})
    (attempt.path / "cases.json").write_text(json.dumps({"cases": shard_rows(todo)}, indent=1))
    cmd = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-p", "no:cacheprovider", "-p", "bench.sweep.journal",
           "--sweep-journal", str(attempt.path / "journal.jsonl"), "--cases", str(attempt.path / "cases.json")]
    if plan["preset"] in PRESETS:
        cmd += ["--preset", plan["preset"]]
    cmd += pytest_options(plan["options"]) + [f"--benchmark-save=sweep-s{k:04d}",
                                               f"--benchmark-storage=file://{attempt.path.absolute()}"] + extra
    print(f"shard {k} ({source}), attempt {attempt.attempt} on {attempt.host}: {len(todo)} case(s) into {attempt.path}")
    print(" ".join(cmd), flush=True)
    return _run_forwarding(cmd, attempt.path / "end.json")


def _run_forwarding(cmd: list[str], end: Path) -> int:
    """Run pytest; SIGTERM, SIGUSR1 (Slurm's --signal, Kubernetes' grace) and SIGINT are passed on to
    it as they came (once: a repeat is not forwarded), and the suite stops its current case's
    worker and saves the cases it measured, marked with the signal (alexnet.interrupted)."""
    from bench.workers.proc import run_forwarding_signals

    rc, sig = run_forwarding_signals(cmd, signals=_FORWARDED, cwd=REPO)
    end.write_text(json.dumps({"exit_status": rc, "signal": sig, "ended": time.time()}))
    if sig is not None:
        print(f"shard stopped by {sig}; the cases measured are saved", file=sys.stderr)
        return 130 if sig == "SIGINT" else 143
    if rc == 4:
        return 2
    if rc != 0:
        print(f"pytest exited {rc}: case(s) failed; they run again with --resume", file=sys.stderr)
        return 3
    return 0


def _do_status(args: argparse.Namespace) -> int:
    from bench.sweep.status import shard_states

    sweep_dir = Path(args.target)
    plan = _plan(args.plan, sweep_dir)
    rows = shard_states(sweep_dir, plan)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'shard':>5}  {'state':8} {'cases':>11}  {'failed':>6}  {'tries':>5}  host / detail")
    for r in rows:
        print(f"{r['shard']:>5}  {r['state']:8} {r['done']:>5}/{r['total']:<5}  {r['failed']:>6}  {r['attempts']:>5}  "
              f"{r['host'] or '-'} {r['detail']}")
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "failed", "missing")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def _do_merge(args: argparse.Namespace) -> int:
    from runrecord.store import RunStore
    from bench.sweep.merge import merge_sweep

    sweep_dir = Path(args.target)
    plan = _plan(args.plan, sweep_dir)
    allow = [x.strip() for x in args.allow_env_diff.split(",") if x.strip()]
    merged, missing, lines = merge_sweep(sweep_dir, plan, allow=allow)
    for line in lines:
        print(line)
    store = RunStore(args.out)
    for m in merged:
        path = store.save(m.doc, args.name or f"sweep-{plan['plan_id']}", machine_id=m.machine_id)
        print(f"saved {path}")
    if missing:  # the work is incomplete: 3, as every command's failed work (1 means a regression only)
        print(f"{len(missing)} of {len(plan['cases'])} case(s) missing (not measured by any shard): "
              + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
        return 3
    return 0


def _do_submit(args: argparse.Namespace) -> int:
    from bench.sweep.slurm import max_array_size, sbatch_script, submit

    plan = _plan(args.target)
    sweep_dir = Path(args.storage)
    script = sbatch_script(plan, Path(args.target), sweep_dir, repo=REPO, gpu_type=args.gpu_type,
                           constraint=args.constraint, partition=args.partition, parallel=args.parallel,
                           cpus=args.cpus_per_task, time_s=args.time, extra=args.sbatch_option,
                           limit=max_array_size() if not args.dry_run else 10**9)
    if args.dry_run:
        print(script, end="")
        return 0
    (sweep_dir / "slurm").mkdir(parents=True, exist_ok=True)
    plan_copy = sweep_dir / "plan.json"
    if not plan_copy.exists():
        plan_copy.write_text(Path(args.target).read_text())
    path = sweep_dir / "slurm" / f"sweep-{plan['plan_id']}.sbatch"
    path.write_text(script)
    job = submit(path)
    print(f"submitted job {job}: {plan['shards']} array task(s), script {path}")
    print(f"when it is done: alexnet-bench sweep merge {sweep_dir} --out .benchmarks   "
          f"(meanwhile: alexnet-bench sweep status {sweep_dir})")
    return 0


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    if not words or words[0] not in ACTIONS:
        got = f"{words[0]!r} is not an action" if words else "no action given"
        raise ValueError(f"{got}; choose from {', '.join(ACTIONS)}")
    args.action = words[0]
    needs = _NEEDS[args.action]
    takes = 1 if needs and needs[0].isupper() else 0
    if len(words) != 1 + takes:
        raise ValueError(f"sweep {args.action} takes {'one ' + needs[0] if takes else 'no other word'}; got "
                         f"{' '.join(words[1:]) or 'none'}")
    args.target = words[1] if takes else None
    missing = [n for n in needs if n.startswith("--") and not getattr(args, n[2:].replace("-", "_"))]
    if missing:
        raise ValueError(f"sweep {args.action} needs {' and '.join(missing)}")
    return {"plan": _do_plan, "run": _do_run, "status": _do_status, "merge": _do_merge,
            "submit": _do_submit}[args.action](args)
