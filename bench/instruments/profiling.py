"""Where a step's time goes, layer by layer, measured with ``torch.profiler``.

How a step is attributed:

- **Forward.** The net is walked layer by layer in network order (`summary_layers`), each
  layer inside its own ``record_function("layer/NN/name")`` range. For torchvision's AlexNet,
  whose ``forward`` calls ``torch.flatten`` as a function, this walks the equivalent
  ``Sequential`` (features, avgpool, an explicit ``nn.Flatten``, classifier): same modules,
  same parameters, same arithmetic, and the flatten gets a row of its own.
- **Backward.** Attributed through autograd, not module backward hooks. Each
  ``autograd::engine::evaluate_function: XBackward0`` event carries the ``sequence_nr`` of
  the forward op that created its node, and that forward op sits inside its layer's range.
  (Full backward hooks lose conv1's weight gradient, since conv1 computes no input gradient:
  on our CPU they gave conv1 0.15 ms of backward against 26.5 ms by sequence number;
  docs/measurement-notes.md, "Per-layer attribution with torch.profiler".) The match is by ``(forward thread, sequence_nr)`` and never by which thread
  the backward ran on: on CUDA the autograd engine runs backward on a per-device worker
  thread, outside every range of the main thread.
- **Remainder.** Rows after the layers: ``loss`` (cross-entropy forward + backward),
  ``zero_grad``, ``optimizer`` (scaler step + update), ``backward_other`` (autograd engine
  work no forward op claims, e.g. AccumulateGrad) and ``other`` (the rest of the step: glue
  between ranges, Python). All rows add up to the profiled step.
- **Coverage** = the layers' forward + backward time / the profiled step's time.
- **Overhead.** The same step is timed without the profiler; ``profiled_step_ms /
  unprofiled_step_ms - 1`` is what the profiler (about 4 us per op plus ~3 us per
  ``record_function`` on CUDA; docs/measurement-notes.md) added.

Times: on CPU, an event's wall time; on CUDA, kernel (device) time: each kernel is tied to
the op that launched it by correlation id (torch does this when it reads the trace), and
that op to a layer through its own thread's ranges: a layer range (forward), an
``evaluate_function`` event and its sequence number (backward, on the engine's thread),
``zero_grad`` or ``optimizer``; backward kernels no forward op claims (AccumulateGrad, the
seed gradient) make ``backward_other``. The step's time is its wall time up to a
``synchronize`` inside the step's range, so on a launch-bound GPU coverage is honestly
below 1. The CUDA path is untested on GPU; its mechanism is tested on synthetic event lists
shaped like a CUDA trace (tests/test_profiling.py).

FLOPs come from ``FlopCounterMode`` per module (counted on the ``meta`` device: no compute,
no side effects), activation memory is the size of each layer's output for the batch, and
GFLOP/s = the row's FLOPs / its time.

``torch.compile``: fused kernels belong to no single layer, so a compiled config profiles
the *eager* model of the same config and says so in ``notes``. GPU paths are untested on GPU.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function, schedule
from torch.utils.flop_counter import FlopCounterMode

from alexnet.config import RunConfig
from alexnet.model import summary_layers
from alexnet.runtime import StepRunner, autocast_context, backend_switches, seed_everything, synchronize

__all__ = ["COMPILE_NOTE", "REMAINDER_ROWS", "LayerProfile", "layer_names", "profile_layers"]


# kineto (libkineto's SyncActivityProfilerHandler) writes "USDT:<time> ... profiler_start" and
# "... profiler_stop" from C++ straight to file descriptor 2 on every profile; they are not for
# the user, and no environment variable turns them off (KINETO_LOG_LEVEL does not).
_USDT_PREFIX = b"USDT:"


@contextlib.contextmanager
def _without_usdt_lines():
    """Divert file descriptor 2 to a temporary file while the profiler runs, then write every line
    but kineto's USDT ones back to it: warnings and errors still reach the user, in order."""
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = b"".join(line for line in tmp.read().splitlines(keepends=True) if not line.startswith(_USDT_PREFIX))
            if kept:
                os.write(2, kept)

_LAYER_PREFIX = "layer/"
_BACKWARD_EVENT = "autograd::engine::evaluate_function: "
# Short names for row labels: conv1, relu1, pool1, flatten1, fc1, dropout1 ...
_SHORT = {
    "Conv2d": "conv",
    "Linear": "fc",
    "ReLU": "relu",
    "MaxPool2d": "pool",
    "AdaptiveAvgPool2d": "avgpool",
    "Flatten": "flatten",
    "Dropout": "dropout",
}
# (max - min) / median of the unprofiled steps above which the overhead figure is called noise.
NOISY_SPREAD = 0.10
REMAINDER_ROWS = ("loss", "zero_grad", "optimizer", "backward_other", "other")
COMPILE_NOTE = (
    "torch.compile fuses kernels across layers, so per-layer times of a compiled model mean "
    "nothing; this profile is of the eager model of the same config"
)


def layer_names(layers: list[nn.Module]) -> list[str]:
    """``conv1``, ``relu1``, ``pool1`` ... numbered per kind, in network order."""
    seen: dict[str, int] = {}
    names = []
    for layer in layers:
        kind = type(layer).__name__
        short = _SHORT.get(kind, kind.lower())
        seen[short] = seen.get(short, 0) + 1
        names.append(f"{short}{seen[short]}")
    return names


@dataclass
class LayerProfile:
    """A per-layer profile of one config's step.

    ``rows``: one dict per layer in network order, then the remainder rows (``group`` is
    ``"layer"`` or ``"remainder"``); times are means per step over the profiled steps.
    ``step_ms`` is the mean profiled step, which the rows add up to; ``profiled_step_ms`` and
    ``unprofiled_step_ms`` are the medians with and without the profiler running.
    """

    cfg: RunConfig
    rows: list[dict[str, Any]]
    coverage: float
    step_ms: float
    profiled_step_ms: float
    unprofiled_step_ms: float
    steps: int
    time_kind: str  # "cpu_wall" or "cuda_kernel"
    notes: list[str] = field(default_factory=list)

    @property
    def layer_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["group"] == "layer"]

    @property
    def overhead(self) -> float:
        """Fractional slow-down of a step under the profiler (0.05 = 5% slower)."""
        return self.profiled_step_ms / self.unprofiled_step_ms - 1.0

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as plain JSON-ready dicts (``extra_info["layers"]`` of a saved case)."""
        return [dict(r) for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """Rows plus the step-level figures, for a sidecar file or a report."""
        return {
            "case_id": self.cfg.case_id(),
            "config": self.cfg.flat(),
            "coverage": self.coverage,
            "step_ms": self.step_ms,
            "profiled_step_ms": self.profiled_step_ms,
            "unprofiled_step_ms": self.unprofiled_step_ms,
            "overhead": self.overhead,
            "steps": self.steps,
            "time_kind": self.time_kind,
            "notes": list(self.notes),
            "rows": self.to_records(),
        }

    def format_table(self) -> str:
        """The table in network order, with its total, coverage and overhead lines."""
        head = f"{'#':>3} {'layer':<15} {'kind':<18} {'out shape':<16} {'params':>11} {'MFLOP':>10} " \
               f"{'fwd ms':>9} {'bwd ms':>9} {'total ms':>9} {'%':>6} {'act MB':>8} {'GFLOP/s':>8}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            gf = "" if r["gflops_per_s"] is None else f"{r['gflops_per_s']:.1f}"
            share = 100.0 * r["total_ms"] / self.step_ms if self.step_ms > 0 else 0.0
            lines.append(
                f"{r['index']:>3} {r['layer']:<15} {r['kind']:<18} {r['out_shape']:<16} {r['params']:>11,} "
                f"{r['flops'] / 1e6:>10.1f} {r['fwd_ms']:>9.3f} {r['bwd_ms']:>9.3f} {r['total_ms']:>9.3f} "
                f"{share:>6.1f} {r['act_bytes'] / 2**20:>8.2f} {gf:>8}"
            )
        lines.append("-" * len(head))
        layer_ms = sum(r["total_ms"] for r in self.layer_rows)
        lines.append(f"    {'layers':<15} {'':<18} {'':<16} {'':>11} {'':>10} "
                     f"{sum(r['fwd_ms'] for r in self.layer_rows):>9.3f} "
                     f"{sum(r['bwd_ms'] for r in self.layer_rows):>9.3f} {layer_ms:>9.3f}")
        lines.append(f"    {'step (total)':<15} {'':<18} {'':<16} {'':>11} {'':>10} {'':>9} {'':>9} {self.step_ms:>9.3f}")
        what = "forward + backward" if self.cfg.mode == "train" else "forward"
        lines.append(f"coverage: {100 * self.coverage:.1f}% of the profiled step is in the layers' {what} "
                     f"({self.time_kind.replace('_', ' ')} time, mean of {self.steps} profiled step(s))")
        lines.append(f"profiler overhead: {self.profiled_step_ms:.2f} ms profiled vs {self.unprofiled_step_ms:.2f} ms "
                     f"unprofiled (median step), {100 * self.overhead:+.1f}%")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# --- the step, walked layer by layer -------------------------------------------------------------
def _no_range(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _make_step(
    runner: StepRunner, layers: list[nn.Module], names: list[str], x: torch.Tensor, y: torch.Tensor
) -> Callable[[Callable[[str], contextlib.AbstractContextManager]], None]:
    """One step equivalent to ``runner.step`` on the eager model, with a range per part.

    ``rng`` is ``record_function`` when profiling and a null context when timing without it.
    """
    cfg = runner.cfg
    labels = [f"{_LAYER_PREFIX}{i:02d}/{n}" for i, n in enumerate(names)]

    def forward(rng: Callable[[str], contextlib.AbstractContextManager]) -> torch.Tensor:
        h = x
        for label, layer in zip(labels, layers):
            with rng(label):
                h = layer(h)
        return h

    def train(rng: Callable[[str], contextlib.AbstractContextManager]) -> None:
        opt = runner.optimizer
        assert opt is not None
        with rng("step"):
            with rng("zero_grad"):
                opt.zero_grad(set_to_none=True)
            with autocast_context(cfg):
                logits = forward(rng)
                with rng("loss"):
                    loss = runner.loss_fn(logits, y)
            with rng("backward"):
                runner.scaler.scale(loss).backward()
            with rng("optimizer"):
                runner.scaler.step(opt)
                runner.scaler.update()
            synchronize(cfg.device)  # inside the range: the step's time includes the GPU's

    def infer(rng: Callable[[str], contextlib.AbstractContextManager]) -> None:
        with rng("step"):
            with torch.inference_mode(), autocast_context(cfg):
                forward(rng)
            synchronize(cfg.device)

    return train if cfg.mode == "train" else infer


# --- FLOPs, shapes, memory ------------------------------------------------------------------------
def _static_rows(cfg: RunConfig, layers: list[nn.Module], names: list[str], x: torch.Tensor) -> list[dict[str, Any]]:
    """Per layer: kind, output shape, params, forward/backward FLOPs, output bytes."""
    # FLOPs on the meta device: FlopCounterMode only needs shapes, and nothing real runs.
    seq = copy.deepcopy(nn.Sequential(*layers)).to("meta")
    xm = torch.empty(x.shape, dtype=x.dtype, device="meta")
    fwd_counter = FlopCounterMode(display=False)
    with fwd_counter, torch.no_grad():
        seq.train(cfg.mode == "train")
        seq(xm)
    all_counter = FlopCounterMode(display=False)
    if cfg.mode == "train":
        with all_counter:
            # The input needs no gradient, as in training: conv1 computes its weight gradient only.
            seq(xm).sum().backward()
    fwd = fwd_counter.get_flop_counts()
    both = all_counter.get_flop_counts() if cfg.mode == "train" else fwd

    rows = []
    h = torch.empty(x.shape, dtype=x.dtype, device="meta")
    # Under autocast every layer's output is in the autocast dtype (conv1 casts, the rest
    # keep it); otherwise the input's dtype.
    act_dtype = {"off": x.dtype, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    elem = torch.empty((), dtype=act_dtype).element_size()
    with torch.no_grad():
        for i, (name, layer) in enumerate(zip(names, seq)):
            h = layer(h)
            key = f"Sequential.{i}"
            f_fwd = int(sum(fwd.get(key, {}).values()))
            f_all = int(sum(both.get(key, {}).values()))
            rows.append({
                "index": i,
                "layer": name,
                "kind": type(layer).__name__,
                "group": "layer",
                "out_shape": "x".join(str(d) for d in h.shape),
                "params": sum(p.numel() for p in layer.parameters()),
                "flops": f_all,
                "fwd_flops": f_fwd,
                "bwd_flops": f_all - f_fwd,
                "act_bytes": h.numel() * elem,
            })
    return rows


# --- reading the profiler's events ----------------------------------------------------------------
# How events are tied together, from torch's sources (torch 2.14: torch/autograd/profiler.py
# ``_parse_kineto_results`` and profiler_util.py):
# - ``cpu_parent`` / ``cpu_children`` nest host events by time *within one thread* only
#   (``EventList._populate_cpu_children`` groups by thread).
# - A device kernel is attached to the host op that launched it, on whatever thread, by
#   correlation id: the kernel's ``linked_correlation_id`` is the op's ``id``, and the op gets
#   it in ``kernels`` (``append_kernel``). ``device_time_total`` then sums an op's kernels and
#   its same-thread children's.
# - A forward op records ``sequence_nr`` on its own thread; the backward node it creates
#   carries the same number and the forward thread in ``fwd_thread`` (torch keys backward
#   stack traces by ``(sequence_nr, fwd_thread)`` the same way, ``_set_backward_stacktraces``).
# On CUDA the autograd engine runs backward on a per-device worker thread (torch/csrc/autograd/engine.cpp,
# ``Engine::start_device_threads``), so
# backward kernels are under no range of the main thread: they are found from their launching
# op's own ancestors on the worker thread, up to its ``evaluate_function`` event, then to the
# layer by sequence number. Nothing below depends on which thread an event ran on.
_BACKWARD_FUNCTION_SCOPE = 1  # at::RecordScope::BACKWARD_FUNCTION: the node's own event


def _on_host(event: Any) -> bool:
    """True for host-side events; on CUDA each range also has a device-side twin to skip."""
    return event.device_type == torch.autograd.DeviceType.CPU


def _range_owner(event: Any) -> str | None:
    """The innermost layer or loss range enclosing a forward op, or None."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(_LAYER_PREFIX) or parent.name == "loss":
            return parent.name
        parent = parent.cpu_parent
    return None


class _SeqOwners:
    """Forward ops' layer owners by ``(thread, sequence_nr)``; looked up from a backward event."""

    def __init__(self, host: list[Any]) -> None:
        self.by_key: dict[tuple[int, int], str] = {}
        by_nr: dict[int, set[str]] = {}
        for e in host:
            if e.sequence_nr >= 0 and not e.name.startswith(_BACKWARD_EVENT):
                owner = _range_owner(e)
                if owner is not None:
                    # Forward ops of one layer (e.g. linear's t and addmm) share one owner.
                    self.by_key[(e.thread, e.sequence_nr)] = owner
                    by_nr.setdefault(e.sequence_nr, set()).add(owner)
        # Where a backward event names no forward thread, its number alone, if unambiguous.
        self.by_nr = {nr: next(iter(o)) for nr, o in by_nr.items() if len(o) == 1}

    def owner(self, backward: Any) -> str | None:
        fwd = backward.fwd_thread
        if not fwd:
            # The node's own event under evaluate_function carries the forward thread.
            fwd = next((c.fwd_thread for c in backward.cpu_children
                        if c.scope == _BACKWARD_FUNCTION_SCOPE and c.fwd_thread), None)
        if fwd:
            found = self.by_key.get((fwd, backward.sequence_nr))
            if found is not None:
                return found
        return self.by_nr.get(backward.sequence_nr)


def _attribute(events: list[Any], labels: list[str], *, cuda: bool) -> dict[str, dict[str, float]]:
    """Sum forward and backward time per range label over all profiled steps (thread-agnostic).

    Returns ``{label: {"fwd", "bwd"}}`` for the layers and ``loss``, and ``_extra`` with the
    step's wall time and count, ``zero_grad``, ``optimizer``, ``backward`` (all backward work)
    and ``backward_other`` (backward work no forward op claims).
    """
    out = {k: {"fwd": 0.0, "bwd": 0.0} for k in [*labels, "loss"]}
    extra = {k: 0.0 for k in ("step", "zero_grad", "optimizer", "backward", "backward_attributed",
                              "backward_other", "steps")}
    host = [e for e in events if _on_host(e)]
    owners = _SeqOwners(host)
    for e in host:
        if e.name == "step":
            # The step's own time is its wall time (it ends with a synchronize), on any device.
            extra["step"] += e.cpu_time_total / 1e3
            extra["steps"] += 1
    if cuda:
        _attribute_kernels(host, out, extra, owners)
    else:
        _attribute_wall(host, out, extra, owners)
    return {**out, "_extra": extra}


def _attribute_wall(host: list[Any], out: dict[str, dict[str, float]], extra: dict[str, float], owners: _SeqOwners) -> None:
    """CPU: each range's and each backward node's wall time.

    On a CPU the engine runs backward on the thread that called ``backward()``, so the
    ``backward`` range's wall time holds all of it, engine glue included.
    """
    for e in host:
        if e.name in out:
            out[e.name]["fwd"] += e.cpu_time_total / 1e3
        elif e.name.startswith(_BACKWARD_EVENT):
            owner = owners.owner(e)
            if owner is not None:
                ms = e.cpu_time_total / 1e3
                out[owner]["bwd"] += ms
                extra["backward_attributed"] += ms
        elif e.name in ("zero_grad", "optimizer", "backward"):
            extra[e.name] += e.cpu_time_total / 1e3
    # Engine work inside backward() that no forward op claims (AccumulateGrad, scheduling).
    extra["backward_other"] = max(0.0, extra["backward"] - extra["backward_attributed"])


def _attribute_kernels(host: list[Any], out: dict[str, dict[str, float]], extra: dict[str, float], owners: _SeqOwners) -> None:
    """CUDA: every kernel once, through the op that launched it, to the part of the step it served."""
    backward_ranges = [(e.time_range.start, e.time_range.end) for e in host if e.name == "backward"]
    for e in host:
        if not e.kernels:
            continue
        ms = sum(k.duration for k in e.kernels) / 1e3  # the op's own kernels, linked by correlation id
        a = e
        while a is not None:
            if a.name in out:
                out[a.name]["fwd"] += ms
                break
            if a.name.startswith(_BACKWARD_EVENT):
                owner = owners.owner(a)
                if owner is not None:
                    out[owner]["bwd"] += ms
                    extra["backward_attributed"] += ms
                else:  # AccumulateGrad and other nodes no forward op created
                    extra["backward_other"] += ms
                break
            if a.name in ("zero_grad", "optimizer"):
                extra[a.name] += ms
                break
            if a.name == "backward":  # the main thread's part: the seed gradient, the scaler's multiply
                extra["backward_other"] += ms
                break
            a = a.cpu_parent
        else:
            # No range above it on its thread: an engine thread's op outside any node, during backward().
            mid = (e.time_range.start + e.time_range.end) / 2
            if any(s <= mid <= t for s, t in backward_ranges):
                extra["backward_other"] += ms
    extra["backward"] = extra["backward_attributed"] + extra["backward_other"]


# --- the entry point ------------------------------------------------------------------------------
def _check_runner(cfg: RunConfig, runner: StepRunner) -> None:
    if runner.cfg != cfg:
        a, b = cfg.flat(), runner.cfg.flat()
        diff = sorted(k for k in a if a[k] != b[k])
        raise ValueError(f"runner was built for a different config (differs in {', '.join(diff)}); "
                         "pass the runner's own config")


def profile_layers(
    cfg: RunConfig,
    *,
    runner: StepRunner | None = None,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    warmup: int = 2,
    trace_path: str | Path | None = None,
    steps: int = 3,
    around_profiled: contextlib.AbstractContextManager | None = None,
) -> LayerProfile:
    """Profile ``cfg``'s step per layer; see the module docstring for the method.

    ``warmup`` unprofiled steps run first (lazy init, cuDNN autotuning, allocator growth),
    then ``steps`` unprofiled steps are timed, then the profiler runs one discarded step and
    ``steps`` recorded ones, then ``steps`` more unprofiled steps are timed (the overhead
    compares the median of all unprofiled steps with the median profiled step).
    ``trace_path`` receives the Chrome trace of the recorded steps.

    ``around_profiled``, a context manager (e.g. a telemetry `Sampler`), is entered right
    before the first recorded step and left right after the last one ends (each step ends
    with a synchronize), before the profiler collects and exports its events: a window of
    exactly ``steps`` steps of ``cfg.batch_size`` images, profiler overhead included.
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup {warmup!r} is not valid; it must be an integer >= 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps {steps!r} is not valid; it must be an integer >= 1")
    notes: list[str] = []
    if cfg.compile != "off":
        notes.append(COMPILE_NOTE)
    with backend_switches(cfg):
        if runner is None:
            seed_everything(cfg.seed)
            runner = StepRunner.build(cfg)
        else:
            _check_runner(cfg, runner)
        # The eager model's layers in network order (an explicit Flatten for torchvision).
        layers = summary_layers(runner.eager_model)
        for layer in layers:
            layer.train(cfg.mode == "train")
        names = layer_names(layers)
        labels = [f"{_LAYER_PREFIX}{i:02d}/{n}" for i, n in enumerate(names)]
        x, y = runner.random_batch() if batch is None else runner.prepare(*batch)
        assert y is not None
        step = _make_step(runner, layers, names, x, y)
        rows = _static_rows(cfg, layers, names, x)

        for _ in range(warmup):
            step(_no_range)
        unprofiled: list[float] = []

        def time_unprofiled() -> None:
            for _ in range(steps):
                synchronize(cfg.device)
                t0 = time.perf_counter()
                step(_no_range)  # ends with a synchronize
                unprofiled.append((time.perf_counter() - t0) * 1e3)

        # Unprofiled steps before and after the profiled ones, so a machine whose speed drifts
        # (other load, clocks) biases the overhead figure less.
        time_unprofiled()

        cuda = cfg.is_cuda
        if not cuda:
            # A CUDA build of torch on a GPU-less machine makes kineto print an "ERROR" line
            # (gpuGetDeviceCount failed) on every CPU profile; level 5 keeps only fatal ones.
            os.environ.setdefault("KINETO_LOG_LEVEL", "5")
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        captured: list[Any] = []

        def on_ready(prof: profile) -> None:
            captured.extend(prof.events())
            if trace_path is not None:
                prof.export_chrome_trace(str(trace_path))

        # One discarded step after the profiler starts: its first step carries start-up cost.
        with _without_usdt_lines(), profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=steps, repeat=1),
                     on_trace_ready=on_ready) as prof:
            step(record_function)
            prof.step()
            with around_profiled if around_profiled is not None else contextlib.nullcontext():
                for i in range(steps):
                    step(record_function)
                    if i < steps - 1:
                        prof.step()
            # The last active step's prof.step() stops the trace and runs on_ready (collection,
            # export): outside the window (torch/profiler/profiler.py, RECORD_AND_SAVE -> NONE).
            prof.step()
        time_unprofiled()

    att = _attribute(captured, labels, cuda=cuda)
    extra = att.pop("_extra")
    n = int(extra["steps"]) or 1
    step_ms = extra["step"] / n
    for row, label in zip(rows, labels):
        fwd = att[label]["fwd"] / n
        bwd = att[label]["bwd"] / n
        row.update(fwd_ms=fwd, bwd_ms=bwd, total_ms=fwd + bwd)
    layer_ms = sum(r["total_ms"] for r in rows)

    def remainder(name: str, fwd: float, bwd: float) -> dict[str, Any]:
        return {"index": len(rows), "layer": name, "kind": "remainder", "group": "remainder", "out_shape": "",
                "params": 0, "flops": 0, "fwd_flops": 0, "bwd_flops": 0, "act_bytes": 0,
                "fwd_ms": fwd, "bwd_ms": bwd, "total_ms": fwd + bwd}

    if cfg.mode == "train":
        rows.append(remainder("loss", att["loss"]["fwd"] / n, att["loss"]["bwd"] / n))
        rows.append(remainder("zero_grad", extra["zero_grad"] / n, 0.0))
        rows.append(remainder("optimizer", extra["optimizer"] / n, 0.0))
        # Backward work that no forward op claims (AccumulateGrad, the seed gradient, scheduling).
        rows.append(remainder("backward_other", 0.0, extra["backward_other"] / n))
    accounted = sum(r["total_ms"] for r in rows)
    other = step_ms - accounted
    if other < 0:
        # Only possible where row times are kernel times that overlap host time (CUDA).
        notes.append(f"rows exceed the step's wall time by {-other:.3f} ms (kernel times overlap); 'other' set to 0")
        other = 0.0
    rows.append(remainder("other", other, 0.0))
    for r in rows:
        r["gflops_per_s"] = r["flops"] / (r["total_ms"] * 1e6) if r["flops"] and r["total_ms"] > 0 else None

    unprofiled_ms = statistics.median(unprofiled)
    spread = (max(unprofiled) - min(unprofiled)) / unprofiled_ms
    if spread > NOISY_SPREAD:
        notes.append(f"unprofiled steps spread {100 * spread:.0f}% ({min(unprofiled):.1f} to {max(unprofiled):.1f} ms): "
                     "the machine's speed varied, so the overhead figure is within noise")
    return LayerProfile(
        cfg=cfg,
        rows=rows,
        coverage=layer_ms / step_ms if step_ms > 0 else 0.0,
        step_ms=sum(r["total_ms"] for r in rows),
        profiled_step_ms=statistics.median(_step_times(captured)) if captured else step_ms,
        unprofiled_step_ms=unprofiled_ms,
        steps=n,
        time_kind="cuda_kernel" if cuda else "cpu_wall",
        notes=notes,
    )


def _step_times(events: list[Any]) -> list[float]:
    return [e.cpu_time_total / 1e3 for e in events if e.name == "step" and _on_host(e)] or [0.0]
