"""``alexnet-bench max-batch [config options]``: the largest batch that fits, found by search.

The batch doubles from ``--start`` until a try fails, then a binary search between the last
batch that fitted and the first that did not finds the boundary (about 2*log2(B) tries).

A try runs ``--steps`` real steps of the config at that batch size, always in a fresh
child process (``python -c ... _child_main``), on CUDA as on the CPU:

- on CUDA it fits when its steps raise nothing (and, with ``--memory-limit``, when
  ``torch.cuda.max_memory_reserved`` stays within it). A fresh process per try is needed on
  CUDA too: with ``--compile reduce-overhead`` / ``max-autotune`` each try's CUDA graphs keep
  a private memory pool reserved after the try, and cuDNN workspaces and allocator blocks stay
  cached, so a later try in the same process would read an inflated peak (or run out of
  memory early);
- on the CPU nothing runs out of memory cleanly, so ``--memory-limit`` is required: a try
  fits when the peak resident memory (RSS) of the process that ran it stays within the limit
  (``getrusage(RUSAGE_SELF).ru_maxrss``, the kernel's exact peak; freed memory stays in the
  allocator, so in one process a try after a larger one would read the larger one's RSS). A
  try whose linear extrapolation from the last fitting one exceeds the machine's available
  memory is not run at all and counts as not fitting.

A try that does not run counts as "does not fit", with its reason, and the search goes on:
out of memory; any other error (a huge batch meets limits that are not memory: conv1's output
passes 2^31 elements near batch 7700 at 224x224, where kernels refuse 32-bit indexing or cuDNN
answers CUDNN_STATUS_NOT_SUPPORTED); a sticky CUDA error, reported as such (its process is
discarded, and the next try is a fresh process anyway); a process killed by a signal (e.g. the
kernel's out-of-memory killer); a try still running after ``--try-timeout`` seconds (default
600), whose process and everything it started are then killed (`bench.workers.proc`). The GPU
path is untested on GPU.

Exit status: 0 a batch fits (the answer printed last); 2 bad input, and also when not even
the smallest batch fits in memory (the limit or the config is too large for this machine); 3
when the smallest batch could not run for another reason (an error, a crash, a time-out).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Callable

NAME = "max-batch"
HELP = "find the largest batch that fits on the GPU (on CPU: within --memory-limit) by search"

DEFAULT_MAX_BATCH = 65536
# A try is a fresh interpreter importing torch (seconds), building the case and running
# --steps steps; a compiled case (max-autotune) can take minutes to compile. Longer than that,
# a try is stuck, not slow.
DEFAULT_TRY_TIMEOUT_S = 600.0
MAX_TRY_TIMEOUT_S = 86400.0
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "t": 1000**4, "tb": 1000**4}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


# Below this no AlexNet step fits (an empty torch process alone holds more); a smaller limit is a
# slip (a bare number is bytes: ``10`` is 10 bytes, not 10 GiB), refused before any try.
MIN_MEMORY_LIMIT = 64 * 2**20


def parse_bytes(text: str) -> int:
    """``"8GiB"`` -> 8589934592; units b, kB/MB/GB/TB (10^3) and KiB/MiB/GiB/TiB (2^10); a bare
    number is bytes. A size below `MIN_MEMORY_LIMIT` is refused with how to write one."""
    m = _BYTES_RE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"memory limit {text!r} is not valid; use a size such as 8GiB, 1.5GiB, 800MB or 512MiB")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value < MIN_MEMORY_LIMIT:
        hint = (f"a bare number is bytes: write a unit, e.g. {m.group(1)}GiB or {m.group(1)}MB" if not unit
                else "e.g. 8GiB or 800MB")
        raise ValueError(f"memory limit {text!r} is {value:,} bytes, below {MIN_MEMORY_LIMIT // 2**20} MiB, which no "
                         f"AlexNet step fits in; {hint}")
    return value


@dataclass(frozen=True)
class Try:
    batch: int
    fits: bool
    peak_bytes: int | None
    note: str


def search_max_batch(fits: Callable[[int], Try], *, start: int = 1, upper: int = DEFAULT_MAX_BATCH) -> tuple[int, list[Try]]:
    """Largest batch in [1, upper] for which ``fits`` holds (0 if none), and every try made.

    Assumes monotonicity: if a batch fits, every smaller one does.
    """
    if start < 1 or upper < start:
        raise ValueError(f"search range start={start}, upper={upper} is not valid; need 1 <= start <= upper")
    tries: list[Try] = []
    ok, bad = 0, None
    b = start
    while True:  # grow by doubling
        t = fits(b)
        tries.append(t)
        if not t.fits:
            bad = b
            break
        ok = b
        if b == upper:
            return ok, tries
        b = min(2 * b, upper)
    # Binary search on (ok, bad); when the start itself failed, ok is 0 and it searches below.
    lo_bad = bad
    while lo_bad - ok > 1:
        mid = (ok + lo_bad) // 2
        t = fits(mid)
        tries.append(t)
        if t.fits:
            ok = mid
        else:
            lo_bad = mid
    return ok, tries


_RESULT_TAG = "MAX_BATCH_RESULT "
# How a try's note starts when it did not fit for memory (`make_try`, `_run_try_in_child`).
_MEMORY_NOTES = ("out of memory", "over the memory limit", "not run")


def make_try(cfg_base, *, steps: int, memory_limit: int | None,
             try_timeout_s: float = DEFAULT_TRY_TIMEOUT_S) -> Callable[[int], Try]:
    """A ``fits(batch)`` that runs ``steps`` real steps of ``cfg_base`` at that batch size,
    each try in a fresh process (`_run_try_in_child`) with ``try_timeout_s`` to finish."""
    last_ok: list[tuple[int, int]] = []  # (batch, peak) of the largest fitting try so far

    def fits(batch: int) -> Try:
        cfg = cfg_base.replace(batch_size=batch)
        if not cfg.is_cuda and last_ok:
            import psutil  # CPU path only: a GPU box need not have it

            b0, p0 = last_ok[-1]
            predicted = p0 * batch / b0  # linear in the batch; overestimates (fixed costs scale too)
            available = psutil.virtual_memory().available  # the child starts from nothing
            if predicted > available:
                return Try(batch, False, None, f"not run: about {predicted / 2**30:.1f} GiB predicted, "
                                               f"{available / 2**30:.1f} GiB available")
        peak, why = _run_try_in_child(cfg, steps=steps, timeout_s=try_timeout_s)
        if why:
            return Try(batch, False, None, why)
        if memory_limit is not None and peak is not None and peak > memory_limit:
            return Try(batch, False, peak, "over the memory limit")
        last_ok.append((batch, peak or 0))
        return Try(batch, True, peak, "fits")

    return fits


def _child_main() -> None:
    """In the child: run the steps of the config read from stdin, print the outcome as JSON.

    CPU: the peak is ``getrusage(RUSAGE_SELF).ru_maxrss``, this process's exact high-water mark.
    CUDA: ``torch.cuda.max_memory_reserved``, what the caching allocator held at its peak; the
    process is fresh, so nothing of an earlier try (allocator blocks, CUDA-graph pools of
    reduce-overhead / max-autotune, cuDNN workspaces) is counted. Any exception is reported
    as the try's reason, not raised: an OOM, a non-OOM error that only a large batch meets
    (e.g. conv1's output above 2^31 elements near batch 7700 at 224x224: "canUse32BitIndexMath",
    "numel needs to be smaller than int32", cuDNN "CUDNN_STATUS_NOT_SUPPORTED"), or a sticky
    CUDA error, after which this process's CUDA context is lost (it ends here anyway).
    """
    import json
    import resource
    import sys

    from bench.workers.faults import max_batch_fault
    from bench.workers.proc import classify_failure

    job = json.load(sys.stdin)
    out: dict = {"peak_bytes": None, "kind": "ok", "message": ""}
    try:
        max_batch_fault(int(job["config"]["batch_size"]))  # test-only; nothing unless enabled
        from alexnet.config import RunConfig
        from alexnet.runtime import StepRunner, backend_switches, synchronize

        cfg = RunConfig.from_flat(job["config"])
        with backend_switches(cfg):
            runner = StepRunner.build(cfg)
            x, y = runner.random_batch()
            for _ in range(job["steps"]):
                runner.step(x, y)
            synchronize(cfg.device)
        if cfg.is_cuda:
            import torch

            out["peak_bytes"] = int(torch.cuda.max_memory_reserved(cfg.device))
        else:
            # ru_maxrss is in KiB on Linux.
            out["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except Exception as exc:  # the try's outcome, reported to the parent
        out["kind"] = classify_failure(exc)
        out["message"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    print(_RESULT_TAG + json.dumps(out), flush=True)


def _run_try_in_child(cfg, *, steps: int, timeout_s: float = DEFAULT_TRY_TIMEOUT_S) -> tuple[int | None, str | None]:
    """(peak bytes, None) of a fresh process running the steps, or (None, why it did not fit).

    The process gets ``timeout_s`` seconds; past them it and everything it started are killed
    (`bench.workers.proc.run_limited`) and the try does not fit, with that reason.
    """
    import json
    import sys

    from bench.workers.proc import looks_like_oom, run_limited

    done = run_limited(
        [sys.executable, "-c", "from bench.cli.commands.max_batch import _child_main; _child_main()"],
        timeout_s=timeout_s, input=json.dumps({"config": cfg.flat(), "steps": steps}), capture=True,
    )
    if done.timed_out:
        return None, (f"timed out: still running after --try-timeout {timeout_s:g} s; "
                      "killed with every process it started")
    stdout, stderr = done.stdout or "", done.stderr or ""
    result = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            result = json.loads(line[len(_RESULT_TAG):])
            break
    if done.signal:
        return None, done.describe(oom_note=True)
    if result is None:
        err = (stderr.strip().splitlines() or [done.describe()])[-1]
        if looks_like_oom(err):
            return None, f"out of memory: {err[:160]}"
        return None, f"error: the try's process {done.describe()}: {err[:160]}"
    if result["kind"] == "ok":
        return int(result["peak_bytes"]), None
    what = {"oom": "out of memory", "fatal": "fatal CUDA error (its process is discarded)", "error": "error"}
    return None, f"{what[result['kind']]}: {result['message'][:160]}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench.cli.commands.options import add_config_options

    add_config_options(p, batch_size=False)  # the batch is what the search finds
    g = p.add_argument_group("search")
    g.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="with a unit, e.g. 8GiB, 1.5GiB or 800MB (a bare number is bytes): required on CPU (peak process RSS must stay within it); optional on CUDA "
                        "(peak reserved memory must stay within it)")
    g.add_argument("--start", type=int, default=1, help="first batch size tried (default 1)")
    g.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"largest batch size tried (default {DEFAULT_MAX_BATCH})")
    g.add_argument("--steps", type=int, default=2, help="steps run per try (default 2: the second has gradients allocated)")
    g.add_argument("--try-timeout", type=float, default=DEFAULT_TRY_TIMEOUT_S, metavar="S",
                   help=f"seconds a try may take; past them its processes are killed and the batch does not fit "
                        f"(default {DEFAULT_TRY_TIMEOUT_S:g}; a compiled case can take minutes)")


def run(args: argparse.Namespace) -> int:
    from bench.cli.commands.options import config_from_args
    from bench.cli.errors import CommandFailed, UsageError
    from alexnet.runtime import unsupported_reason

    cfg = config_from_args(args)
    reason = unsupported_reason(cfg)
    if reason:
        raise ValueError(f"config {cfg.case_id()} cannot run here: {reason}")
    limit = parse_bytes(args.memory_limit) if args.memory_limit is not None else None
    if not cfg.is_cuda and limit is None:
        raise ValueError("on CPU, --memory-limit is required (e.g. --memory-limit 8GiB)")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps} is not valid; it must be >= 1")
    if not 0 < args.try_timeout <= MAX_TRY_TIMEOUT_S:  # also refuses nan
        raise ValueError(f"--try-timeout {args.try_timeout:g} is not valid; it must be > 0 and at most "
                         f"{MAX_TRY_TIMEOUT_S:g} seconds")
    fits = make_try(cfg, steps=args.steps, memory_limit=limit, try_timeout_s=args.try_timeout)

    def fits_and_print(batch: int) -> Try:  # each try takes seconds: show it as soon as it is done
        t = fits(batch)
        peak = f"{t.peak_bytes / 2**20:,.0f} MiB" if t.peak_bytes is not None else "-"
        print(f"batch {t.batch:>6}: {'fits' if t.fits else 'does not fit':<12} peak {peak:>12}  {t.note}", flush=True)
        return t

    if args.start < 1 or args.max_batch < args.start:
        raise ValueError(f"--start {args.start} / --max-batch {args.max_batch} are not valid; need 1 <= start <= max-batch")
    best, tries = search_max_batch(fits_and_print, start=args.start, upper=args.max_batch)
    what = "peak reserved CUDA memory" if cfg.is_cuda else "peak process RSS"
    lim = f" within {limit / 2**30:.2f} GiB" if limit is not None else ""
    capped = " (the --max-batch cap)" if best == args.max_batch else ""
    print(f"largest batch that fits: {best}{capped} for {cfg.replace(batch_size=max(best, 1)).case_id()} "
          f"({what}{lim}, {args.steps} step(s) per try, each in a fresh process)")
    boundary = next((t for t in tries if t.batch == best + 1 and not t.fits), None)
    if boundary is not None and not boundary.note.startswith(_MEMORY_NOTES):
        print(f"note: batch {boundary.batch} failed for a reason other than memory: {boundary.note}")
    fatal = [t.batch for t in tries if t.note.startswith("fatal CUDA error")]
    if fatal:
        print(f"warning: sticky CUDA error(s) at batch {', '.join(map(str, fatal))}; each try's process was discarded, "
              "so later tries were unaffected")
    if best == 0:  # not even the smallest batch fits: an answer of 0 is a refusal, never exit 1 (a regression)
        first = min(tries, key=lambda t: t.batch)
        why = f"batch {first.batch}: {first.note}"
        if first.note.startswith(_MEMORY_NOTES):
            raise UsageError(f"no batch fits {what}{lim} ({why}); raise --memory-limit or choose a smaller config")
        raise CommandFailed(f"no batch could run ({why})")
    return 0
