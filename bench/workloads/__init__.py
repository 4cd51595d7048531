"""The measured workloads, inside a worker: one case's phases (step cases) and the training-loop benchmark (loop cases)."""
