"""The CPU's peak FLOP rate, MFU's denominator on a CPU: an upper bound from the hardware.

peak = FLOP per cycle per core for the case's dtype x physical cores in use x the maximum clock.

- **FLOP per cycle per core** comes from a small table keyed on the CPU's vendor, family and
  model (`/proc/cpuinfo`), with the vector units each core has (docs/measurement-notes.md,
  "CPU peaks"). A CPU the table does not know gets the upper bound its instruction set allows
  (``avx512f``: at most two 512-bit FMA units, 64 fp32 FLOP per cycle; ``avx2`` with ``fma``:
  at most two 256-bit ones, 32), and says so. bf16 needs ``avx512_bf16`` or AMX; without
  either there is no bf16 peak (bf16 is emulated, and MFU would mean nothing). A CPU that is
  neither (another architecture, or no FMA) gets no peak, and no MFU, as an unknown GPU.
- **Physical cores in use**: the worker's intra-op threads, at most the physical cores in its
  affinity mask (SMT siblings share one core's vector units), counted from the
  ``physical id``/``core id`` pairs of `/proc/cpuinfo`.
- **The maximum clock**: ``cpufreq/cpuinfo_max_freq`` from sysfs where it exists. A VM often
  has no cpufreq, and its ``cpu MHz`` reads the nominal clock (2596 MHz here, while the cores
  run at about 3.6 GHz), so there the clock is measured: a chain of dependent integer adds
  (one cycle each on every x86-64 core) run as machine code (`measure_clock_ghz`), the best of
  41 short repeats. One core's boost clock is at least the all-core clock, so the peak stays an upper
  bound. Never ``cpu MHz`` alone.

Every input is recorded with its source (`cpu_peak`'s ``inputs``). Torch-free.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CpuInfo", "cpu_peak", "flop_per_cycle", "max_clock_ghz", "measure_clock_ghz", "read_cpuinfo"]

SYSFS_MAX_FREQ = "/sys/devices/system/cpu/cpu{}/cpufreq/cpuinfo_max_freq"


@dataclass
class CpuInfo:
    vendor: str = ""
    family: int | None = None
    model: int | None = None
    model_name: str = ""
    flags: frozenset[str] = frozenset()
    physical_cores: int = 0  # distinct (physical id, core id) among the CPUs considered
    logical_cpus: int = 0
    cores_source: str = ""
    notes: list[str] = field(default_factory=list)


def read_cpuinfo(text: str | None = None, cpus: set[int] | None = None) -> CpuInfo:
    """Parse `/proc/cpuinfo` over the logical CPUs in ``cpus`` (default: this process's
    affinity mask), or ``text`` over ``cpus`` (default: all of them)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return CpuInfo(notes=["/proc/cpuinfo is not readable"])
        if cpus is None and hasattr(os, "sched_getaffinity"):
            cpus = set(os.sched_getaffinity(0))
    info = CpuInfo()
    cores: set[tuple[str, str]] = set()
    for block in text.strip().split("\n\n"):
        kv = {}
        for line in block.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                kv[k.strip()] = v.strip()
        if "processor" not in kv:
            continue
        if cpus is not None and int(kv["processor"]) not in cpus:
            continue
        info.logical_cpus += 1
        info.vendor = kv.get("vendor_id", info.vendor)
        if kv.get("cpu family", "").isdigit():
            info.family = int(kv["cpu family"])
        if kv.get("model", "").isdigit():
            info.model = int(kv["model"])
        info.model_name = kv.get("model name", info.model_name)
        info.flags = frozenset(kv.get("flags", "").split()) or info.flags
        cores.add((kv.get("physical id", "?"), kv.get("core id", kv["processor"])))
    info.physical_cores = len(cores)
    info.cores_source = ("/proc/cpuinfo: distinct (physical id, core id) pairs among the "
                         f"{info.logical_cpus} CPUs of this process's affinity mask")
    return info


# (vendor, family, model range, name, {dtype: FLOP per cycle per core}, why). First match wins.
# Sources in docs/measurement-notes.md, "CPU peaks".
_TABLE: list[tuple[str, int, range | tuple[int, ...], str, dict[str, int | None], str]] = [
    ("AuthenticAMD", 0x1A, range(0x20, 0x30), "AMD Zen 5 mobile (Strix)", {"fp32": 32, "bf16": 64},
     "AVX-512 on 256-bit datapaths: two 256-bit FMA pipes"),
    ("AuthenticAMD", 0x1A, range(0x00, 0x80), "AMD Zen 5 (EPYC 9005, Ryzen 9000)", {"fp32": 64, "bf16": 128},
     "two full-width 512-bit FMA pipes; VDPBF16PS at two per cycle"),
    ("AuthenticAMD", 0x19, (*range(0x10, 0x20), *range(0x60, 0x80), *range(0xA0, 0xB0)),
     "AMD Zen 4 (EPYC 9004/8004, Ryzen 7000)", {"fp32": 32, "bf16": 64},
     "AVX-512 double-pumped on two 256-bit FMA pipes"),
    ("AuthenticAMD", 0x19, range(0x00, 0x100), "AMD Zen 3", {"fp32": 32, "bf16": None},
     "two 256-bit FMA pipes; no bf16 arithmetic"),
    ("AuthenticAMD", 0x17, range(0x30, 0x100), "AMD Zen 2", {"fp32": 32, "bf16": None},
     "two 256-bit FMA pipes; no bf16 arithmetic"),
    ("GenuineIntel", 6, (0x8F, 0xCF, 0xAD, 0xAE), "Intel Xeon with AMX (Sapphire/Emerald/Granite Rapids)",
     {"fp32": 64, "bf16": 2048}, "two 512-bit FMA units; AMX: 1024 bf16 multiply-adds per cycle"),
    ("GenuineIntel", 6, (0x6A, 0x6C), "Intel Xeon Ice Lake-SP", {"fp32": 64, "bf16": None},
     "two 512-bit FMA units; no bf16 arithmetic"),
    ("GenuineIntel", 6, (0x55,), "Intel Xeon Skylake-SP / Cascade Lake / Cooper Lake", {"fp32": 64, "bf16": 128},
     "one or two 512-bit FMA units by model: the upper figure; bf16 only on Cooper Lake (avx512_bf16)"),
]


def flop_per_cycle(info: CpuInfo, dtype: str) -> tuple[int | None, str]:
    """FLOP per cycle per core for ``dtype`` (fp32 or bf16), and where the figure comes from."""
    bf16_hw = "avx512_bf16" in info.flags or "amx_bf16" in info.flags
    for vendor, family, models, name, fpc, why in _TABLE:
        if info.vendor == vendor and info.family == family and info.model in models:
            value = fpc.get(dtype)
            if dtype == "bf16" and not bf16_hw:
                value = None  # e.g. a Skylake-SP without Cooper Lake's avx512_bf16
            where = f"table: {name} (family {family:#x}, model {info.model:#x}): {why}"
            return value, where
    # Not in the table: the instruction set's own upper bound, or nothing.
    if "avx512f" in info.flags:
        fp32, where = 64, "ISA bound: avx512f allows at most two 512-bit FMA units (CPU not in the table)"
    elif "avx2" in info.flags and "fma" in info.flags:
        fp32, where = 32, "ISA bound: avx2+fma allows at most two 256-bit FMA units (CPU not in the table)"
    else:
        return None, f"no peak: {info.vendor or 'unknown vendor'} {info.model_name or ''} is not in the table and has no x86 FMA"
    if dtype == "fp32":
        return fp32, where
    if dtype == "bf16" and "avx512_bf16" in info.flags:
        return 2 * fp32, where + "; bf16: VDPBF16PS does twice the fp32 FMA's FLOPs"
    return None, f"no {dtype} arithmetic known for this CPU"


# --- the clock -----------------------------------------------------------------------------
_ADDS_PER_ITER = 200


def _add_chain() -> Any:
    """x86-64 machine code: ``f(n)`` runs n x 200 dependent ``add rcx, 1`` and returns the count."""
    code = bytes([0x48, 0x89, 0xF8, 0x31, 0xC9])  # mov rax, rdi; xor ecx, ecx
    loop = bytes([0x48, 0x83, 0xC1, 0x01]) * _ADDS_PER_ITER + bytes([0x48, 0xFF, 0xC8])  # add rcx, 1 (x200); dec rax
    loop += bytes([0x0F, 0x85]) + (-(len(loop) + 6)).to_bytes(4, "little", signed=True)  # jnz loop
    code += loop + bytes([0x48, 0x89, 0xC8, 0xC3])  # mov rax, rcx; ret
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    fn = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
    fn._buf = buf  # keep the page alive as long as the function
    return fn


def measure_clock_ghz(repeats: int = 41, iterations: int = 50_000) -> float | None:
    """The core's clock in GHz from a dependent-add chain (x86-64 only; None elsewhere, or where
    executable memory is refused): an add's latency is one cycle, so adds per second is Hz.

    Many short repeats (10 million adds, about 3 ms at 3.6 GHz, shorter than a scheduler time
    slice) and the best of them: a repeat the scheduler interrupted reads a slower clock. With 3
    busy processes beside it on the 2-core VM, the earlier 7 repeats of 28 ms read 1.73-1.83 GHz
    against 3.55 quiet (every repeat was preempted), and the peak built on it fell below the GEMM
    it bounds; 41 repeats of 3 ms read 3.53-3.56 loaded and 3.60 quiet, in 0.25 s."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        fn = _add_chain()
    except (OSError, ValueError, PermissionError):
        return None
    if fn(3) != 3 * _ADDS_PER_ITER:
        return None
    fn(iterations // 4)  # out of any idle state
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(iterations)
        best = max(best, iterations * _ADDS_PER_ITER / (time.perf_counter() - t0))
    return best / 1e9


def max_clock_ghz(cpu: int = 0, *, sysfs: str = SYSFS_MAX_FREQ) -> tuple[float | None, str]:
    """The maximum clock: sysfs cpufreq where it exists, else the dependent-add probe."""
    try:
        khz = int(Path(sysfs.format(cpu)).read_text().strip())
        if khz > 0:
            return khz / 1e6, f"sysfs {sysfs.format(cpu)} ({khz} kHz)"
    except (OSError, ValueError):
        pass
    ghz = measure_clock_ghz()
    if ghz is None:
        return None, "no cpufreq in sysfs, and the dependent-add probe cannot run here (not x86-64)"
    return ghz, "measured: dependent-add chain, best of 41 (no cpufreq in sysfs; cpu MHz is not trusted)"


def cpu_peak(threads: int, *, info: CpuInfo | None = None, clock: tuple[float | None, str] | None = None) -> dict[str, Any]:
    """The CPU's peak per dtype in TFLOPS for ``threads`` intra-op threads, with every input and source.

    ``{"tflops": {"fp32": x | None, "bf16": y | None}, "inputs": {...}}``.
    """
    info = info or read_cpuinfo()
    ghz, clock_source = clock or max_clock_ghz()
    cores = min(threads, info.physical_cores) if info.physical_cores else None
    out: dict[str, Any] = {"tflops": {}, "sources": {}, "inputs": {
        "cpu": f"{info.vendor} family {info.family} model {info.model} ({info.model_name})",
        "cores": cores,
        "cores_source": f"min(intra-op threads {threads}, physical cores {info.physical_cores}); {info.cores_source}",
        "clock_ghz": ghz,
        "clock_source": clock_source,
    }}
    for dtype in ("fp32", "bf16"):
        fpc, where = flop_per_cycle(info, dtype)
        out["inputs"][f"{dtype}_flop_per_cycle"] = fpc
        out["sources"][dtype] = where
        ok = fpc is not None and cores and ghz
        out["tflops"][dtype] = fpc * cores * ghz / 1e3 if ok else None
    return out
