"""What tells one machine's results from another's: versions, GPU, CPU, threads.

`machine_info()` returns the additions to pytest-benchmark's ``machine_info`` listed in
docs/saved-run-format.md. pytest-benchmark's own machine id (e.g. ``Linux-CPython-3.11-64bit``)
names no GPU, so these fields are what keep runs on different hardware apart. Nothing here
raises for a missing GPU or NVML: absent facts are ``None``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
from typing import Any

import torch

# The saved run's schema version lives with the schema (runrecord/schema.py).
from bench.instruments.mfu import is_mig
from runrecord.schema import SCHEMA_VERSION as SUITE_SCHEMA_VERSION

__all__ = ["SUITE_SCHEMA_VERSION", "cpu_model", "gpu_info", "machine_info"]


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvml_info(uuid: str | None) -> dict[str, Any]:
    """Driver, power limit and max clocks from NVML for the GPU with ``uuid`` (best effort)."""
    out: dict[str, Any] = {}
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no library: the fields stay None
        out["nvml_error"] = f"{type(exc).__name__}: {exc}"
        return out
    try:
        out["gpu_driver"] = pynvml.nvmlSystemGetDriverVersion()
        if uuid:
            h = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        else:
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
        queries = {
            # milliwatts -> watts
            "gpu_power_limit_w": lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "gpu_max_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "gpu_max_mem_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "gpu_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "gpu_mem_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            # 0 DEFAULT, 2 PROHIBITED, 3 EXCLUSIVE_PROCESS (NVML's nvmlComputeMode_t): one process at a time.
            "gpu_compute_mode": lambda: int(pynvml.nvmlDeviceGetComputeMode(h)),
        }
        for key, q in queries.items():
            try:
                out[key] = q()
            except pynvml.NVMLError as exc:
                out.setdefault("nvml_error", f"{key}: {exc}")
    except Exception as exc:  # an NVML failure must not break a run
        out["nvml_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # already shut down or never up: nothing to release
            pass
    return out


def nvml_uuid(uuid: Any, name: str) -> str | None:
    """The UUID as NVML spells it, for `nvmlDeviceGetHandleByUUID`: "GPU-..." for a whole GPU,
    "MIG-..." for a MIG slice (NVML's format for MIG devices since driver R470; the NVML API
    reference, "nvmlDeviceGetHandleByUUID"). torch prints the CUDA UUID without a prefix.
    Untested on GPU."""
    if uuid is None:
        return None
    text = str(uuid)
    if text.startswith(("GPU-", "MIG-")):
        return text
    return f"{'MIG' if is_mig(name) else 'GPU'}-{text}"


def gpu_info(index: int = 0) -> dict[str, Any]:
    """GPU facts via torch (name, UUID, memory) and NVML (driver, power limit, clocks)."""
    info: dict[str, Any] = {
        "gpu_name": None, "gpu_uuid": None, "gpu_count": 0, "gpu_memory_total_bytes": None,
        "gpu_compute_capability": None, "gpu_driver": None, "gpu_power_limit_w": None,
        "gpu_max_sm_clock_mhz": None, "gpu_max_mem_clock_mhz": None, "gpu_mig_slice": None,
    }
    if not torch.cuda.is_available():
        return info
    props = torch.cuda.get_device_properties(index)
    uuid_str = nvml_uuid(getattr(props, "uuid", None), props.name)
    info.update(
        gpu_name=props.name,
        gpu_uuid=uuid_str,
        gpu_mig_slice=is_mig(props.name),
        gpu_count=torch.cuda.device_count(),
        gpu_memory_total_bytes=int(props.total_memory),
        gpu_compute_capability=f"{props.major}.{props.minor}",
    )
    info.update(_nvml_info(uuid_str))
    return info


def machine_info() -> dict[str, Any]:
    """The suite's additions to pytest-benchmark's ``machine_info``."""
    from alexnet.support import cpu_has_bf16, torchvision_missing

    # The installed distribution's version, read without importing it: importing torchvision
    # imports torch._dynamo (about 1.8 s here, in every run's probe worker).
    try:
        tv_version = importlib.metadata.version("torchvision") if torchvision_missing(import_it=False) is None else None
    except importlib.metadata.PackageNotFoundError:
        tv_version = None

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info: dict[str, Any] = {
        "suite_schema_version": SUITE_SCHEMA_VERSION,
        "torch_version": torch.__version__,
        "torchvision_version": tv_version,
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn,
        "cuda_available": torch.cuda.is_available(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_has_bf16": cpu_has_bf16(),
        "torch_num_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
    }
    info.update(gpu_info())
    return info
