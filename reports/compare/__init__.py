"""Judge a candidate against a baseline: one verdict per case, sound on noisy machines.

The noise on our CPU machines lives *between* runs, not within them (docs/compare.md, "The
noise model"): the rounds of one run spread by 2-15%, while two processes running the same case
drift far more, and a test on within-run rounds calls that drift significant. So the statistical unit here
is the run, never the round, whenever there is more than one run per side:

- ``paired`` (what ``alexnet-bench ab`` produces: runs interleaved A, B, A, B ...): one log
  ratio of run medians per pair, a one-sample t-test on those log ratios and its 95% t
  interval. Pairing cancels the drift that neighbouring runs share, and a t-test has no
  floor on its p-value (a sign or rank test on 6 pairs cannot go below p = 0.031).
- ``runs`` (several runs per side, not paired): Mann-Whitney U on run-level medians, and a
  hierarchical bootstrap (runs, then rounds) for the ratio's 95% interval.
- ``single-run`` (a side with one run): the rounds only tell us how well each run's median is
  known; the drift between runs is added as a random effect with a documented spread
  (`DRIFT_SD`), and the p-value comes from that normal model. Runs from a busy machine
  (rounds spread > `MAX_ROUND_SPREAD`), or a pair whose calibration GEMM (the machine's
  speed at run time, ``alexnet.calibration`` in the saved run) moved by more than
  `MAX_CALIBRATION_SHIFT`, get no verdict but ``noisy``.

Every model works on *pace-normalised* rounds when every run of a case saved pace samples
(``extra_info.pace``): each round divided by the mean of the pace GEMM timed just before and
just after it (`bench.instruments.timing.PaceKernel`), which cancels the machine's drift in speed. On
our 2-core VM that cut the log-ratio sd of neighbouring runs from 0.14-0.23 to about 0.09
(docs/compare.md). ``pace=False`` (``--no-pace``) judges raw times.

- ``duet`` (what ``alexnet-bench ab`` produces by default: sessions of two live workers,
  rounds alternated A B B A ...; each run pair is one session, marked ``extra_info.duet``):
  one log ratio per session, by the estimator saved in the runs (`DUET_ESTIMATORS`), and a
  one-sample t-test with its 95% t interval across sessions. The session, a fresh pair of
  workers, is the unit: rounds alternated within it cancel the machine's drift, and only more
  sessions average out what belongs to one process (docs/compare.md, "Duet").

A case is a ``regression`` only when it is significant (p < alpha) *and* its ratio exceeds
1 + threshold (`DUET_THRESHOLD` for duet sessions, 5% otherwise, unless given). Peak memory is
a ratio of medians with its own threshold and, on a CPU, a measured noise floor (`MEMORY_FLOOR`:
the largest difference two runs of identical code have shown), so identical code never reads as
a memory improvement or regression.

Split by role:

- `reports.compare.estimators`: the estimators on plain arrays (ratio of medians with its
  interval and p-value, per noise model, and the duet session estimators) and the drift floors;
- `reports.compare.cases`: what a comparison reads from a saved run (cases, rounds, pace
  samples, duet marks, calibration, peak memory);
- `reports.compare.judgement`: the thresholds, alpha and gates, `compare_runs` and its verdicts;
- `reports.compare.render`: the terminal table, the markdown and the JSON.

The public names are re-exported here: ``from reports.compare import compare_runs`` etc.
"""

from __future__ import annotations

from reports.compare.estimators import (
    DRIFT_SD,
    DUET_ESTIMATORS,
    MEMORY_FLOOR,
    PACED_DRIFT_SD,
    QUIET_DRIFT_SD,
    Estimate,
    duet_estimate,
    duet_session_log_ratio,
    paired_estimate,
    round_spread,
    runs_estimate,
    single_run_estimate,
)
from reports.compare.judgement import (
    DEFAULT_THRESHOLD,
    DUET_THRESHOLD,
    ENV_FIELDS,
    ENV_KEYS,
    MAX_CALIBRATION_SHIFT,
    MAX_ROUND_SPREAD,
    VERDICTS,
    Comparison,
    compare_runs,
    env_differences,
    memory_verdict,
    verdict,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "DRIFT_SD",
    "DUET_ESTIMATORS",
    "DUET_THRESHOLD",
    "ENV_FIELDS",
    "PACED_DRIFT_SD",
    "QUIET_DRIFT_SD",
    "MAX_CALIBRATION_SHIFT",
    "MAX_ROUND_SPREAD",
    "MEMORY_FLOOR",
    "ENV_KEYS",
    "VERDICTS",
    "Comparison",
    "Estimate",
    "compare_runs",
    "duet_estimate",
    "duet_session_log_ratio",
    "env_differences",
    "memory_verdict",
    "paired_estimate",
    "runs_estimate",
    "round_spread",
    "single_run_estimate",
    "verdict",
]
