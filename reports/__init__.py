"""Read saved pytest-benchmark runs (see docs/saved-run-format.md) and draw or judge them.

Reports never time anything: everything here is derived from the saved JSON files.
"""
