"""Measure one benchmark case, inside its worker process (`bench.workers.worker`).

A `CaseSession` is one case's life in its worker, in phases the coordinator asks for:

1. `build`: under the case's backend switches, build the model, keep a snapshot of its
   initial weights *on the CPU* (a device copy would add one copy of the weights to the peak),
   make the batch, note the idle worker's RSS, then the *cold* step: for a compiled model this
   is where torch.compile traces and generates code, timed on its own (``compile_time_s``);
   it is cold by construction, because the worker starts with empty inductor and Triton cache
   directories of its own (set by the coordinator before torch touches a device); then the
   untimed warm-up rounds (lazy init, cuDNN autotuning, CUDA-graph recording). A compiled CUDA
   case first warms inductor's compile pool (`warm_compile_pool`), outside the clock.
2. `rounds`: timed rounds, each one step ending with a device sync, each preceded by a pace
   GEMM sample (and one after the last), with this process's own clock. Right before the
   first round: ``empty_cache`` and the peak reset on CUDA; the kernel's peak-RSS mark
   (``VmHWM``) reset on a CPU; the foreign-load probe starts.
   Optionally (`timer_check`), more rounds interleaved with ``torch.utils.benchmark.Timer``
   measurements of the same step, kept apart from the case's samples.
3. `telemetry_window` (CUDA): back-to-back steps for several seconds, inside the NVML sampler,
   so energy per image comes from the energy counter over a window NVML can resolve. Timing
   comes from the rounds only. On a CPU the sampler covers the rounds instead.
4. `finish`: memory, telemetry, foreign load, optional per-layer profile, the correctness
   check against fp32 eager, and the case's ``extra_info`` as plain data.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from typing import Any, Iterator

import torch

from alexnet.config import RunConfig
from alexnet.arch import flops_per_image
from alexnet.model import build_model
from alexnet.runtime import StepRunner, autocast_context, backend_switches, cpu_has_bf16, seed_everything, synchronize
from bench.instruments.foreign import ForeignLoad, foreign_notices, foreign_warnings
from bench.instruments.mfu import ABOVE_ONE_REASON, compute_dtype, gemm_rate_fraction, mfu_for
from bench.instruments.timing import NOISY_REL_IQR, PaceKernel, cold_step_time, summarize, timed_rounds, warm_up
from bench.workloads.workload import CaseOptions, Workload

__all__ = ["CaseSession", "UnsupportedCase", "correctness_check", "cuda_facts", "rss_bytes"]

# Compile modes that replay CUDA graphs: their intermediates live in the graph's private pool,
# which torch.cuda.max_memory_allocated does not count while graphs replay (docs/measurement-notes.md,
# "GPU behaviours that bite").
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class UnsupportedCase(Exception):
    """The case cannot run as asked on this machine (the reason is the message)."""


def cuda_facts() -> dict[str, Any]:
    """What the coordinator needs to skip CUDA cases without touching a device itself."""
    if not torch.cuda.is_available():
        return {"available": False, "count": 0, "devices": []}
    devices = []
    for i in range(torch.cuda.device_count()):
        with torch.cuda.device(i):
            devices.append({"index": i, "name": torch.cuda.get_device_name(i), "bf16": bool(torch.cuda.is_bf16_supported())})
    return {"available": True, "count": len(devices), "devices": devices}


def _proc_status_bytes(key: str) -> int | None:
    """A ``kB`` line of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    return _proc_status_bytes("VmRSS")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS.

    proc(5): writing 5 to /proc/[pid]/clear_refs "resets the peak resident set size ("high
    water mark") to the process's current resident set size value" (Linux 4.0+). Checked on
    this VM. The peak read back afterwards is the kernel's exact one, not a 100 ms sample.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def correctness_check(runner: StepRunner, weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The case against fp32 eager on the same batch and the same (initial) weights.

    Both sides run the forward in eval mode, because dropout masks are drawn differently by
    eager PyTorch and by inductor's generated code; without dropout the two compute the same
    function, so a difference is the config's numerics (AMP, TF32, compile), not sampling.
    For a train case this is the forward of its first step, before any update.
    """
    cfg = runner.cfg
    model = runner.eager_model
    was_training = model.training
    model.load_state_dict(weights)  # undo the timed rounds' updates: same weights as the reference
    model.eval()
    try:
        synchronize(cfg.device)
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast_context(cfg):
            logits = runner.model(x)
        synchronize(cfg.device)
        forward_s = time.perf_counter() - t0
    finally:
        model.train(was_training)
    logits = logits.float()
    loss = torch.nn.functional.cross_entropy(logits, y)

    ref = build_model(cfg.variant, init=cfg.init, resolution=cfg.resolution)
    ref.load_state_dict(weights)
    ref = ref.to(cfg.device).eval()
    # The reference is true fp32: TF32 off whatever the case asked for.
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            ref_logits = ref(x.contiguous()).float()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    ref_loss = torch.nn.functional.cross_entropy(ref_logits, y)
    loss_rel = (loss - ref_loss).abs() / ref_loss.abs().clamp_min(1e-12)
    return {
        "reference": "fp32 eager",
        "compared": "eval-mode forward (no dropout) on the case's batch and initial weights",
        "loss": float(loss),
        "reference_loss": float(ref_loss),
        "loss_rel_diff": float(loss_rel),
        "max_abs_logits_diff": float((logits - ref_logits).abs().max()),
        # A compiled train case's forward under eval() and inference_mode fails dynamo's guards on
        # the training flag and grad mode: a second graph, compiled here. Its time (with the one
        # forward) is this check's own figure, never part of compile_time_s (that is the cold
        # step's). Null when eager.
        "correctness_compile_s": forward_s if cfg.compile != "off" else None,
    }


@contextlib.contextmanager
def _fresh_compile_state(cfg: RunConfig) -> Iterator[None]:
    """Each compiled case starts from nothing, so its compile time is cold and its code its own.

    Dynamo caches compiled frames per code object; every case compiles the same forward, and
    past ``torch._dynamo.config.cache_size_limit`` recompiles it would fall back to eager
    without a word. Inductor keeps generated kernels in memory and on disk (in /tmp), so a
    case after a similar one, or a second run, would compile from cache: the case gets its
    own empty cache directory for its whole duration.
    """
    if cfg.compile == "off":
        yield
        return
    import os
    import tempfile

    import torch._inductor.utils as inductor_utils

    torch._dynamo.reset()
    if hasattr(inductor_utils, "clear_inductor_caches"):
        inductor_utils.clear_inductor_caches()
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="alexnet-inductor-") as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp
        try:
            yield
        finally:
            torch._dynamo.reset()  # drop compiled code that refers to files in tmp
            if saved is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def warm_compile_pool(timeout_s: float = 120.0) -> dict[str, Any]:
    """Start inductor's compile worker pool and wait until it answers, before a cold compile.

    Inductor compiles a Triton kernel in its process pool only once the pool has answered a
    no-op job; until then it compiles serially in the calling process
    (torch/_inductor/async_compile.py: ``AsyncCompile.triton`` asks ``use_process_pool()``,
    which submits ``_get_ready`` once and returns whether it is done). The pool starts with the
    first compile, so how much of a cold compile ran serially changed from run to run, and so
    did ``compile_time_s``. ``AsyncCompile.warm_pool()`` then ``wait_pool_ready()`` make every
    cold compile use the pool from its first kernel. The pool is this worker's child (its
    process group goes when the worker goes), and it is handed the case's fresh cache
    directories with every job (``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``: the same file).

    Only Triton (CUDA) kernels go through the process pool; a CPU case's C++ kernels compile
    in a thread pool (``AsyncCompile.cpp``), so the caller warms for CUDA cases only.
    Returns ``{"warmed", "seconds", "workers"}`` (+ ``"reason"`` when it was not warmed).
    """
    from torch._inductor.async_compile import AsyncCompile, get_compile_threads

    t0 = time.perf_counter()
    workers = get_compile_threads()
    if workers <= 1:
        return {"warmed": False, "seconds": 0.0, "workers": workers,
                "reason": "compile_threads <= 1: inductor compiles in this process"}
    try:
        AsyncCompile.warm_pool()
        if hasattr(AsyncCompile, "wait_pool_ready"):
            AsyncCompile.wait_pool_ready(timeout=timeout_s)
        else:  # what wait_pool_ready does, in torch versions without it
            AsyncCompile.use_process_pool()
            ready = getattr(AsyncCompile, "_ready_future", None)
            if ready is not None:
                ready.result(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - a cold compile still works without the pool
        return {"warmed": False, "seconds": time.perf_counter() - t0, "workers": workers,
                "reason": f"{type(exc).__name__}: {exc}"}
    return {"warmed": True, "seconds": time.perf_counter() - t0, "workers": workers}


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (``counters["stats"]["unique_graphs"]``,
    bumped once per compiled frame in torch/_dynamo/convert_frame.py; ``torch._dynamo.reset()``
    does not clear it, so a case counts from its build on)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@contextlib.contextmanager
def _cold_compile(cfg: RunConfig) -> Iterator[None]:
    """Make the first step's compilation really cold: no inductor FX-graph or AOT-autograd
    cache hits from an earlier case or an earlier run (they live on disk, in /tmp)."""
    if cfg.compile == "off":
        yield
        return
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    with contextlib.ExitStack() as stack:
        stack.enter_context(inductor_config.patch(fx_graph_cache=False))
        if hasattr(functorch_config, "enable_autograd_cache"):
            stack.enter_context(functorch_config.patch(enable_autograd_cache=False))
        yield


class CaseSession:
    """One case in its worker: `build`, then `rounds` (any number of calls), then `finish`.

    What a round is comes from the workload type (`bench.workloads.workload`), chosen once from
    ``options.kind``.
    """

    def __init__(self, cfg: RunConfig, options: CaseOptions | None = None) -> None:
        options = options or CaseOptions()
        self.cfg = cfg
        self.steps_per_round = options.steps_per_round
        self.check_correctness = options.correctness
        self.warmup_min_s = options.warmup_min_s
        self.workload: Workload = options.workload(cfg, steps=options.steps_per_round)
        self.case_id = options.case_id or self.workload.case_id(cfg)
        self.warmup = options.warmup
        self.telemetry_interval_s = options.telemetry_interval_s
        self.profile_layers = options.profile_layers and self.workload.profiles_layers
        self.allow_emulated_bf16 = options.allow_emulated_bf16
        self.cpu_calibration = options.cpu_calibration
        self.gpu_name = options.gpu_name
        self.own_pids = set(options.own_pids or ())
        self.samples: list[float] = []
        self.warnings: list[str] = []
        self._stack = contextlib.ExitStack()
        self._sampler: Any = None
        self._foreign: Any = None
        self._telemetry: dict[str, Any] | None = None
        self._window: dict[str, Any] | None = None
        self._timer_check: dict[str, Any] | None = None
        self.compile_pool: dict[str, Any] | None = None

    # --- 1. build ----------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        from alexnet.runtime import unsupported_reason

        cfg = self.cfg
        reason = unsupported_reason(cfg, allow_emulated_bf16=self.allow_emulated_bf16)
        if reason:
            raise UnsupportedCase(reason)
        if self.allow_emulated_bf16 and cfg.amp == "bf16" and not cfg.is_cuda and not cpu_has_bf16():
            self.warnings.append("bf16 emulated on this CPU (no AVX512-BF16/AMX): far slower than fp32, not representative")
        if cfg.is_cuda and self.gpu_name is None:
            self.gpu_name = torch.cuda.get_device_name(torch.device(cfg.device).index or 0)
        t0 = time.perf_counter()
        # In a worker the caches are fresh already (the coordinator set empty cache dirs);
        # this also makes --isolation none as cold as one process can be.
        self._stack.enter_context(_fresh_compile_state(cfg))
        self.switches = self._stack.enter_context(backend_switches(cfg))
        seed_everything(cfg.seed)
        self.workload.build()
        self.runner = self.workload.runner
        self.round = self.workload.round
        # On the CPU, so the snapshot is not one more copy of the weights in the device's peak.
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in self.runner.eager_model.state_dict().items()}
        self.pace = PaceKernel(cfg.device)
        build_s = time.perf_counter() - t0
        self.idle_rss = rss_bytes()  # the worker after the build, before the first step
        step_pid: list[int] = []

        def first() -> None:
            step_pid.append(os.getpid())
            self.workload.one()  # one step, whatever a timed round holds

        self._graphs0 = compiled_graphs() if cfg.compile != "off" else 0
        if cfg.is_cuda and cfg.compile != "off":
            self.compile_pool = warm_compile_pool()  # before the clock: compile_time_s is the compile's own
        with _cold_compile(cfg):
            self.cold_s = cold_step_time(first, device=cfg.device)
        self.warmup_done = warm_up(self.round, rounds=self.warmup, min_seconds=self.warmup_min_s)
        self.workload.after_warmup()
        return {"build_s": build_s, "cold_step_s": self.cold_s, "idle_rss_bytes": self.idle_rss,
                "step_pid": step_pid[0], "worker_pid": os.getpid()}

    # --- 2. rounds ---------------------------------------------------------------------
    def _start_rounds(self) -> None:
        cfg = self.cfg
        gc.collect()
        if cfg.is_cuda:
            # Autotuning workspaces and freed warm-up blocks out of the reserved peak; then one
            # untimed step, so the first timed round does not pay for re-growing the caching
            # allocator's pool that empty_cache() just returned to the driver. Untested on GPU.
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(cfg.device)
            self.workload.one()
            self.workload.after_warmup()  # a loop case's data-wait record starts with the timed rounds
        else:
            self.peak_rss_reset = _reset_peak_rss()
        if not cfg.is_cuda and self.telemetry_interval_s:
            from bench.instruments.telemetry import Sampler

            self._sampler = Sampler(cfg.device, interval_s=self.telemetry_interval_s).__enter__()
        self._foreign = _start_foreign(cfg.device, self.own_pids)
        self._rounds_t0 = time.perf_counter()

    def rounds(self, n: int, *, pace: bool = True) -> dict[str, Any]:
        """``n`` timed rounds: [pace, round] x n, then one pace sample after the last round."""
        if not self.samples:
            self._start_rounds()
        pace_before = len(self.pace.samples)
        out = timed_rounds(self.round, n, pace=self.pace if pace else None, steps_per_round=self.steps_per_round)
        self.samples.extend(out)
        return {"samples": out, "pace": self.pace.samples[pace_before:]}

    def timer_check(self, pairs: int = 10, min_run_time: float = 0.05) -> dict[str, Any]:
        """The suite's blocked timing against ``torch.utils.benchmark.Timer.blocked_autorange``.

        ``pairs`` times: a Timer measurement of the unsynchronised step (its default timer
        synchronises the device at both ends of each block of back-to-back calls:
        torch/utils/benchmark/utils/timer.py, ``timer()``), then one of the suite's own rounds
        (k back-to-back steps, one sync, divided by k). Interleaved, so drift hits both alike;
        neither enters the case's samples. Returns the median of the per-pair ratios
        (suite / Timer) and both sides' medians, seconds per step.
        """
        import numpy as np

        from bench.instruments.timing import timer_samples

        if not self.samples:
            raise RuntimeError("timer_check before the timed rounds")
        ratios, suite, timer = [], [], []
        for _ in range(pairs):
            reference = float(np.mean(timer_samples(self.workload.step, min_run_time=min_run_time)))
            [per_step] = timed_rounds(self.round, 1, pace=None, steps_per_round=self.steps_per_round)
            ratios.append(per_step / reference)
            suite.append(per_step)
            timer.append(reference)
        self._timer_check = {
            "pairs": pairs, "ratio_median": float(np.median(ratios)), "ratios": ratios,
            "suite_step_s": float(np.median(suite)), "timer_step_s": float(np.median(timer)),
            "steps_per_round": self.steps_per_round,
            "what": "suite round / k vs torch.utils.benchmark.Timer.blocked_autorange, interleaved in pairs",
        }
        return dict(self._timer_check)

    # --- 3. telemetry window -----------------------------------------------------------
    def telemetry_window(self, seconds: float) -> dict[str, Any]:
        """Back-to-back steps for ``seconds`` inside the NVML sampler (no pace, no per-step sync)."""
        from bench.instruments.telemetry import Sampler

        cfg = self.cfg
        step = self.workload.step
        steps = 0
        synchronize(cfg.device)
        with Sampler(cfg.device, interval_s=self.telemetry_interval_s or 0.1) as sampler:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                step()
                steps += 1
                if cfg.is_cuda and steps % 8 == 0:
                    synchronize(cfg.device)  # keep the queue short, so the window's end is its work's end
            synchronize(cfg.device)
            wall = time.perf_counter() - t0
        self._telemetry = sampler.result(images=steps * cfg.batch_size)
        self._window = {"seconds": wall, "steps": steps, "images": steps * cfg.batch_size}
        return dict(self._window)

    # --- 4. finish ---------------------------------------------------------------------
    def _memory(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.is_cuda:
            graphs = cfg.compile in CUDA_GRAPH_MODES
            # The pace kernel's buffers are live through the rounds: not the case's memory.
            allocated = int(torch.cuda.max_memory_allocated(cfg.device)) - self.pace.nbytes
            reserved = int(torch.cuda.max_memory_reserved(cfg.device)) - self.pace.nbytes
            mem = {
                # A CUDA-graph case keeps its replayed intermediates in the graph's private pool,
                # which the allocated peak does not show: its figure is the reserved peak, a kind
                # of its own, never drawn or judged as if it used less than an eager case.
                "peak_memory_bytes": reserved if graphs else allocated,
                "peak_memory_allocated_bytes": allocated,
                "peak_memory_reserved_bytes": reserved,
                "memory_kind": "cuda_max_reserved_cudagraphs" if graphs else "cuda_max_allocated",
                "cuda_graph_pool": graphs,
            }
            if graphs:
                mem["memory_note"] = ("CUDA-graph case: replayed intermediates live in the graph's private pool, "
                                      "which the allocated peak does not show; peak_memory_bytes is the reserved peak")
            return mem
        peak = _proc_status_bytes("VmHWM") if getattr(self, "peak_rss_reset", False) else None
        rise = peak - self.idle_rss if peak is not None and self.idle_rss is not None else None
        return {
            # The worker's own peak RSS during the rounds (kernel high-water mark), and its rise
            # over the idle worker (built, before the first step): the case's own memory.
            "peak_memory_bytes": peak,
            "peak_memory_reserved_bytes": None,
            "memory_kind": "cpu_peak_rss_worker" if peak is not None else None,
            "idle_rss_bytes": self.idle_rss,
            "memory_rise_bytes": rise,
        }

    def finish(self) -> dict[str, Any]:
        cfg = self.cfg
        if not self.samples:
            raise RuntimeError("finish before any timed round")
        rounds_wall = time.perf_counter() - self._rounds_t0
        foreign = self._foreign.stop() if self._foreign is not None else None
        if self._sampler is not None:
            self._sampler.__exit__(None, None, None)
            steps = len(self.samples) * self.steps_per_round
            self._telemetry = self._sampler.result(images=steps * cfg.batch_size)
            self._window = {"seconds": rounds_wall, "steps": steps, "images": steps * cfg.batch_size,
                            "what": "the timed rounds"}
            self._sampler = None
        memory = self._memory()
        telemetry = self._telemetry or {"kind": "unavailable", "reason": "no telemetry window was run",
                                        "interval_s": None, "summary": {}, "series": []}
        extra: dict[str, Any] = {}
        if self.profile_layers:
            from bench.instruments.profiling import profile_layers as run_profile

            prof = run_profile(cfg, runner=self.runner, batch=self.workload.batch())
            extra["layers"] = prof.to_records()
            extra["layers_coverage"] = prof.coverage
        if cfg.compile != "off":
            from torch._dynamo.utils import counters

            extra["compile_counters"] = {k: {kk: int(vv) for kk, vv in v.items()} for k, v in counters.items() if v}
        graphs_timed = compiled_graphs() - self._graphs0 if cfg.compile != "off" else 0
        x, y = self.workload.batch()
        if self.check_correctness:
            correctness = correctness_check(self.runner, self.weights, x, y)
        else:
            correctness = {"skipped": "--no-correctness"}
        if cfg.compile != "off":
            # Dynamo's graphs over the worker's whole life: the timed path's (cold step, warm-up,
            # rounds, telemetry window) and the correctness check's, if it compiled one more.
            extra["compiled_graphs"] = {"timed_path": graphs_timed, "worker_total": compiled_graphs() - self._graphs0}
            extra["compile_pool"] = self.compile_pool
        metrics = _step_metrics(cfg, list(self.samples), cold_s=self.cold_s, cpu_cal=self.cpu_calibration,
                                gpu_name=self.gpu_name, warnings=self.warnings)
        if telemetry.get("kind") == "unavailable":
            self.warnings.append(f"telemetry unavailable: {telemetry.get('reason')}")
        foreign_warn = foreign_warnings(foreign) if foreign is not None else []
        self.warnings.extend(foreign_warn)
        out = {
            "config": cfg.flat(),
            "case_id": self.case_id,
            "kind": self.workload.kind,
            **metrics,
            "warmup_rounds": self.warmup_done["rounds"],
            "warmup_s": self.warmup_done["seconds"],
            "steps_per_round": self.steps_per_round,
            "pace": self.pace.record(),
            **memory,
            "correctness": correctness,
            "backend_switches": self.switches,
            "warnings": self.warnings,
            "telemetry": telemetry,
            "telemetry_window": self._window,
            "timer_check": self._timer_check,
            "foreign_load": foreign,
            "foreign_warnings": foreign_warn,
            "foreign_notices": foreign_notices(foreign),
            **extra,
        }
        out.update(self.workload.record(self.warnings))
        self.close()
        return _json_safe(out)

    def close(self) -> None:
        self._stack.close()


def _start_foreign(device: str, own_pids: set[int]) -> Any:
    """The foreign-load probe (`bench.instruments.foreign`) around the rounds: the suite's processes
    and every descendant of theirs (inductor's compile pool included) are its own."""
    mine = set(own_pids) | {os.getpid()}

    def own() -> set[int]:
        pids = set(mine)
        try:
            import psutil

            for pid in list(mine):
                try:
                    pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
                except psutil.Error:
                    pass
        except ImportError:
            pass
        return pids

    probe = ForeignLoad(device, own)
    probe.start()
    return probe


def _step_metrics(cfg: RunConfig, samples: list[float], *, cold_s: float, cpu_cal: dict[str, Any] | None,
                  gpu_name: str | None, warnings: list[str]) -> dict[str, Any]:
    """Throughput, FLOPs, MFU and compile time from the timed rounds (seconds per step)."""
    st = summarize(samples)
    img_st = summarize([cfg.batch_size / s for s in samples])
    if st.rel_iqr > NOISY_REL_IQR:
        warnings.append(f"IQR/median {st.rel_iqr:.0%} above {NOISY_REL_IQR:.0%}: the median is not precise")
    fpi = flops_per_image(cfg.variant, cfg.resolution, train=cfg.mode == "train")
    achieved = fpi * img_st.median / 1e12
    mfu, peak, source = mfu_for(cfg, achieved_tflops=achieved, gpu_name=gpu_name, cpu_calibration=cpu_cal)
    if mfu is not None and mfu > 1:
        warnings.append(f"MFU {mfu:.2f} above 1 against the {compute_dtype(cfg)} peak: {ABOVE_ONE_REASON}")
    compile_time = None
    if cfg.compile != "off":
        # The cold step minus one warm step: what compilation itself cost.
        compile_time = cold_s - st.median
        if compile_time < 0:
            warnings.append(f"cold step ({cold_s:.3f} s) faster than the median step: compile time unreliable")
    return {
        "images_per_s": img_st.median,
        "images_per_s_iqr": img_st.iqr,
        "step_time_s": st.median,
        "step_time_iqr_s": st.iqr,
        "rounds": st.n,
        "flops_per_image": fpi,
        "achieved_tflops": achieved,
        "mfu": mfu,
        "mfu_peak_tflops": peak,
        "mfu_peak_source": source,
        "gemm_rate_fraction": None if cfg.is_cuda else gemm_rate_fraction(achieved, cpu_cal),
        "compile_time_s": compile_time,
        "cold_step_s": cold_s,
    }


def _json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON; store them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
