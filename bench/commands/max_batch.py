"""``alexnet-bench max-batch [config options]``: the largest batch that fits, found by search.

The batch doubles from ``--start`` until a try fails, then a binary search between the last
batch that fitted and the first that did not finds the boundary (about 2*log2(B) tries).

A try runs ``--steps`` real steps of the config at that batch size:

- on CUDA it fits when no ``torch.OutOfMemoryError`` is raised (and, with ``--memory-limit``,
  when ``torch.cuda.max_memory_reserved`` stays within it); memory is freed after every try;
- on the CPU nothing runs out of memory cleanly, so ``--memory-limit`` is required: a try
  fits when the peak resident memory (RSS) of the process that ran it stays within the limit.
  Each CPU try runs in a fresh child process and reads the kernel's exact peak
  (``getrusage(RUSAGE_SELF).ru_maxrss``), because freed memory stays in the allocator: in
  one process a try after a larger one reads the larger one's RSS. A try whose linear
  extrapolation from the last fitting one exceeds the machine's available memory is not run
  at all and counts as not fitting; a child killed by the kernel counts as not fitting.
"""

from __future__ import annotations

import argparse
import gc
import re
from dataclasses import dataclass
from typing import Callable

NAME = "max-batch"
HELP = "find the largest batch that fits on the GPU (on CPU: within --memory-limit) by search"

DEFAULT_MAX_BATCH = 65536
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "t": 1000**4, "tb": 1000**4}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str) -> int:
    """``"8GiB"`` -> 8589934592; units b, kB/MB/GB/TB (10^3) and KiB/MiB/GiB/TiB (2^10)."""
    m = _BYTES_RE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"memory limit {text!r} is not valid; use a size such as 8GiB, 512MiB or 2GB")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"memory limit {text!r} is not valid; it must be > 0")
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


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_try(cfg_base, *, steps: int, memory_limit: int | None) -> Callable[[int], Try]:
    """A ``fits(batch)`` that runs ``steps`` real steps of ``cfg_base`` at that batch size."""
    import psutil
    import torch

    from alexnet.runtime import StepRunner, backend_switches, synchronize
    from bench.failures import is_fatal_device_error, is_oom

    last_ok: list[tuple[int, int]] = []  # (batch, peak) of the largest fitting try so far

    def fits(batch: int) -> Try:
        cfg = cfg_base.replace(batch_size=batch)
        if not cfg.is_cuda and last_ok:
            b0, p0 = last_ok[-1]
            predicted = p0 * batch / b0  # linear in the batch; overestimates (fixed costs scale too)
            available = psutil.virtual_memory().available  # the child starts from nothing
            if predicted > available:
                return Try(batch, False, None, f"not run: about {predicted / 2**30:.1f} GiB predicted, "
                                               f"{available / 2**30:.1f} GiB available")
        peak = None
        oom = None
        if not cfg.is_cuda:
            peak, oom = _cpu_try_in_child(cfg, steps=steps)
        else:
            try:
                with backend_switches(cfg):
                    torch.cuda.reset_peak_memory_stats(cfg.device)
                    runner = StepRunner.build(cfg)
                    x, y = runner.random_batch()
                    for _ in range(steps):
                        runner.step(x, y)
                    synchronize(cfg.device)
                    peak = int(torch.cuda.max_memory_reserved(cfg.device))
                    del runner, x, y
            except Exception as exc:
                if is_fatal_device_error(exc) or not is_oom(exc):
                    raise
                oom = f"out of memory: {str(exc).splitlines()[0][:120]}"
        _free()
        if oom:
            return Try(batch, False, None, oom)
        if memory_limit is not None and peak is not None and peak > memory_limit:
            return Try(batch, False, peak, "over the memory limit")
        last_ok.append((batch, peak or 0))
        return Try(batch, True, peak, "fits")

    return fits


def _child_main() -> None:
    """In the child: run the steps of the config read from stdin, print the peak RSS as JSON."""
    import json
    import resource
    import sys

    from alexnet.config import RunConfig
    from alexnet.runtime import StepRunner, backend_switches

    job = json.load(sys.stdin)
    cfg = RunConfig.from_flat(job["config"])
    with backend_switches(cfg):
        runner = StepRunner.build(cfg)
        x, y = runner.random_batch()
        for _ in range(job["steps"]):
            runner.step(x, y)
    # ru_maxrss is in KiB on Linux: the exact high-water mark of this process.
    print(json.dumps({"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def _cpu_try_in_child(cfg, *, steps: int) -> tuple[int | None, str | None]:
    """(peak RSS bytes, None) of a fresh process running the steps, or (None, why it failed)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "from bench.commands.max_batch import _child_main; _child_main()"],
        input=json.dumps({"config": cfg.flat(), "steps": steps}), capture_output=True, text=True,
    )
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        if proc.returncode < 0 or any(m in err.lower() for m in ("out of memory", "can't allocate", "memoryerror")):
            return None, f"out of memory: {err[:120]}"
        raise RuntimeError(f"max-batch try at batch {cfg.batch_size} failed: {err}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]), None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench.commands.options import add_config_options

    add_config_options(p)
    g = p.add_argument_group("search")
    g.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="e.g. 8GiB: required on CPU (peak process RSS must stay within it); optional on CUDA "
                        "(peak reserved memory must stay within it)")
    g.add_argument("--start", type=int, default=1, help="first batch size tried (default 1)")
    g.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"largest batch size tried (default {DEFAULT_MAX_BATCH})")
    g.add_argument("--steps", type=int, default=2, help="steps run per try (default 2: the second has gradients allocated)")


def run(args: argparse.Namespace) -> int:
    from bench.commands.options import config_from_args
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
    fits = make_try(cfg, steps=args.steps, memory_limit=limit)
    best, tries = search_max_batch(fits, start=args.start, upper=args.max_batch)
    for t in tries:
        peak = f"{t.peak_bytes / 2**20:,.0f} MiB" if t.peak_bytes is not None else "-"
        print(f"batch {t.batch:>6}: {'fits' if t.fits else 'does not fit':<12} peak {peak:>12}  {t.note}")
    what = "peak reserved CUDA memory" if cfg.is_cuda else "peak process RSS"
    lim = f" within {limit / 2**30:.2f} GiB" if limit is not None else ""
    capped = " (the --max-batch cap)" if best == args.max_batch else ""
    print(f"largest batch that fits: {best}{capped} for {cfg.replace(batch_size=max(best, 1)).case_id()} "
          f"({what}{lim}, {args.steps} step(s) per try)")
    return 0 if best > 0 else 1
