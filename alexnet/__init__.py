"""AlexNet benchmark and profiling suite: the reference model, its training loop, and the
instruments that measure it (timers, profiler, samplers, FLOP counts, environment)."""

__version__ = "0.1.0"
