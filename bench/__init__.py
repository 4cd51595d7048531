"""The benchmark matrix: what to measure (cases as data), handed to pytest-benchmark."""
