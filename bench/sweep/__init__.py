"""Sweeps that outgrow one machine: a plan of shards, running one shard, resume, status, merge, Slurm.

Torch-free (a login node plans and merges). docs/sweeps.md is the user's page.

- `bench.sweep.plan`: the cases of a preset (or ``--cases`` file) collected once, each with an
  estimated cost (`bench.sweep.costs`), balanced into shards (largest first, LPT);
- `bench.sweep.shard`: one shard's cases as ``--cases`` rows, the shard index from the engine's
  variable, the attempt's folder, the resume filter;
- `bench.sweep.journal`: a pytest plugin (``-p bench.sweep.journal``) that appends each finished
  case to the attempt's journal, so a shard killed outright loses nothing it measured;
- `bench.sweep.status`, `bench.sweep.merge`: what each shard did; the shards' runs joined into
  ordinary saved runs, one per hardware and software fingerprint;
- `bench.sweep.slurm`: the ``sbatch --array`` script and its submission.
"""
