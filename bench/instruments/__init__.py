"""Instruments: what measures a step (timers, per-layer profiler, NVML/psutil telemetry, foreign load, MFU and peaks, environment capture, allocator policy)."""
