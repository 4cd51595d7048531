"""The zygote preloads torch._dynamo without handing its forked cases anything of its own.

`bench.workers.zygote.preload` imports torch._dynamo once per zygote (a train step and a compiled
case import it anyway, 1.5-2 s a worker otherwise). What that must not do, checked here in a fresh
interpreter as the zygote runs it: leave the default inductor cache folder in the environment
the workers inherit, start a thread before the zygote forks, or query a CUDA device (a CUDA
driver initialised before a fork is not usable in the child). And the one module-level cache
object of torch._dynamo follows the worker's own cache folder, set after the fork.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, sys
import torch

calls = []
def spy(mod, name):
    f = getattr(mod, name, None)
    if f is None:
        return
    def g(*a, **k):
        calls.append(name)
        return f(*a, **k)
    setattr(mod, name, g)
for name in ("_cuda_getDeviceCount", "_cuda_init"):
    spy(torch._C, name)
for name in ("is_available", "device_count", "_lazy_init", "init", "current_device", "get_device_properties"):
    spy(torch.cuda, name)
threads_before = len(os.listdir("/proc/self/task"))
from bench.workers.zygote import preload
preload(sys.argv[1])
out = {
    "dynamo": "torch._dynamo" in sys.modules,
    "env": {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")},
    "threads": [threads_before, len(os.listdir("/proc/self/task"))],
    "cuda_calls": calls,
    "cuda_initialized": torch.cuda.is_initialized(),
}
# What a forked worker does next (bench.workers.launcher.fresh_cache_env): its own folders.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = sys.argv[2]
from torch._dynamo.package import DynamoCache
out["dynamo_cache"] = DynamoCache.path_prefix()
print(json.dumps(out))
"""


def _probe(kind: str, tmp_path: Path, env_extra: dict[str, str] | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env.update({"PYTHONPATH": str(REPO), **(env_extra or {})})
    worker_dir = tmp_path / "worker-inductor"
    proc = subprocess.run([sys.executable, "-c", PROBE, kind, str(worker_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_preload_leaves_no_cache_folder_thread_or_cuda_query_behind(tmp_path):
    """Both preload kinds; the second with a cache folder already set, which must be kept."""
    mine = str(tmp_path / "mine")
    for kind, before in (("suite", None), ("subject", mine)):
        out = _probe(kind, tmp_path, {"TORCHINDUCTOR_CACHE_DIR": before} if before else None)
        assert out["dynamo"], kind
        # The import set the default folder; the zygote put the variables back as they were.
        assert out["env"] == {"TORCHINDUCTOR_CACHE_DIR": before, "TRITON_CACHE_DIR": None}, kind
        assert out["threads"][1] == out["threads"][0], kind
        assert out["cuda_calls"] == [] and out["cuda_initialized"] is False, kind
        # torch._dynamo's module-level cache follows the worker's folder, not the zygote's.
        assert out["dynamo_cache"] == str(tmp_path / "worker-inductor" / "dynamo"), kind


def test_a_duet_side_imports_the_instrument_from_its_path_not_from_its_worktree(tmp_path):
    """A duet side's zygote runs in the ref's worktree with [this tool's `bench`, the worktree] as its
    path (bench.duet.session.DuetSide.zygote). `python -m` would put the working directory first,
    so the worktree's own `bench` would have been the instrument; here that one cannot be imported."""
    from bench.duet.session import shim_dir
    from bench.workers.launcher import Zygote

    worktree = tmp_path / "worktree"
    (worktree / "bench").mkdir(parents=True)
    (worktree / "bench" / "__init__.py").write_text('raise ImportError("the worktree\'s bench was imported")\n')
    (worktree / "alexnet").symlink_to(REPO / "alexnet", target_is_directory=True)
    shim = shim_dir(tmp_path / "tool")
    z = Zygote(pythonpath=[str(shim), str(worktree)], cwd=worktree, workdir=tmp_path / "z", preload="subject",
               env={"PYTHONDONTWRITEBYTECODE": "1"})
    try:
        w = z.fork(tag="probe")
        try:
            probe = w.request("side_probe", timeout=120)
        finally:
            w.close()
    finally:
        z.close()
    # The subject is the worktree's; the instrument (it answered the probe) is the tool's.
    assert probe["alexnet_dir"] == str(worktree / "alexnet")
