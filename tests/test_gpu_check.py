"""``alexnet-bench gpu-check``: what can be checked without a GPU.

The command itself needs a CUDA GPU (exit 2 here); its item runner (pass, fail, error, timeout
with the item's processes killed, the budget), the parsing and judging of saved runs, and the
analytic memory estimate are tested on the CPU. The GPU figures themselves are untested on GPU.
"""

from __future__ import annotations

import io
import signal
import types
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
    # The items, in the order of docs/bench.md's gpu-check table: what only a GPU can prove first.
    assert [i.name for i in gc.ITEMS] == ["cudagraphs", "cold-compile", "mfu", "timer", "telemetry", "memory",
                                          "deterministic", "cudnn-benchmark", "profiler", "ddp-nccl", "nvml-power"]


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "gpu-check.json").write_text("{}")
    cases = [
        (["--only", "mfu,bogus"], "--only 'mfu,bogus' is not valid; choose from cudagraphs, cold-compile, mfu,"),
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


def _fake_suite(tmp_path: Path, monkeypatch, saved_keys, *, cut=None):
    """make_suite_run replaced: a saved run holding ``saved_keys``' cases, stopped by ``cut``."""
    calls = []

    def fake(root, keys, *, limit_s, by_budget, device="cuda", extra_args=(), cases=None):
        calls.append({"keys": list(keys), "limit_s": limit_s, "by_budget": by_budget})
        doc = {"benchmarks": [_case(case_id=gc.case_id(k), step_time_s=0.001) for k in saved_keys],
               "alexnet": {"skipped": [], "failed": []}}
        return SuiteRun(0, "", doc, tmp_path / "suite.log", cut, 1.0)

    monkeypatch.setattr(gc, "make_suite_run", fake)
    return calls


def test_one_suite_run_serves_every_item_that_needs_cases(tmp_path: Path, monkeypatch) -> None:
    calls = _fake_suite(tmp_path, monkeypatch, list(gc.CASES))
    seen = []

    def reader(*keys):
        def check(ctx: Context) -> Outcome:
            seen.append([ctx.case(k)["extra_info"]["case_id"] for k in keys])
            return Outcome(True, "read")
        return check

    items = [Item("a", reader("reduce-overhead"), 30, "", ("reduce-overhead",)),
             Item("b", reader("fp32", "tf32"), 30, "", ("fp32", "tf32")),
             Item("c", reader("fp32"), 30, "", ("fp32",))]
    out = io.StringIO()
    results = run_items(items, root=tmp_path, budget_s=300, out=out)
    assert [r.status for r in results] == ["pass"] * 3
    assert calls == [{"keys": ["reduce-overhead", "fp32", "tf32"], "limit_s": 90, "by_budget": False}]
    assert seen[1] == [gc.case_id("fp32"), gc.case_id("tf32")] and seen[2] == [gc.case_id("fp32")]
    assert out.getvalue().startswith("suite run: 9 of 3 cases saved")


def test_a_budget_cut_of_the_suite_run_is_not_run_and_its_own_limit_a_timeout(tmp_path: Path, monkeypatch) -> None:
    def check(ctx: Context) -> Outcome:
        return Outcome(True, ctx.case("tf32")["extra_info"]["case_id"])

    items = [Item("first", lambda ctx: Outcome(True, ctx.case("fp32")["name"]), 200, "", ("fp32",)),
             Item("second", check, 200, "", ("tf32",))]
    calls = _fake_suite(tmp_path, monkeypatch, ["fp32"], cut="budget")
    out = io.StringIO()
    results = run_items(items, root=tmp_path, budget_s=300, out=out)
    assert calls[0]["by_budget"] is True and calls[0]["limit_s"] <= 300
    assert [r.status for r in results] == ["pass", "not_run"]
    assert "NOT RUN (budget)  second" in out.getvalue() and "stopped: budget" in out.getvalue()
    _fake_suite(tmp_path, monkeypatch, ["fp32"], cut="timeout")
    results = run_items(items, root=tmp_path, budget_s=1000, out=io.StringIO())
    assert [r.status for r in results] == ["pass", "timeout"]


@pytest.mark.slow
def test_the_suite_run_is_one_pytest_bench_run_with_each_rows_options(tmp_path: Path) -> None:
    """The real invocation on the CPU, with small rows (`pytest bench/ --cases`): one run, one
    zygote, the cases in order, a config measured again in a worker of its own, a row's own
    telemetry window and Timer cross-check."""
    tiny = {"mode": "inference", "batch_size": 2, "resolution": "65x65"}
    cases = {"one": {"config": tiny, "telemetry_seconds": 0.3, "timer_check": True},
             "two": {"config": tiny, "label": "again"}}
    run = gc.make_suite_run(tmp_path, ["one", "two"], limit_s=300, by_budget=False, device="cpu", cases=cases)
    assert run.cut is None and run.returncode == 0 and run.doc is not None, run.output[-2000:]
    assert run.doc["alexnet"]["preset"] == "cases" and run.log.read_text().startswith("$ ")
    one, two = (b["extra_info"] for b in run.doc["benchmarks"])
    assert one["case_id"] == "inference-d2l-b2-65x65-fp32-cpu" and two["case_id"] == one["case_id"] + "~again"
    assert one["isolation"]["zygote_pid"] == two["isolation"]["zygote_pid"]
    assert one["isolation"]["worker_pid"] != two["isolation"]["worker_pid"]
    assert one["telemetry_window"]["seconds"] >= 0.3 and two["telemetry_window"]["what"] == "the timed rounds"
    assert one["timer_check"]["pairs"] == 10 and one["timer_check"]["ratio_median"] > 0 and two["timer_check"] is None
    for e in (one, two):  # the whole case, from asking for its worker to its exit: more than its rounds
        assert e["case_wall_s"] > e["isolation"]["fixed_cost_s"] and e["case_wall_s"] > sum(e["pace"]["samples"])


def test_at_its_limit_the_suite_run_gets_sigint_so_it_saves_what_it_measured(tmp_path: Path, monkeypatch) -> None:
    """Past its limit (less a grace), the suite run gets SIGINT, as a Ctrl-C: pytest saves the
    cases measured (tests/test_bench_run.py shows that on a real run; tests/test_proc.py the
    signal) and what is saved is read; the cut is "budget" or "timeout" as the caller says."""
    seen = {}

    def fake_run_limited(cmd, **kw):  # pytest interrupted at the limit, nothing saved yet
        seen.update(kw)
        return types.SimpleNamespace(timed_out=True, returncode=2)

    monkeypatch.setattr(gc, "run_limited", fake_run_limited)
    run = gc.make_suite_run(tmp_path, ["fp32"], limit_s=100, by_budget=True)
    assert seen["grace_signal"] == signal.SIGINT and seen["grace_s"] == gc.SUITE_GRACE_S
    assert seen["timeout_s"] == pytest.approx(100 - gc.SUITE_GRACE_S)
    assert run.cut == "budget" and run.doc is None
    assert gc.make_suite_run(tmp_path / "b", ["fp32"], limit_s=100, by_budget=False).cut == "timeout"


# --- reading and judging saved runs -----------------------------------------------------------


def _case(**extra) -> dict:
    config = {"mode": "train", "variant": "d2l", "batch_size": 128, "resolution": "224x224", "amp": "off",
              "tf32": False, "compile": "off", "device": "cuda", **extra.pop("config", {})}
    return {"name": "x", "extra_info": {"config": config, "case_id": "id", **extra}}


def _run(doc, output="", rc=0) -> SuiteRun:
    return SuiteRun(rc, output, doc, Path("/tmp/log"))


def test_need_case_says_why_a_case_is_missing() -> None:
    doc = {"benchmarks": [_case(case_id="train-a", step_time_s=0.01)],
           "alexnet": {"skipped": [{"case_id": "train-det", "reason": "out of memory: CUDA out of memory"}],
                       "failed": [{"case_id": "train-dead", "reason": "worker killed by SIGSEGV"}]}}
    assert gc.need_case_id(_run(doc), "train-a")["extra_info"]["step_time_s"] == 0.01
    with pytest.raises(gc.CheckFailed, match="train-det was skipped: out of memory"):
        gc.need_case_id(_run(doc), "train-det")
    with pytest.raises(gc.CheckFailed, match="train-dead failed: worker killed by SIGSEGV"):
        gc.need_case_id(_run(doc), "train-dead")
    out = "....\nE   RuntimeError: CUDA error: an illegal memory access was encountered\nFAILED bench/test_matrix.py"
    with pytest.raises(gc.CheckFailed, match="no run was saved .* E   RuntimeError: CUDA error: an illegal memory"):
        gc.need_case_id(_run(None, out, rc=3), "train-a")


def test_the_case_rows_are_valid_suite_rows_and_their_ids_unique() -> None:
    ids = {k: gc.case_id(k) for k in gc.CASES}
    assert len(set(ids.values())) == len(ids)
    assert ids["fp32"] == "train-d2l-b128-224x224-fp32-cuda"  # the seed's step
    assert ids["reduce-overhead-again"] == ids["reduce-overhead"] + "~again"


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
    eager = _case(step_time_s=0.0020, config={"batch_size": 8})

    def ro(step, counters):
        e = {"step_time_s": step, "config": {"compile": "reduce-overhead"}}
        if counters is not None:
            e["compile_counters"] = counters
        return _case(**e)

    good = gc.judge_cudagraphs(ro(0.0010, {"inductor": {"cudagraph_skips": 0}}), eager, "")
    assert good.passed and "0.50x" in good.figure and "cudagraph_skips 0" in good.figure
    assert gc.judge_cudagraphs(ro(0.0010, {"inductor": {"fxgraph_cache_miss": 3}}), eager, "").passed  # no skip counted
    skipped = gc.judge_cudagraphs(ro(0.0010, {"inductor": {"cudagraph_skips": 2}}), eager, "")
    assert not skipped.passed and "2 cudagraph skip(s)" in skipped.figure
    slow = gc.judge_cudagraphs(ro(0.0022, {"inductor": {"cudagraph_skips": 0}}), eager, "")
    assert not slow.passed and "1.10x eager's step (limit 1.0x)" in slow.figure
    unknown = gc.judge_cudagraphs(ro(0.0010, None), eager, "1 passed")
    assert unknown.passed and "unknown" in unknown.figure
    log = "W1130 cudagraph_utils.py:401] [__cudagraphs] skipping cudagraphs due to mutated inputs (1 instances)"
    logged = gc.judge_cudagraphs(ro(0.0010, None), eager, log)
    assert not logged.passed and "skipping cudagraphs due to mutated inputs" in logged.figure


def test_judge_cold_compile_within_20_percent_in_two_workers_with_warm_pools() -> None:
    def compiled(seconds, pid, warmed=True):
        return _case(compile_time_s=seconds, isolation={"worker_pid": pid},
                     compile_pool={"warmed": warmed, "seconds": 3.1, "workers": 16})

    first = compiled(30.0, 101)
    ok = gc.judge_cold_compile(first, compiled(33.0, 102))
    assert ok.passed and "pools warmed first in 3.1/3.1 s" in ok.figure
    leaked = gc.judge_cold_compile(first, compiled(3.0, 102))
    assert not leaked.passed and "cache leaked" in leaked.figure
    assert not gc.judge_cold_compile(first, compiled(None, 102)).passed
    same = gc.judge_cold_compile(first, compiled(31.0, 101))
    assert not same.passed and "not two cold compiles" in same.figure
    cold = gc.judge_cold_compile(first, compiled(31.0, 102, warmed=False))
    assert not cold.passed and "compile pool not warmed" in cold.figure


def test_judge_timer_within_5_percent() -> None:
    check = {"pairs": 10, "ratio_median": 1.03, "suite_step_s": 3.1e-4, "timer_step_s": 3.0e-4, "steps_per_round": 64}
    ok = gc.judge_timer(_case(timer_check=check))
    assert ok.passed and "64 steps per round" in ok.figure and "1.030" in ok.figure
    assert not gc.judge_timer(_case(timer_check={**check, "ratio_median": 0.94})).passed
    assert not gc.judge_timer(_case(timer_check=None)).passed


def test_judge_telemetry_window() -> None:
    summary = {"energy_j": 2500.0, "energy_j_per_image": 0.2, "power_mean_w": 500.0,
               "power_mean_source": "energy_counter", "power_sample_source": "power_usage"}

    def case(**over):
        return _case(telemetry={"kind": "nvml", "summary": {**summary, **over.pop("summary", {})}, **over},
                     telemetry_window={"seconds": over.pop("seconds", 5.0)})

    ok = gc.judge_telemetry(case(), 700.0)
    assert ok.passed and "5.0 s window, energy 2500 J" in ok.figure and "limit 700 W" in ok.figure
    assert not gc.judge_telemetry(case(summary={"energy_j": 0.0}), 700.0).passed
    assert not gc.judge_telemetry(case(seconds=2.0), 700.0).passed
    assert not gc.judge_telemetry(case(summary={"power_sample_source": None}), 700.0).passed
    above = gc.judge_telemetry(case(), 400.0)
    assert not above.passed and "above the enforced limit 400 W" in above.figure
    assert gc.judge_telemetry(case(), None).passed  # no limit recorded: not judged
    assert not gc.judge_telemetry(case(kind="psutil"), 700.0).passed


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


def test_the_plan_covers_every_item_pays_each_case_once_and_fits_the_target(cli_main) -> None:
    suite = [i for i in gc.ITEMS if i.cases]
    assert {i.name for i in gc.ITEMS if not i.cases} == set(gc.PROCESS_PLANS)
    assert {k for i in suite for k in i.cases} == set(gc.CASES)  # every case serves an item
    rows = {name: seconds for name, seconds, _ in gc.plan(gc.ITEMS)}
    assert rows["memory"] == 0 and rows["timer"] == 0  # their cases are paid by earlier items
    m = gc.PLAN_MODEL_S
    per_case = m["case"] + m["warmup"] + m["rounds"]
    assert rows["cold-compile"] == pytest.approx(per_case + m["compile pool"] + m["compile reduce-overhead"])
    assert rows["cudagraphs"] == pytest.approx(m["pytest"] + m["zygote"] + m["probe+calibration"]
                                               + 2 * per_case + m["compile pool"] + m["compile reduce-overhead"]
                                               + m["timer check"])
    alone = dict((n, t) for n, t, _ in gc.plan([i for i in gc.ITEMS if i.name == "memory"]))
    assert alone["memory"] == pytest.approx(m["pytest"] + m["zygote"] + m["probe+calibration"] + per_case)
    total = sum(rows.values())
    assert total <= gc.PLAN_TARGET_S
    r = cli_main("gpu-check", "--plan")  # no GPU needed
    assert r.returncode == 0, r.stderr
    assert f"total {total:.0f} s estimated on an H200" in r.stdout and "within the 240 s target" in r.stdout
