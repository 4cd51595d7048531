"""Measure one benchmark case: cold step, warm-up, timed rounds, then the untimed extras.

Order inside a case, and why:

1. build the model under the case's backend switches, snapshot its initial weights;
2. the *cold* step: for a compiled model this is where torch.compile traces and generates
   code (after ``torch._dynamo.reset()`` and with inductor's on-disk caches off, so it is
   really cold), so it is timed on its own (``compile_time_s``) and never inside the rounds;
3. untimed warm-up rounds (lazy init, cuDNN autotuning, CUDA-graph recording);
4. the timed rounds, ``benchmark.pedantic(rounds=R, iterations=1)``, each ending with a device
   sync, inside the telemetry sampler so that its series covers exactly the timed window;
5. optional per-layer profile, then the correctness check: both outside the timing.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import torch

from alexnet.config import RunConfig
from alexnet.flops import flops_per_image
from bench.mfu import mfu_for
from alexnet.model import build_model
from alexnet.runtime import StepRunner, autocast_context, backend_switches, cpu_has_bf16, seed_everything
from bench.telemetry import Sampler
from bench.timing import NOISY_REL_IQR, PaceKernel, cold_step_time, make_round, summarize, warm_up

__all__ = ["correctness_check", "measure_case", "measure_loop_case", "run_guarded"]

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
        with torch.inference_mode(), autocast_context(cfg):
            logits = runner.model(x)
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


def _memory_after(cfg: RunConfig, telemetry: dict[str, Any], pace: PaceKernel) -> dict[str, Any]:
    if cfg.is_cuda:
        # The pace kernel's buffers are live through the timed rounds: not the case's memory.
        return {
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(cfg.device)) - pace.nbytes,
            "peak_memory_reserved_bytes": int(torch.cuda.max_memory_reserved(cfg.device)) - pace.nbytes,
            "memory_kind": "cuda_max_allocated",
        }
    rss = (telemetry.get("summary") or {}).get("rss_peak_bytes")
    return {
        "peak_memory_bytes": int(rss) if rss is not None else None,
        "peak_memory_reserved_bytes": None,
        # Whole-process RSS, sampled every telemetry interval during the timed rounds.
        "memory_kind": "cpu_peak_rss" if rss is not None else None,
    }


def measure_case(
    benchmark: Any,
    cfg: RunConfig,
    *,
    rounds: int,
    warmup: int,
    telemetry_interval_s: float,
    calibration: Callable[[str], dict[str, Any]],
    gpu_name: str | None,
    profile_layers: bool = False,
    emulated_bf16: bool = False,
) -> dict[str, Any]:
    """Run one case through ``benchmark.pedantic`` and return its ``extra_info``."""
    warnings: list[str] = []
    if emulated_bf16 and cfg.amp == "bf16" and not cfg.is_cuda and not cpu_has_bf16():
        warnings.append("bf16 emulated on this CPU (no AVX512-BF16/AMX): far slower than fp32, not representative")
    cpu_cal = calibration("cpu") if not cfg.is_cuda else None
    if cfg.is_cuda:
        calibration(cfg.device)  # run-level record of the machine's speed today
        torch.cuda.empty_cache()

    with _fresh_compile_state(cfg), backend_switches(cfg) as switches:
        seed_everything(cfg.seed)
        runner = StepRunner.build(cfg)
        weights = {k: v.detach().clone() for k, v in runner.eager_model.state_dict().items()}
        x, y = runner.random_batch(seed=cfg.seed)
        round_ = make_round(runner, x, y)

        with _cold_compile(cfg):
            cold_s = cold_step_time(round_, device=cfg.device)
        warm_up(round_, rounds=warmup)
        if cfg.is_cuda:
            torch.cuda.reset_peak_memory_stats(cfg.device)
        pace = PaceKernel(cfg.device)
        with Sampler(cfg.device, interval_s=telemetry_interval_s) as sampler:
            # Warm-up already done above, outside the sampler, so telemetry covers only these.
            benchmark.pedantic(round_, setup=pace, rounds=rounds, warmup_rounds=0, iterations=1)
            pace()  # the sample after the last round
        telemetry = sampler.result(images=rounds * cfg.batch_size)
        memory = _memory_after(cfg, telemetry, pace)

        extra: dict[str, Any] = {}
        if profile_layers:
            from bench.profiling import profile_layers as run_profile

            prof = run_profile(cfg, runner=runner, batch=(x, y))
            extra["layers"] = prof.to_records()
            extra["layers_coverage"] = prof.coverage
        correctness = correctness_check(runner, weights, x, y)

    metrics = _step_metrics(cfg, list(benchmark.stats.stats.data), cold_s=cold_s, cpu_cal=cpu_cal,
                            gpu_name=gpu_name, warnings=warnings)
    if telemetry.get("kind") == "unavailable":
        warnings.append(f"telemetry unavailable: {telemetry.get('reason')}")
    return {
        "config": cfg.flat(),
        "case_id": cfg.case_id(),
        "kind": "step",
        **metrics,
        "warmup_rounds": warmup,
        "pace": pace.record(),
        **memory,
        "correctness": correctness,
        "backend_switches": switches,
        "warnings": warnings,
        "telemetry": _json_safe(telemetry),
        **extra,
    }


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
    if mfu is not None and mfu > 1 and not cfg.is_cuda:
        warnings.append(f"MFU {mfu:.2f} above 1: the CPU's load changed since the run's calibration GEMM "
                        "(shared machine?); compare CPU MFU only within a quiet run")
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
        "compile_time_s": compile_time,
        "cold_step_s": cold_s,
    }


def measure_loop_case(
    benchmark: Any,
    cfg: RunConfig,
    *,
    case_id: str,
    rounds: int,
    warmup: int,
    telemetry_interval_s: float,
    calibration: Callable[[str], dict[str, Any]],
    gpu_name: str | None,
) -> dict[str, Any]:
    """A training-loop case: each timed round is one full step fed by the input pipeline.

    Same order as `measure_case` (cold step, warm-up, timed rounds in the sampler, then
    correctness), but every round takes its batch from ``cfg.pipeline``; the round's data wait
    (fetch + move, synchronised) and compute (the train step, synchronised) are recorded.
    """
    from bench.loopbench import INPUT_BOUND_FRACTION, LoopStepper

    warnings: list[str] = []
    cpu_cal = calibration("cpu") if not cfg.is_cuda else None
    if cfg.is_cuda:
        calibration(cfg.device)
        torch.cuda.empty_cache()
    with _fresh_compile_state(cfg), backend_switches(cfg) as switches:
        stepper = LoopStepper(cfg)
        runner = stepper.runner
        weights = {k: v.detach().clone() for k, v in runner.eager_model.state_dict().items()}
        with _cold_compile(cfg):
            cold_s = cold_step_time(stepper, device=cfg.device)
        warm_up(stepper, rounds=warmup)  # also starts DataLoader workers
        stepper.reset()
        if cfg.is_cuda:
            torch.cuda.reset_peak_memory_stats(cfg.device)
        pace = PaceKernel(cfg.device)
        with Sampler(cfg.device, interval_s=telemetry_interval_s) as sampler:
            benchmark.pedantic(stepper, setup=pace, rounds=rounds, warmup_rounds=0, iterations=1)
            pace()
        telemetry = sampler.result(images=rounds * cfg.batch_size)
        memory = _memory_after(cfg, telemetry, pace)
        loop = stepper.result()
        x, y = runner.random_batch(seed=cfg.seed)
        correctness = correctness_check(runner, weights, x, y)
    metrics = _step_metrics(cfg, list(benchmark.stats.stats.data), cold_s=cold_s, cpu_cal=cpu_cal,
                            gpu_name=gpu_name, warnings=warnings)
    if loop.input_bound:
        warnings.append(f"input bound: waiting for data took {loop.data_wait_fraction:.0%} of the loop "
                        f"(> {INPUT_BOUND_FRACTION:.0%})")
    if telemetry.get("kind") == "unavailable":
        warnings.append(f"telemetry unavailable: {telemetry.get('reason')}")
    return {
        "config": cfg.flat(),
        "case_id": case_id,
        "kind": "loop",
        **metrics,
        "warmup_rounds": warmup,
        "pace": pace.record(),
        **memory,
        "correctness": correctness,
        "backend_switches": switches,
        "pipeline": cfg.pipeline,
        "workers": cfg.workers,
        "data": loop.data_name,
        "data_wait_fraction": loop.data_wait_fraction,
        "input_bound": loop.input_bound,
        "median_wait_s": loop.summary()["median_wait_s"],
        "median_compute_s": loop.summary()["median_compute_s"],
        "warnings": warnings,
        "telemetry": _json_safe(telemetry),
    }


def run_guarded(benchmark: Any, cfg: RunConfig, *, case_id: str, bench_session: Any, node: Any,
                measure: Callable[[str | None], dict[str, Any]]) -> None:
    """Run one case's ``measure(gpu_name)`` the way the sweep needs, and save its extra_info.

    - an unsupported combination is skipped with its reason (and recorded in the run);
    - out of memory: the case's memory is freed, it is skipped and recorded, the sweep goes on;
    - an unrecoverable CUDA error (illegal address, device-side assert) stops the whole run;
    - a case that failed after its timed rounds is never saved without its extra_info.
    """
    import gc

    import pytest

    from bench.failures import is_fatal_device_error, is_oom
    from alexnet.runtime import unsupported_reason

    reason = unsupported_reason(cfg, allow_emulated_bf16=bench_session.allow_emulated_bf16)
    if reason:
        bench_session.record_skip(node, cfg, reason)
        pytest.skip(reason)
    gpu_name = torch.cuda.get_device_name(torch.device(cfg.device).index or 0) if cfg.is_cuda else None
    oom_reason = None
    try:
        extra = measure(gpu_name)
    except Exception as exc:
        benchmark.has_error = True
        if is_fatal_device_error(exc):
            pytest.exit(f"unrecoverable CUDA error in {case_id}: {exc}; the device state is lost, "
                        f"stopping the run (re-run the remaining cases in a fresh process)", returncode=3)
        if not is_oom(exc):
            raise
        oom_reason = f"out of memory: {str(exc).splitlines()[0]}"
    if oom_reason is not None:
        # Outside the except block, so the traceback's frames (and their tensors) are gone.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        bench_session.record_skip(node, cfg, oom_reason)
        pytest.skip(oom_reason)
    benchmark.extra_info.update(extra)


def _json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON; store them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
