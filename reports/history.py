"""Nightly history: saved runs across commits, grouped into series, with change points.

``alexnet-bench history`` (docs/history.md) reads every saved run under some folders, groups
the cases into *series* and finds where each series changed speed:

- **Series.** One hardware fingerprint (CPU model and count, GPU name and count, from
  ``machine_info``) and one case (its ``case_id`` and full config, plus the torch thread
  count). Different hardware is never one line.
- **Points.** A point is a commit together with its software stack (torch, CUDA, cuDNN,
  driver): several runs of it are one point with their spread, and a nightly that re-ran the
  same commit after a torch upgrade is a new point, marked on the line as a software change.
  Runs from a dirty tree, with no commit id, or interrupted (``alexnet.interrupted``) are left
  out with a note.
- **Order.** Points follow the first-parent history of ``--ref`` in the git repository when
  every commit is on it; else commit time (``commit_info.time``); else run time, with a note.
- **Values.** ``median_s`` is always the raw median step time in seconds. Detection uses paced
  medians (each round divided by the pace GEMM timed around it, `runrecord.samples.paced_samples`)
  when every run of the series has pace samples; they are unitless, so wherever they are shown
  they are rescaled to seconds by the series' median pace time (``pace_ref_s``).
- **Schemas.** Runs of every schema version are read. Timing fields keep their meaning across
  versions; a field whose meaning changed (`MEANING_CHANGES`: ``peak_memory_bytes`` on CPU at
  schema 2) is never joined across the change.

A file that cannot be read as a run (corrupt JSON, a foreign JSON file) is skipped and listed,
so one bad file among hundreds does not cost the page; a missing folder or no runs at all is a
`RunLoadError` (the CLI exits 2).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runrecord.samples import paced_samples, summarize
from runrecord.store import DEFAULT_STORAGE, storage_dir
from reports.history_accept import Acceptance, matches
from reports.history_detect import (ALPHA, COST_MODEL, DEFAULT_DETECTOR, DEFAULT_THRESHOLD, MIN_SEGMENT, PENALTY_C,
                                    SCORE_CLIP, SUSPECT_RUNS, Creep, Detection, detect, fails, find_creep, resolution,
                                    suspected)
from reports.load import Run, RunLoadError, load_run

__all__ = [
    "AB_FOLDER",
    "DEFAULT_STORAGE",
    "MEANING_CHANGES",
    "SOFTWARE_KEYS",
    "History",
    "Measurement",
    "Point",
    "Series",
    "SkippedFile",
    "ab_command",
    "build_history",
    "find_run_files",
]

# `alexnet-bench ab` saves its interleaved A/B runs under <storage>/ab: experiments, not history.
AB_FOLDER = "ab"
# Software whose change stays on the line and is marked (machine_info keys, short names).
SOFTWARE_KEYS = (("torch_version", "torch"), ("cuda_version", "CUDA"), ("cudnn_version", "cuDNN"),
                 ("gpu_driver", "driver"))
# Fields whose meaning changed at a schema version, per device kind: never joined across it.
# Schema 2: CPU `peak_memory_bytes` is the case's own peak RSS, not the whole process's.
MEANING_CHANGES: dict[str, dict[str, int]] = {"peak_memory_bytes": {"cpu": 2}}
ORDER_METHODS = ("first-parent history", "commit time", "run time")
_COMMIT_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class Measurement:
    """One case in one saved run."""

    run_label: str
    path: str
    datetime: str | None
    schema: int | None
    preset: str | None
    median_s: float  # raw median of the timed rounds
    q1_s: float | None
    q3_s: float | None
    paced: float | None  # median of the paced rounds (unitless) or None without pace samples
    paced_q1: float | None
    paced_q3: float | None
    pace_s: float | None  # median pace GEMM time of this run (seconds)
    peak_memory_bytes: float | None


@dataclass
class Point:
    """One commit with one software stack: its runs, in run order."""

    commit: str
    commit_time: str | None
    software: dict[str, Any]
    runs: list[Measurement] = field(default_factory=list)
    order_key: tuple = ()

    @property
    def time(self) -> str | None:
        """The commit's time when saved, else the first run's time."""
        return self.commit_time or min((r.datetime for r in self.runs if r.datetime), default=None)

    @property
    def median_s(self) -> float:
        """Raw median step time (seconds): the median of the runs' medians."""
        return float(np.median([r.median_s for r in self.runs]))


@dataclass
class Series:
    """One case on one machine: its points in commit order and what was found in them."""

    key: str  # stable id (a hash) for anchors and file names
    case_id: str
    kind: str | None
    config: dict[str, Any]
    machine: str  # readable hardware fingerprint
    threads: Any
    points: list[Point] = field(default_factory=list)
    paced: bool = False
    pace_ref_s: float | None = None
    detection: Detection | None = None
    creep: list[Creep] = field(default_factory=list)
    accepted_changes: set[int] = field(default_factory=set)  # indices of changes an acceptance covers
    notes: list[str] = field(default_factory=list)

    # --- the values detection and the page use -------------------------------------------------

    def run_values(self) -> list[list[float]]:
        """Per point, each run's value in seconds: paced medians rescaled by the series' pace, or raw."""
        if self.paced:
            return [[r.paced * self.pace_ref_s for r in p.runs] for p in self.points]
        return [[r.median_s for r in p.runs] for p in self.points]

    def shown(self) -> list[dict[str, float | None]]:
        """Per point: the value detection used (seconds) and its IQR band from the pooled rounds."""
        out = []
        for p in self.points:
            vals = [r.paced * self.pace_ref_s for r in p.runs] if self.paced else [r.median_s for r in p.runs]
            if self.paced:
                q1 = [r.paced_q1 * self.pace_ref_s for r in p.runs if r.paced_q1 is not None]
                q3 = [r.paced_q3 * self.pace_ref_s for r in p.runs if r.paced_q3 is not None]
            else:
                q1 = [r.q1_s for r in p.runs if r.q1_s is not None]
                q3 = [r.q3_s for r in p.runs if r.q3_s is not None]
            out.append({"value_s": float(np.median(vals)), "min_s": float(min(vals)), "max_s": float(max(vals)),
                        "q1_s": float(np.median(q1)) if q1 else None, "q3_s": float(np.median(q3)) if q3 else None})
        return out

    def software_changes(self) -> list[dict[str, Any]]:
        """Where the software stack changed between neighbouring points (index of the first new point)."""
        out = []
        for i in range(1, len(self.points)):
            before, after = self.points[i - 1].software, self.points[i].software
            diff = [{"what": short, "from": before.get(key), "to": after.get(key)}
                    for key, short in SOFTWARE_KEYS if before.get(key) != after.get(key)]
            if diff:
                out.append({"index": i, "commit": self.points[i].commit, "changes": diff})
        return out

    def memory(self) -> dict[str, Any] | None:
        """Peak memory over the points of the newest schema whose meaning it shares (never joined
        across a `MEANING_CHANGES` version)."""
        device = str(self.config.get("device") or "")
        kind = "cuda" if device.startswith("cuda") else "cpu"
        changed_at = MEANING_CHANGES["peak_memory_bytes"].get(kind)

        def era(schema: int | None) -> int:
            return int((schema or 1) >= changed_at) if changed_at else 0

        rows = [(i, era(r.schema), r.schema, r.peak_memory_bytes) for i, p in enumerate(self.points) for r in p.runs
                if r.peak_memory_bytes is not None]
        if not rows:
            return None
        newest_era = rows[-1][1]
        rows = [r for r in rows if r[1] == newest_era]
        first, last = rows[0], rows[-1]
        return {"schemas": sorted({r[2] for r in rows if r[2] is not None}), "first_index": first[0],
                "last_index": last[0], "first_bytes": first[3], "last_bytes": last[3],
                "ratio": last[3] / first[3] if first[3] else None,
                "note": (f"schema {changed_at} changed what peak_memory_bytes means on {kind.upper()}: only runs "
                         f"{'from' if newest_era else 'before'} schema {changed_at} are compared")
                if changed_at and len({era(r.schema) for p in self.points for r in p.runs}) > 1 else None}

    def noise(self) -> dict[str, Any] | None:
        """The noise the detection saw in this series and the step it resolves within 5 runs."""
        d = self.detection
        if not d:
            return None
        resolves = resolution(d.sigma, runs_after=5)
        return {"sigma": d.sigma, "judged_on": "paced medians" if self.paced else "raw medians",
                "resolves_within_5_runs": resolves,
                "text": f"Noise {d.sigma:.1%} per run ({'paced' if self.paced else 'raw'} medians): this series "
                        f"resolves about {resolves:.0%} within 5 runs"}

    def newest_change(self):
        d = self.detection
        return d.changes[-1] if d and d.changes else None

    def failing(self, *, threshold: float) -> list[dict[str, Any]]:
        """What makes ``--fail-on-regression`` exit 1 for this series: the newest change when it is a
        regression beyond the threshold (interval included) and not accepted, and creep likewise."""
        out = []
        change = self.newest_change()
        if change and fails(change, threshold=threshold) and len(self.detection.changes) - 1 not in self.accepted_changes:
            out.append({"what": "regression", "index": change.index, "ratio": change.ratio, "ci_low": change.ci_low})
        for c in self.creep:
            if c.ci_low > 1 + threshold:
                out.append({"what": f"creep against the {c.reference} segment", "index": c.newest[0],
                            "ratio": c.ratio, "ci_low": c.ci_low})
        return out


@dataclass
class History:
    series: list[Series]
    skipped_files: list[SkippedFile]
    notes: list[str]
    order_method: str
    threshold: float
    n_files: int
    n_runs: int
    acceptances: list[Acceptance] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    detector: str = DEFAULT_DETECTOR

    def change_rows(self) -> list[dict[str, Any]]:
        """Every change point, regressions first (largest first), then improvements, then minor ones."""
        rows = []
        for s in self.series:
            d = s.detection
            if not d:
                continue
            sw = {c["index"]: c["changes"] for c in s.software_changes()}
            for i, ch in enumerate(d.changes):
                prev, new = s.points[ch.index - 1], s.points[ch.index]
                is_suspected = suspected(ch, len(s.points))
                rows.append({
                    "series": s.key, "case": s.case_id, "machine": s.machine,
                    "commit": new.commit, "previous_commit": prev.commit,
                    "time": new.time, "index": ch.index,
                    "ratio": ch.ratio, "ci_low": ch.ci_low, "ci_high": ch.ci_high, "verdict": ch.verdict,
                    "accepted": i in s.accepted_changes,
                    "fails": i == len(d.changes) - 1 and fails(ch, threshold=self.threshold)
                    and i not in s.accepted_changes,
                    "software_change": _software_text(sw.get(ch.index)),
                    "ab_command": ab_command(s, prev, new),
                    "runs_after": sum(len(p.runs) for p in s.points[ch.after[0]:ch.after[1]]),
                    # Seen only in the newest few points: those points are the evidence, `ab` settles it.
                    "suspected": is_suspected,
                    "confirming_commits": [p.commit for p in s.points[ch.after[0]:ch.after[1]]] if is_suspected else [],
                })
        order = {"regression": 0, "improvement": 1, "minor": 2}
        rows.sort(key=lambda r: (order[r["verdict"]], -abs(math.log(r["ratio"])), r["case"]))
        return rows

    def creep_rows(self) -> list[dict[str, Any]]:
        rows = []
        for s in self.series:
            for c in s.creep:
                ref_last = s.points[c.ref_segment[1] - 1]
                newest = s.points[c.newest[0]]
                rows.append({
                    "series": s.key, "case": s.case_id, "machine": s.machine, "reference": c.reference,
                    "reference_commits": [s.points[c.ref_segment[0]].commit, ref_last.commit],
                    "newest_commits": [newest.commit, s.points[-1].commit],
                    "ratio": c.ratio, "ci_low": c.ci_low, "ci_high": c.ci_high,
                    "fails": c.ci_low > 1 + self.threshold,
                    "ab_command": ab_command(s, ref_last, s.points[-1]),
                })
        rows.sort(key=lambda r: -r["ratio"])
        return rows

    def failing(self) -> list[dict[str, Any]]:
        return [{"case": s.case_id, "machine": s.machine, "commit": s.points[f["index"]].commit, **f}
                for s in self.series for f in s.failing(threshold=self.threshold)]

    def to_dict(self) -> dict[str, Any]:
        series = []
        for s in self.series:
            shown = s.shown()
            d = s.detection
            series.append({
                "key": s.key, "case": s.case_id, "kind": s.kind, "machine": s.machine, "threads": s.threads,
                "config": s.config, "paced": s.paced, "pace_ref_s": s.pace_ref_s,
                "sigma": d.sigma if d else None, "penalty": d.pen if d else None,
                "detector": d.detector if d else None, "noise": s.noise(),
                "segments": [list(b) for b in d.segments] if d else [],
                "software_changes": s.software_changes(),
                "memory": s.memory(),
                "notes": s.notes,
                "points": [{
                    "commit": p.commit, "time": p.time, "median_s": p.median_s,
                    "runs": len(p.runs), "run_medians_s": [r.median_s for r in p.runs],
                    "value_s": v["value_s"], "q1_s": v["q1_s"], "q3_s": v["q3_s"],
                    "software": p.software,
                    "schema_versions": sorted({r.schema for r in p.runs if r.schema is not None}),
                    "run_files": [r.path for r in p.runs],
                } for p, v in zip(s.points, shown)],
            })
        return {
            "settings": {"threshold": self.threshold, "order": self.order_method,
                         "detector": self.detector,
                         "detection": _detection_text(self.detector),
                         "value": "value_s is the median the detection used, in seconds: paced medians rescaled "
                                  "by the series' pace_ref_s when paced, else the raw median (median_s)"},
            "sources": self.sources,
            "files": self.n_files, "runs": self.n_runs,
            "series": series,
            "change_points": self.change_rows(),
            "creep": self.creep_rows(),
            "failing": self.failing(),
            "accepted": [a.to_dict() for a in self.acceptances],
            "skipped_files": [{"path": f.path, "reason": f.reason} for f in self.skipped_files],
            "notes": self.notes,
        }


def _detection_text(detector: str) -> str:
    if detector == "pelt":
        return (f"ruptures Pelt, {COST_MODEL} cost on log medians, min_size {MIN_SEGMENT}, "
                f"pen = {PENALTY_C:g} * sigma * ln(n)")
    return (f"binary segmentation of log medians by a CUSUM scan of scores clipped at {SCORE_CLIP:g} noise units, "
            f"each split a permutation test at {ALPHA:g} per series, min_size {MIN_SEGMENT}; a change whose new "
            f"segment is the newest and shorter than {SUSPECT_RUNS} points is suspected")


def _software_text(changes: list[dict] | None) -> str:
    if not changes:
        return ""
    return ", ".join(f"{c['what']} {c['from']} → {c['to']}" for c in changes)


def ab_command(series: Series, previous: Point, commit: Point) -> str:
    """The ``alexnet-bench ab`` command that confirms a change side by side (docs/compare.md)."""
    if previous.commit == commit.commit:
        return ""  # the code did not change, the software did: ab compares code, not environments
    selector = series.case_id if series.kind == "loop" else f"{series.case_id} and not loop"
    preset = next((r.preset for r in reversed(commit.runs) if r.preset), None)
    preset_arg = f" --preset {preset}" if preset and preset != "quick" else ""
    return f'alexnet-bench ab {previous.commit[:12]} {commit.commit[:12]}{preset_arg} -k "{selector}"'


# --- reading the runs ------------------------------------------------------------------------


def find_run_files(sources: Sequence[str], *, storage: Path | str = DEFAULT_STORAGE) -> tuple[list[Path], list[str]]:
    """Every ``*.json`` under the given files or folders (default: ``storage``), leaving out each
    folder's ``ab`` subfolder and hidden folders. Returns the files and the roots searched.

    Raises `RunLoadError` for a path that does not exist or when no file is found.
    """
    roots = [storage_dir(s) for s in sources] or [storage_dir(storage)]
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            for p in sorted(root.rglob("*.json")):
                rel = p.relative_to(root).parts
                if rel[0] == AB_FOLDER or any(part.startswith(".") for part in rel[:-1]):
                    continue
                files.append(p)
        else:
            raise RunLoadError(f"{str(root)!r} does not exist; give saved-run files or folders (default {DEFAULT_STORAGE}/)")
    if not files:
        where = ", ".join(f"{r}/" for r in roots)
        raise RunLoadError(f"no saved runs (*.json) under {where} (its {AB_FOLDER}/ folder is left out); "
                           "save some with `pytest bench/ --benchmark-save=NAME`")
    # One file reached through two roots is read once.
    seen: dict[Path, Path] = {}
    for f in files:
        seen.setdefault(f.resolve(), f)
    return list(seen.values()), [str(r) for r in roots]


def _finite(values: Any) -> np.ndarray:
    if not isinstance(values, list):
        return np.asarray([], dtype=float)
    a = np.asarray([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)], dtype=float)
    return a[np.isfinite(a) & (a > 0)]


def _measurement(run: Run, bench: dict, *, schema: int | None) -> Measurement | None:
    stats = bench.get("stats") or {}
    extra = bench.get("extra_info") or {}
    data = _finite(stats.get("data"))
    if data.size:
        st = summarize(data)
        q1, med, q3 = st.q1, st.median, st.q3
    else:
        med = stats.get("median")
        if not isinstance(med, (int, float)) or not med > 0:
            return None
        med = float(med)
        q1 = float(stats["q1"]) if isinstance(stats.get("q1"), (int, float)) else None
        q3 = float(stats["q3"]) if isinstance(stats.get("q3"), (int, float)) else None
    paced = paced_q1 = paced_q3 = pace_s = None
    pace = _finite((extra.get("pace") or {}).get("samples") if isinstance(extra.get("pace"), dict) else None)
    if data.size and pace.size:
        ps = paced_samples(data, pace)
        if ps is not None:
            pst = summarize(ps)
            paced_q1, paced, paced_q3 = pst.q1, pst.median, pst.q3
            pace_s = summarize(pace).median
    memory = extra.get("peak_memory_bytes")
    return Measurement(
        run_label=run.label, path=str(run.path), datetime=run.datetime if isinstance(run.datetime, str) else None,
        schema=schema, preset=run.suite.get("preset") if isinstance(run.suite.get("preset"), str) else None,
        median_s=med, q1_s=q1, q3_s=q3, paced=paced, paced_q1=paced_q1, paced_q3=paced_q3, pace_s=pace_s,
        peak_memory_bytes=float(memory) if isinstance(memory, (int, float)) and not isinstance(memory, bool) else None,
    )


def _fingerprint(info: dict) -> tuple[tuple[str, Any], ...]:
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    cpu_model = info.get("cpu_model") or cpu.get("brand_raw") or info.get("processor") or "unknown CPU"
    cpu_count = info.get("cpu_count") or cpu.get("count")
    gpu = info.get("gpu_name")
    # No GPU: the count is moot (older runs lack gpu_count, newer say 0).
    gpu_count = (info.get("gpu_count") or 1) if gpu else 0
    return (("cpu", str(cpu_model)), ("cpu_count", cpu_count), ("gpu", gpu or None), ("gpu_count", gpu_count))


def _machine_label(fp: tuple[tuple[str, Any], ...]) -> str:
    d = dict(fp)
    cpu = f"{d['cpu']} × {d['cpu_count']} cores" if d["cpu_count"] else d["cpu"]
    if d["gpu"]:
        return f"{d['gpu_count']} × {d['gpu']}; {cpu}"
    return cpu


def _software(info: dict) -> dict[str, Any]:
    return {key: info.get(key) for key, _ in SOFTWARE_KEYS}


def _parse_time(text: Any) -> _dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def first_parent_positions(repo: Path | None, ref: str = "HEAD") -> dict[str, int] | None:
    """Commit id -> position on ``ref``'s first-parent history (0 = oldest); None without git or a repo."""
    if repo is None:
        return None
    try:
        proc = subprocess.run(["git", "-C", str(repo), "rev-list", "--first-parent", ref],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    ids = proc.stdout.split()[::-1]
    return {c: i for i, c in enumerate(ids)}


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_history(
    sources: Sequence[str] = (),
    *,
    storage: Path | str = DEFAULT_STORAGE,
    repo: Path | None = Path("."),
    ref: str = "HEAD",
    threshold: float = DEFAULT_THRESHOLD,
    pace: bool = True,
    acceptances: Sequence[Acceptance] = (),
    detector: str = DEFAULT_DETECTOR,
    runs: Sequence[Run] | None = None,
) -> History:
    """Read, group, order and judge every saved run under ``sources`` (default: ``storage``), or the
    runs given as ``runs`` (already parsed: no file is read)."""
    if runs is not None:
        files, roots = list(runs), ["(runs given)"]
    else:
        files, roots = find_run_files(sources, storage=storage)
    skipped: list[SkippedFile] = []
    notes: list[str] = []
    dirty: list[str] = []
    no_commit: list[str] = []
    partial: list[str] = []
    n_runs = 0
    # Group: series by (hardware, threads, case), points by (commit, software). Each file is read,
    # taken apart and let go: hundreds of nightly runs need not sit in memory at once.
    series: dict[str, Series] = {}
    points: dict[str, dict[str, Point]] = {}
    schemas: set[int | None] = set()
    for path in files:
        try:
            run = path if isinstance(path, Run) else load_run(path)
        except RunLoadError as exc:
            reason = str(exc)  # load_run's messages start with the path, which SkippedFile already holds
            if reason.startswith(str(path)):
                reason = reason[len(str(path)):].lstrip(" :").removeprefix("is ")
            skipped.append(SkippedFile(str(path), reason))
            continue
        n_runs += 1
        if run.commit_info.get("dirty"):
            dirty.append(run.label)
            continue
        if run.interrupted:  # cut short by a signal: not a night's run of its commit
            partial.append(f"{run.label} ({run.interrupted.get('signal')})")
            continue
        commit = run.commit_info.get("id")
        if not isinstance(commit, str) or not _COMMIT_RE.match(commit):
            no_commit.append(run.label)  # pytest-benchmark writes "unversioned" outside a repository
            continue
        info = run.machine_info
        fp = _fingerprint(info)
        software = _software(info)
        schema = run.schema
        schemas.add(schema)
        threads = info.get("torch_num_threads")
        for bench in run.benchmarks:
            extra = bench.get("extra_info") if isinstance(bench.get("extra_info"), dict) else {}
            case_id = str(extra.get("case_id") or bench.get("name"))
            config = extra.get("config") if isinstance(extra.get("config"), dict) else {}
            m = _measurement(run, bench, schema=schema)
            if m is None:
                skipped.append(SkippedFile(str(run.path), f"case {case_id!r} has no timed rounds or median"))
                continue
            # Samples are per step of a round of k back-to-back steps (schema 3; absent: 1): a
            # different k is a different quantity on a GPU, so it is a series of its own.
            k = int(extra.get("steps_per_round") or 1)
            skey = _key(fp, threads, case_id, config, *([k] if k != 1 else []))
            if skey not in series:
                series[skey] = Series(key=f"s-{skey}", case_id=case_id if k == 1 else f"{case_id} ({k} steps/round)",
                                      kind=extra.get("kind"), config=config, machine=_machine_label(fp), threads=threads)
                points[skey] = {}
            pkey = json.dumps([commit, software], sort_keys=True, default=str)
            point = points[skey].get(pkey)
            if point is None:
                point = points[skey][pkey] = Point(commit=commit, commit_time=run.commit_info.get("time"),
                                                   software=software)
            point.runs.append(m)
    if not n_runs:
        raise RunLoadError(f"no readable runs among {len(files)} file(s) under {', '.join(roots)}: "
                           f"{skipped[0].reason}" + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""))
    if dirty:
        notes.append(f"{len(dirty)} run(s) from a tree with uncommitted changes left out (a point is a commit): "
                     + _few(dirty))
    if no_commit:
        notes.append(f"{len(no_commit)} run(s) without a commit id (saved outside a git repository) left out: "
                     + _few(no_commit))
    if partial:
        notes.append(f"{len(partial)} interrupted run(s) left out (cut short by a signal, alexnet.interrupted): "
                     + _few(partial))
    if not series:
        raise RunLoadError(f"none of the {n_runs} run(s) under {', '.join(roots)} has a case from a clean commit "
                           "(runs from a dirty tree or without a commit id are left out)")
    for pts in points.values():
        for p in pts.values():
            p.runs.sort(key=lambda r: (r.datetime or "", r.path))

    # Order: first-parent history when every commit is on it, else commit time, else run time.
    commits = {p.commit for pts in points.values() for p in pts.values()}
    positions = first_parent_positions(repo, ref)
    if positions is not None and commits <= positions.keys():
        method = ORDER_METHODS[0]
    else:
        if positions is not None:
            off = len(commits - positions.keys())
            notes.append(f"{off} of {len(commits)} commit(s) are not on the first-parent history of {ref} in "
                         f"{repo}: points are ordered by commit time")
        else:
            notes.append("no git repository at hand (--repo): points are ordered by commit time")
        method = ORDER_METHODS[1]
    n_run_time = 0
    for pts in points.values():
        for p in pts.values():
            first_run = min((_parse_time(r.datetime) for r in p.runs if _parse_time(r.datetime)),
                            default=_dt.datetime.min.replace(tzinfo=_dt.timezone.utc))
            if method == ORDER_METHODS[0]:
                p.order_key = (positions[p.commit], first_run)
            else:
                ct = _parse_time(p.commit_time)
                n_run_time += ct is None
                p.order_key = (ct or first_run, first_run)
    if n_run_time:
        notes.append(f"{n_run_time} point(s) have no commit time in commit_info: ordered by run time")
        if n_run_time == sum(len(pts) for pts in points.values()):
            method = ORDER_METHODS[2]
    if len(schemas - {None}) > 1:
        notes.append(f"runs of schema versions {', '.join(str(s) for s in sorted(schemas - {None}))} are read "
                     "together: timing fields keep their meaning; peak memory is not compared across schema 2 on CPU")

    out: list[Series] = []
    for skey, s in series.items():
        s.points = sorted(points[skey].values(), key=lambda p: p.order_key)
        every_run = [r for p in s.points for r in p.runs]
        s.paced = pace and all(r.paced is not None for r in every_run)
        if s.paced:
            s.pace_ref_s = float(np.median([r.pace_s for r in every_run]))
        elif pace:
            s.notes.append("raw medians: some runs of this series have no pace samples (saved by an older suite)")
        if len(s.points) < 2 * MIN_SEGMENT:
            s.notes.append(f"{len(s.points)} points: a change needs {MIN_SEGMENT} commits on each side, so none "
                           f"can be placed before {2 * MIN_SEGMENT}")
        s.detection = detect(s.run_values(), threshold=threshold, detector=detector)
        since = _apply_acceptances(s, acceptances)
        s.creep = find_creep(s.run_values(), s.detection, threshold=threshold, since=since)
        out.append(s)
    out.sort(key=lambda s: (s.machine, s.case_id))
    n_raw = sum(not s.paced for s in out)
    if pace and n_raw:
        notes.append(f"{n_raw} of {len(out)} series judged on raw medians: some of their runs have no pace samples")
    return History(series=out, skipped_files=skipped, notes=notes, order_method=method, threshold=threshold,
                   n_files=len(files), n_runs=n_runs, acceptances=list(acceptances), sources=roots, detector=detector)


def _apply_acceptances(s: Series, acceptances: Sequence[Acceptance]) -> int:
    """Mark the changes an acceptance covers; return the first point after the last accepted change
    (creep is measured from there)."""
    since = 0
    if not s.detection:
        return since
    for i, ch in enumerate(s.detection.changes):
        near = [p.commit for p in s.points[max(ch.index - 1, 0):ch.index + 2]]
        if any(matches(a, commits=near, case_id=s.case_id) for a in acceptances):
            s.accepted_changes.add(i)
            since = ch.index
    return since


def _few(labels, limit: int = 5) -> str:
    labels = list(labels)
    return ", ".join(labels[:limit]) + (f" and {len(labels) - limit} more" if len(labels) > limit else "")
