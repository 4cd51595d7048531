"""The pytest-benchmark suite behind ``pytest bench/``: its plugin (options, parametrisation, the saved run), presets and the per-case runner."""
