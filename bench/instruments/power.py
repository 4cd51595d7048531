"""An NVML power probe: idle power, then energy and power over a burst of bf16 GEMMs.

`power_probe` runs in a child process of its own (``python -m bench.instruments.power``, as
``alexnet-bench gpu-check``'s ``nvml-power`` item starts it) and prints one JSON line: the idle
power, the energy counter at both ends of the burst, the power readings during it and the
enforced power limit. Needs a CUDA GPU and nvidia-ml-py (pynvml). Untested on GPU.
"""

from __future__ import annotations

import json
import time

__all__ = ["POWER_BURST_S", "POWER_IDLE_S", "power_probe"]

POWER_BURST_S = 4.0
POWER_IDLE_S = 1.0


def power_probe() -> None:
    """In a child process: NVML power and energy around a burst of bf16 GEMMs; prints JSON.

    NVML: ``nvmlDeviceGetTotalEnergyConsumption`` is millijoules since the driver loaded
    (Volta and later), ``nvmlDeviceGetPowerUsage`` milliwatts (a 1 s average on Hopper),
    ``nvmlDeviceGetEnforcedPowerLimit`` milliwatts (the limit the board holds now). The GPU is
    found by the UUID torch reports, as bench.instruments.envinfo does. Untested on GPU.
    """
    import torch
    import pynvml

    from bench.instruments.envinfo import nvml_uuid

    props = torch.cuda.get_device_properties(0)
    uuid = nvml_uuid(getattr(props, "uuid", None) or None, props.name)  # "MIG-..." for a MIG slice
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid else pynvml.nvmlDeviceGetHandleByIndex(0)
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
        torch.mm(a, b, out=c)
        torch.cuda.synchronize()
        time.sleep(POWER_IDLE_S)  # let the 1 s power average settle at idle
        idle = []
        t_end = time.monotonic() + POWER_IDLE_S
        while time.monotonic() < t_end:
            idle.append(pynvml.nvmlDeviceGetPowerUsage(h) / 1e3)
            time.sleep(0.1)
        e0, t0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
        busy, gemms = [], 0
        while time.perf_counter() - t0 < POWER_BURST_S:
            for _ in range(20):
                torch.mm(a, b, out=c)
            gemms += 20
            torch.cuda.synchronize()
            busy.append(pynvml.nvmlDeviceGetPowerUsage(h) / 1e3)
        e1, t1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
        print(json.dumps({
            "gpu": props.name, "idle_w": min(idle), "busy_w_samples": busy, "energy_start_mj": e0, "energy_end_mj": e1,
            "seconds": t1 - t0, "limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3,
            "tflops": 2 * n**3 * gemms / (t1 - t0) / 1e12,
        }))
    finally:
        pynvml.nvmlShutdown()


if __name__ == "__main__":
    power_probe()
