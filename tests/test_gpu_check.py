"""``alexnet-bench gpu-check``: what can be checked without a GPU.

The command itself needs a CUDA GPU (exit 2 here); its item runner (pass, fail, error, timeout
with the item's processes killed, the budget), the parsing and judging of saved runs, and the
analytic memory estimate are tested on the CPU. The GPU figures themselves are untested on GPU.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench.cli.commands import gpu_check as gc
from bench.cli.commands.gpu_check import Context, Item, Outcome, SuiteRun, run_items
from bench.instruments import power
from bench.instruments.memory_model import train_memory_estimate

PY = sys.executable


# --- the command line -------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: gpu-check would run")
def test_exits_2_with_one_line_without_a_gpu(cli) -> None:
    r = cli("gpu-check", timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0], r.stderr


def test_list_names_every_item_with_its_time_limit(cli) -> None:
    r = cli("gpu-check", "--list", timeout=120)
    assert r.returncode == 0, r.stderr
    for item in gc.ITEMS:
        assert f"{item.name:<16} {item.timeout_s:>4.0f} s" in r.stdout
    # The items, in the order of docs/bench.md's gpu-check table.
    assert [i.name for i in gc.ITEMS] == ["deterministic", "cudnn-benchmark", "cudagraphs", "cold-compile", "mfu",
                                          "profiler", "nvml-power", "memory", "ddp-nccl"]


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "gpu-check.json").write_text("{}")
    cases = [
        (["--only", "mfu,bogus"], "--only 'mfu,bogus' is not valid; choose from deterministic, cudnn-benchmark,"),
        (["--out", str(tmp_path / "old")], "already exists and is not an empty folder"),
        (["--budget", "0"], "--budget 0 is not valid"),
    ]
    for args, message in cases:
        r = cli("gpu-check", *args, timeout=120)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    assert (tmp_path / "old" / "gpu-check.json").read_text() == "{}"  # untouched


# --- the item runner ------------------------------------------------------------------------


class _Stamped(io.StringIO):
    """An output stream that remembers when each line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str]] = []

    def write(self, s: str) -> int:
        if s.strip():
            self.stamps.append((time.monotonic(), s))
        return super().write(s)


def _gone(pid: int) -> bool:
    """True when ``pid`` has ended (no process, or a zombie waiting for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_items_pass_fail_error_and_timeout_with_their_processes_killed(tmp_path: Path) -> None:
    starts: dict[str, float] = {}
    pids = tmp_path / "pids"

    def passing(ctx: Context) -> Outcome:
        starts["passing"] = time.monotonic()
        p = ctx.run([PY, "-c", "print('figure 42')"], log="child")
        return Outcome(p.returncode == 0 and "figure 42" in p.output, "figure 42")

    def failing(ctx: Context) -> Outcome:
        starts["failing"] = time.monotonic()
        return Outcome(False, "figure 2 > limit 1")

    def broken(ctx: Context) -> Outcome:
        raise KeyError("extra_info")

    # A child that sleeps past the limit, with a grandchild in its process group and one that
    # left it (a session of its own, as torchrun's workers do): all three must die.
    sleeper = textwrap.dedent(f"""
        import subprocess, sys, time
        a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        open({str(pids)!r}, "w").write(f"{{a.pid}} {{b.pid}}")
        time.sleep(60)
    """)

    def sleepy(ctx: Context) -> Outcome:
        ctx.run([PY, "-c", sleeper], log="sleeper")
        return Outcome(True, "unreachable")

    items = [Item("passing", passing, 30, ""), Item("failing", failing, 30, ""), Item("broken", broken, 30, ""),
             Item("sleepy", sleepy, 2.0, "")]
    out = _Stamped()
    t0 = time.monotonic()
    results = run_items(items, root=tmp_path / "root", budget_s=120, out=out)
    assert [r.status for r in results] == ["pass", "fail", "error", "timeout"]
    sleepy_r = results[-1]
    assert 2.0 <= sleepy_r.seconds < 2.0 + 3.0, sleepy_r.seconds  # killed at its limit, not at 60 s
    assert time.monotonic() - t0 < 30
    assert "timeout after 2 s (limit 2 s)" in sleepy_r.figure
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), f"process {pid} outlived its item"
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("PASS  passing") and "figure 42" in lines[0]
    assert lines[1].startswith("FAIL  failing") and "figure 2 > limit 1" in lines[1]
    assert lines[2].startswith("FAIL  broken") and "KeyError" in lines[2]
    assert lines[3].startswith("FAIL  sleepy") and "timeout" in lines[3]
    # Each line is out as soon as its item is done, before the next item starts.
    assert out.stamps[0][0] <= starts["failing"]
    assert (tmp_path / "root" / "passing" / "child.log").read_text().startswith("$ ")  # its output is kept


def test_the_budget_caps_the_items(tmp_path: Path) -> None:
    def slow(ctx: Context) -> Outcome:
        ctx.run([PY, "-c", "import time; time.sleep(30)"], log="slow")
        return Outcome(True, "unreachable")

    def never(ctx: Context) -> Outcome:
        raise AssertionError("started after the budget was spent")

    out = io.StringIO()
    t0 = time.monotonic()
    results = run_items([Item("slow", slow, 60, ""), Item("next", never, 60, "")], root=tmp_path, budget_s=1.5, out=out)
    assert time.monotonic() - t0 < 6
    assert [r.status for r in results] == ["timeout", "not_run"]
    assert "cut by --budget" in results[0].figure
    assert results[1].figure.startswith("NOT RUN (budget)") and "NOT RUN (budget)  next" in out.getvalue()


def test_the_cuda_runtime_is_asked_in_a_child_and_its_error_is_one_line() -> None:
    import torch

    err = gc.cuda_runtime_error()
    if torch.cuda.is_available():
        assert err is None
    else:  # this CPU machine: a CUDA build without a driver, or a CPU-only build
        assert err and "\n" not in err, err
    assert not torch.cuda.is_initialized()  # asked of a child, never of this process


def test_a_shared_suite_run_is_made_once(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_run(self, cmd, *, log, env=None, cwd=None):
        calls.append(cmd)
        storage = Path(next(c for c in cmd if c.startswith("--benchmark-storage=")).split("file://", 1)[1])
        name = next(c for c in cmd if c.startswith("--benchmark-save=")).split("=", 1)[1]
        (storage / "Linux-CPython-3.11-64bit").mkdir(parents=True)
        (storage / "Linux-CPython-3.11-64bit" / f"0001_{name}.json").write_text(json.dumps({"benchmarks": []}))
        return gc.Proc(0, "1 passed", tmp_path / "log")

    monkeypatch.setattr(Context, "run", fake_run)
    shared: dict = {}
    a = Context(root=tmp_path, item="mfu", deadline=time.monotonic() + 60, shared=shared)
    b = Context(root=tmp_path, item="memory", deadline=time.monotonic() + 60, shared=shared)
    r1 = a.suite("tf32-bf16", gc.MFU_RUN)
    r2 = b.suite("tf32-bf16", gc.MFU_RUN)
    assert r1 is r2 and len(calls) == 1 and r1.doc == {"benchmarks": []}
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pytest", str(gc.REPO / "bench")]
    assert cmd[cmd.index("--preset") + 1] == "tiny" and cmd[cmd.index("--devices") + 1] == "cuda"
    assert cmd[cmd.index("--channels-last") + 1] == "off" and cmd[cmd.index("--telemetry-seconds") + 1] == "0"


@pytest.mark.slow
def test_a_suite_run_as_a_user_runs_it_is_saved_and_read(tmp_path: Path) -> None:
    """The real invocation on the CPU: one tiny inference case, saved and found by its config."""
    ctx = Context(root=tmp_path, item="t", deadline=time.monotonic() + 300, shared={})
    run = ctx.suite("cpu", ["--modes", "inference"], device="cpu")
    assert run.returncode == 0, run.output[-2000:]
    case = gc.need_case(run, mode="inference", device="cpu", channels_last=False)
    assert case["extra_info"]["step_time_s"] > 0
    assert len(run.doc["benchmarks"]) == 1
    with pytest.raises(gc.CheckFailed, match="no saved case with mode=train"):
        gc.need_case(run, mode="train")


# --- reading and judging saved runs -----------------------------------------------------------


def _case(**extra) -> dict:
    config = {"mode": "train", "variant": "d2l", "batch_size": 128, "resolution": "224x224", "amp": "off",
              "tf32": False, "compile": "off", "device": "cuda", **extra.pop("config", {})}
    return {"name": "x", "extra_info": {"config": config, "case_id": "id", **extra}}


def _run(doc, output="", rc=0) -> SuiteRun:
    return SuiteRun(rc, output, doc, Path("/tmp/log"))


def test_need_case_says_why_a_case_is_missing() -> None:
    doc = {"benchmarks": [_case(step_time_s=0.01)],
           "alexnet": {"skipped": [{"case_id": "train-det", "config": {"deterministic": True},
                                    "reason": "out of memory: CUDA out of memory"}]}}
    assert gc.need_case(_run(doc), amp="off")["extra_info"]["step_time_s"] == 0.01
    with pytest.raises(gc.CheckFailed, match="train-det was skipped: out of memory"):
        gc.need_case(_run(doc), deterministic=True)
    out = "....\nE   RuntimeError: CUDA error: an illegal memory access was encountered\nFAILED bench/test_matrix.py"
    with pytest.raises(gc.CheckFailed, match="no run was saved .* E   RuntimeError: CUDA error: an illegal memory"):
        gc.need_case(_run(None, out, rc=3), amp="off")


def test_judge_cudnn_benchmark_wants_two_workers() -> None:
    off = _case(step_time_s=0.010, isolation={"mode": "process", "worker_pid": 101})
    on = _case(step_time_s=0.008, isolation={"mode": "process", "worker_pid": 102}, config={"cudnn_benchmark": True})
    ok = gc.judge_cudnn_benchmark(off, on)
    assert ok.passed and "off 10.00 ms, on 8.00 ms per step (on/off 0.800); workers 101 and 102" in ok.figure
    on["extra_info"]["isolation"]["worker_pid"] = 101
    assert not gc.judge_cudnn_benchmark(off, on).passed
    del off["extra_info"]["isolation"], on["extra_info"]["isolation"]
    assert "not recorded" in gc.judge_cudnn_benchmark(off, on).figure


def test_judge_mfu_fails_at_or_above_one_and_does_not_judge_fp32() -> None:
    cases = [_case(mfu=1.3), _case(mfu=0.4, config={"tf32": True}), _case(mfu=0.3, config={"amp": "bf16"}),
             _case(mfu=0.31, config={"amp": "bf16", "tf32": True})]
    ok = gc.judge_mfu(cases)
    assert ok.passed and "fp32 1.30 (not judged" in ok.figure and "tf32 0.40" in ok.figure
    cases[1]["extra_info"]["mfu"] = 1.02
    bad = gc.judge_mfu(cases)
    assert not bad.passed and "tf32: MFU 1.02 not in (0, 1)" in bad.figure
    cases[1]["extra_info"]["mfu"] = None  # an unknown GPU: no datasheet peak
    assert not gc.judge_mfu(cases).passed


def test_judge_cudagraphs_reads_the_counter_then_the_log() -> None:
    default = _case(step_time_s=0.0020, config={"compile": "default"})

    def ro(step, counters):
        e = {"step_time_s": step, "config": {"compile": "reduce-overhead"}}
        if counters is not None:
            e["compile_counters"] = counters
        return _case(**e)

    good = gc.judge_cudagraphs(ro(0.0010, {"inductor": {"cudagraph_skips": 0}}), default, "")
    assert good.passed and "0.50x" in good.figure and "cudagraph_skips 0" in good.figure
    assert gc.judge_cudagraphs(ro(0.0010, {"inductor": {"fxgraph_cache_miss": 3}}), default, "").passed  # no skip counted
    skipped = gc.judge_cudagraphs(ro(0.0010, {"inductor": {"cudagraph_skips": 2}}), default, "")
    assert not skipped.passed and "2 cudagraph skip(s)" in skipped.figure
    slow = gc.judge_cudagraphs(ro(0.0022, {"inductor": {"cudagraph_skips": 0}}), default, "")
    assert not slow.passed and "1.10x default compile's step (limit 1.05x)" in slow.figure
    unknown = gc.judge_cudagraphs(ro(0.0010, None), default, "1 passed")
    assert unknown.passed and "unknown" in unknown.figure
    log = "W1130 cudagraph_utils.py:401] [__cudagraphs] skipping cudagraphs due to mutated inputs (1 instances)"
    logged = gc.judge_cudagraphs(ro(0.0010, None), default, log)
    assert not logged.passed and "skipping cudagraphs due to mutated inputs" in logged.figure


def test_judge_cold_compile_within_20_percent() -> None:
    first = _case(compile_time_s=30.0)
    assert gc.judge_cold_compile(first, _case(compile_time_s=33.0)).passed
    leaked = gc.judge_cold_compile(first, _case(compile_time_s=3.0))
    assert not leaked.passed and "cache leaked" in leaked.figure
    assert not gc.judge_cold_compile(first, _case(compile_time_s=None)).passed


def _profile(coverage=0.95, **override):
    rows = [{"layer": "conv1", "kind": "Conv2d", "group": "layer", "fwd_ms": 1.0, "bwd_ms": 2.0},
            {"layer": "relu1", "kind": "ReLU", "group": "layer", "fwd_ms": 0.0, "bwd_ms": 0.0},
            {"layer": "fc3", "kind": "Linear", "group": "layer", "fwd_ms": 0.01, "bwd_ms": 0.02, **override},
            {"layer": "other", "kind": "remainder", "group": "remainder", "fwd_ms": 0.1, "bwd_ms": 0.0}]
    return {"coverage": coverage, "time_kind": "cuda_kernel", "config": {"mode": "train"}, "rows": rows}


def test_judge_profile() -> None:
    ok = gc.judge_profile(_profile())
    assert ok.passed and "coverage 0.950" in ok.figure and "2 conv/linear layers" in ok.figure
    assert not gc.judge_profile(_profile(coverage=0.85)).passed
    assert not gc.judge_profile(_profile(coverage=1.02)).passed
    empty = gc.judge_profile(_profile(bwd_ms=0.0))
    assert not empty.passed and "no device time in fc3 (backward)" in empty.figure


def test_judge_power() -> None:
    probe = {"idle_w": 70.0, "busy_w_samples": [600.0, 650.0], "energy_start_mj": 1_000_000,
             "energy_end_mj": 1_000_000 + 2_600_000, "seconds": 4.0, "limit_w": 700.0}
    ok = gc.judge_power(probe)
    assert ok.passed and "650 W mean" in ok.figure and ok.details["energy_j"] == pytest.approx(2600)
    assert not gc.judge_power({**probe, "energy_end_mj": probe["energy_start_mj"]}).passed  # counter stuck
    assert not gc.judge_power({**probe, "limit_w": 500.0}).passed  # above the limit
    assert not gc.judge_power({**probe, "idle_w": 700.0}).passed  # not above idle


def test_judge_memory_and_ddp() -> None:
    est = {"weights": 100, "gradients": 100, "optimizer_state": 0, "activations": 700, "batch": 100, "total": 1000}
    assert gc.judge_memory(_case(peak_memory_bytes=1250, memory_kind="cuda_max_allocated"), est).passed
    assert not gc.judge_memory(_case(peak_memory_bytes=1400, memory_kind="cuda_max_allocated"), est).passed
    assert not gc.judge_memory(_case(peak_memory_bytes=1000, memory_kind="cpu_peak_rss"), est).passed
    doc = {"benchmarks": [{"extra_info": {"dist_backend": "none", "world_size": 1}},
                          {"extra_info": {"dist_backend": "nccl", "world_size": 1, "images_per_s": 5000.0,
                                          "step_time_s": 0.0256, "scaling_efficiency": 0.97}}]}
    ok = gc.judge_ddp(doc)
    assert ok.passed and "1 rank under nccl: 5000 images/s" in ok.figure and "97.0%" in ok.figure
    assert not gc.judge_ddp({"benchmarks": doc["benchmarks"][:1]}).passed


# --- the analytic memory estimate -------------------------------------------------------------


def _hand_activations(batch: int, mask_bytes: int) -> int:
    """d2l at 65x65, by hand: conv1 -> 96x15x15, pool1 -> 96x7x7, conv2 -> 256x7x7,
    pool2 -> 256x3x3, conv3/conv4 -> 384x3x3, conv5 -> 256x3x3, pool3 -> 256x1x1, fc 4096."""
    f32, i64 = 4, 8
    per_image = (
        96 * 15 * 15 * f32  # relu1's output (also pool1's input)
        + 96 * 7 * 7 * (f32 + i64)  # pool1's output (conv2's input) and its indices
        + 256 * 7 * 7 * f32  # relu2's output (pool2's input)
        + 256 * 3 * 3 * (f32 + i64)  # pool2's output (conv3's input) and indices
        + 384 * 3 * 3 * f32 * 2  # relu3's and relu4's outputs (conv4's, conv5's inputs)
        + 256 * 3 * 3 * f32  # relu5's output (pool3's input)
        + 256 * (f32 + i64)  # pool3's output (flattened: fc1's input) and indices
        + 2 * (4096 * f32 * 2 + 4096 * mask_bytes)  # relu6/7 outputs, dropout outputs, masks
        + 10 * f32  # log_softmax's output
    )
    return batch * per_image


def test_memory_estimate_against_a_hand_count() -> None:
    est = train_memory_estimate(batch_size=2, resolution=(65, 65))
    params = (96 * 1 * 11 * 11 + 96) + (256 * 96 * 25 + 256) + (384 * 256 * 9 + 384) + (384 * 384 * 9 + 384) \
        + (256 * 384 * 9 + 256) + (4096 * 256 + 4096) + (4096 * 4096 + 4096) + (10 * 4096 + 10)
    assert est["weights"] == est["gradients"] == params * 4
    assert est["optimizer_state"] == 0  # plain SGD keeps no state
    assert train_memory_estimate(batch_size=2, resolution=(65, 65), momentum=0.9)["optimizer_state"] == params * 4
    assert est["activations"] == _hand_activations(2, mask_bytes=1)
    assert est["batch"] == 2 * 65 * 65 * 4 + 2 * 8
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    # Linear in the batch: the seed's 128 at 224x224 is 842 MiB (weights 178, grads 178, acts 461, batch 25).
    big = train_memory_estimate()
    assert big["activations"] == 128 * train_memory_estimate(batch_size=1)["activations"]
    assert round(big["total"] / 2**20) == 842


def test_memory_estimate_matches_what_autograd_saves_on_the_cpu() -> None:
    """An independent count: every tensor autograd packs for backward (saved_tensors_hooks),
    minus parameters and the batch. The CPU's composite dropout saves an fp32 mask (4 bytes)."""
    from alexnet.model import build_model

    model = build_model("d2l", resolution=(96, 96)).train()
    x, y = torch.randn(3, 1, 96, 96), torch.randint(0, 10, (3,))
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    skip |= {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
    packed: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in skip and t.dim() > 0:  # a 0-dim loss weight is not per image
            packed[t.untyped_storage().data_ptr()] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(model(x), y)
    autograd_bytes = sum(t.untyped_storage().nbytes() for t in packed.values())
    est = train_memory_estimate(batch_size=3, resolution=(96, 96), mask_bytes=4, probe_batch=3)
    assert est["activations"] == autograd_bytes


def test_power_probe_and_failure_line_are_importable_helpers() -> None:
    # The probe runs only on a GPU; here: it is a module-level function the child can import,
    # in the module gpu-check runs with ``python -m``.
    assert callable(power.power_probe)
    assert power.__name__ == "bench.instruments.power" and 'if __name__ == "__main__":' in Path(power.__file__).read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: the probe would run")
def test_the_power_item_starts_the_probe_module(tmp_path: Path) -> None:
    # Without a GPU the probe fails, but in the probe itself: its module was found and run.
    ctx = Context(root=tmp_path, item="nvml-power", deadline=time.monotonic() + 120, shared={})
    with pytest.raises(gc.CheckFailed, match="the NVML probe failed"):
        gc.check_power(ctx)
    log = (tmp_path / "nvml-power" / "power-probe.log").read_text()
    assert log.startswith(f"$ {PY} -m bench.instruments.power")
    assert "No module named" not in log and "power_probe" in log, log[-2000:]
    assert "exit status 1" in gc.failure_line("a\nb\n", 1, Path("/x.log"))


def test_judge_deterministic_reads_the_switches_as_set() -> None:
    case = _case(step_time_s=0.012, backend_switches={"deterministic_algorithms": True, "cudnn.deterministic": True},
                 config={"deterministic": True})
    ok = gc.judge_deterministic(case)
    assert ok.passed and "12.00 ms/step" in ok.figure
    case["extra_info"]["backend_switches"]["deterministic_algorithms"] = False
    assert not gc.judge_deterministic(case).passed


def test_the_plan_covers_every_item_and_pays_a_shared_run_once(cli_main) -> None:
    assert set(gc.ITEM_PLANS) == {i.name for i in gc.ITEMS}
    rows = {name: seconds for name, seconds, _ in gc.plan(gc.ITEMS)}
    assert rows["memory"] == 0  # the mfu item's run, already paid
    m = gc.PLAN_MODEL_S
    assert rows["cold-compile"] == pytest.approx(m["pytest"] + m["zygote"] + m["probe+calibration"] + m["case"]
                                                 + m["warmup"] + m["rounds"] + m["compile default"])
    alone = dict((n, t) for n, t, _ in gc.plan([i for i in gc.ITEMS if i.name == "memory"]))
    assert alone["memory"] > 0  # asked alone (--only memory), it pays for its run
    r = cli_main("gpu-check", "--plan")  # no GPU needed
    assert r.returncode == 0, r.stderr
    total = sum(rows.values())
    assert f"total {total:.0f} s estimated on an H200" in r.stdout

