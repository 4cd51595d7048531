"""The saved run as typed records: the code form of docs/saved-run-format.md. No torch, nothing else of ours.

A saved run is a pytest-benchmark JSON document (``machine_info``, ``commit_info``, ``benchmarks``,
``datetime``, ``version``) plus our run-level ``alexnet`` section. These records read and write
exactly that JSON:

- `RunRecord`: the whole document; `Case`: one entry of ``benchmarks``; `Section`: the ``alexnet``
  section, with its `Skip` (``alexnet.skipped``) and `Failure` (``alexnet.failed``) entries;
- `Isolation` (``extra_info.isolation``) and `Duet` (``extra_info.duet``): the two nested records
  that writers other than the suite's worker build. The rest of ``extra_info`` stays a JSON object:
  its keys depend on the case's kind and are listed in docs/saved-run-format.md.

``from_json`` reads every version this project wrote: keys a version did not have get the meaning
the format page gives them for that version (e.g. a schema 1 run ran its cases in the pytest
process: ``isolation`` reads as ``"none"``). ``to_json`` writes the current version. Keys a record
does not know are kept in its ``extra`` and written back after the known ones, so nothing a newer
writer added is lost on the way through.

A document that is not a pytest-benchmark run at all raises `RunLoadError` with one line naming
where it came from and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping

__all__ = [
    "SCHEMA_VERSION",
    "SECTION",
    "RunLoadError",
    "RunRecord",
    "Case",
    "Section",
    "Skip",
    "Failure",
    "Isolation",
    "Duet",
    "check_run_json",
    "schema_version",
    "suite_machine_info",
]

# 1: the first format. 2: every case in its own worker (extra_info.isolation, alexnet.failed,
# alexnet.isolation); on a CPU peak_memory_bytes is the case's worker's own peak RSS
# (docs/saved-run-format.md, "Schema versions").
SCHEMA_VERSION = 3
# The key of our run-level section in pytest-benchmark's document.
SECTION = "alexnet"


class RunLoadError(ValueError):
    """No runs found, an unreadable or corrupt JSON file, or a file that is not a pytest-benchmark run."""


class _Record:
    """A JSON object with known keys (the dataclass fields) and the unknown ones in ``extra``.

    ``_OMIT_NONE`` names fields written only when they are not None (a missing key means "not
    known" or "does not apply" there, as the format page says).
    """

    _OMIT_NONE: ClassVar[tuple[str, ...]] = ()
    _WHAT: ClassVar[str] = "record"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self._OMIT_NONE:
                continue
            out[f.name] = value
        out.update(self.extra)  # type: ignore[attr-defined]
        return out

    @classmethod
    def _split(cls, data: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(data, Mapping):
            raise RunLoadError(f"{where}: {cls._WHAT} is {type(data).__name__}, not an object")
        names = {f.name for f in fields(cls)} - {"extra"}  # type: ignore[arg-type]
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        return known, extra

    @classmethod
    def from_json(cls, data: Any, where: str = "run"):
        known, extra = cls._split(data, where)
        return cls(**known, extra=extra)  # type: ignore[call-arg]


@dataclass
class Skip(_Record):
    """A case not run here (unsupported, out of memory): an entry of ``alexnet.skipped``."""

    name: str | None = None
    fullname: str | None = None
    case_id: str | None = None
    config: dict[str, Any] | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _WHAT: ClassVar[str] = "a skipped case"


@dataclass
class Failure(_Record):
    """A case whose worker died, hit a fatal device error, overran its timeout or met foreign
    load under ``--strict-isolation``: an entry of ``alexnet.failed``. The run is saved without it."""

    name: str | None = None
    fullname: str | None = None
    case_id: str | None = None
    config: dict[str, Any] | None = None
    reason: str | None = None
    worker_pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    stderr_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    _WHAT: ClassVar[str] = "a failed case"


@dataclass
class Isolation(_Record):
    """Where a case ran: ``extra_info.isolation``.

    ``mode`` is ``process`` (a fresh process of its own) or ``none`` (in the process that ran the
    suite). The suite's worker adds its pids, start time and environment (docs/saved-run-format.md);
    ``launch`` says how the process was started where that is not the suite's worker (e.g.
    ``torchrun`` for `alexnet-bench ddp`). Fields that are None are not written.
    """

    mode: str = "process"
    launch: str | None = None
    worker_pid: int | None = None
    worker_start_s: float | None = None
    step_pid: int | None = None
    zygote_pid: int | None = None
    env: dict[str, Any] | None = None
    cuda_initialized_before_build: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _OMIT_NONE: ClassVar[tuple[str, ...]] = ("launch", "worker_pid", "worker_start_s", "step_pid", "zygote_pid", "env",
                                             "cuda_initialized_before_build")
    _WHAT: ClassVar[str] = "extra_info.isolation"


@dataclass
class Duet(_Record):
    """One side of one `alexnet-bench ab` duet session: ``extra_info.duet``.

    Runs saved before ``rewarm`` and ``allocator`` existed had neither: they read as no re-warm
    (0) and glibc's defaults (``{"policy": "default"}``).
    """

    session: str | None = None
    side: str | None = None
    ref: str | None = None
    sha: str | None = None
    estimator: str | None = None
    order: list[str] = field(default_factory=list)
    rounds_per_side: int | None = None
    worker_pid: int | None = None
    python: str | None = None
    session_wall_s: float | None = None
    rewarm: int = 0
    allocator: dict[str, Any] = field(default_factory=lambda: {"policy": "default"})
    extra: dict[str, Any] = field(default_factory=dict)

    _WHAT: ClassVar[str] = "extra_info.duet"


@dataclass
class Case:
    """One entry of ``benchmarks``, as pytest-benchmark writes it (``stats`` in seconds per step,
    ``stats.data`` the timed rounds); ``extra_info`` holds our per-case fields."""

    name: str
    stats: dict[str, Any]
    group: str | None = None
    fullname: str | None = None
    params: dict[str, Any] | None = None
    param: str | None = None
    extra_info: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. pytest-benchmark's ``cprofile``

    _KEYS: ClassVar[tuple[str, ...]] = ("group", "name", "fullname", "params", "param", "extra_info", "options", "stats")

    @property
    def case_id(self) -> str:
        return self.extra_info.get("case_id") or self.name

    @property
    def kind(self) -> str | None:
        return self.extra_info.get("kind")

    @property
    def config(self) -> dict[str, Any]:
        return self.extra_info.get("config") or {}

    @property
    def samples(self) -> list[float]:
        """The timed rounds (``stats.data``); [] when the run was saved without them."""
        return list(self.stats.get("data") or [])

    @property
    def isolation(self) -> Isolation | None:
        value = self.extra_info.get("isolation")
        return Isolation.from_json(value, self.name) if isinstance(value, Mapping) else None

    @property
    def duet(self) -> Duet | None:
        value = self.extra_info.get("duet")
        return Duet.from_json(value, self.name) if isinstance(value, Mapping) else None

    def to_json(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self._KEYS}, **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str = "run", index: int = 0) -> Case:
        if not isinstance(data, Mapping) or not isinstance(data.get("stats"), Mapping) or "name" not in data:
            raise RunLoadError(f"{where} is not a pytest-benchmark run: benchmark #{index} has no 'name' and 'stats'")
        known = {k: data[k] for k in cls._KEYS if k in data}
        for key in ("extra_info", "options"):
            if known.get(key) is None:
                known[key] = {}
        return cls(**known, extra={k: v for k, v in data.items() if k not in cls._KEYS})


@dataclass
class Section:
    """The run-level ``alexnet`` section.

    ``isolation``: ``process`` (each case in a process of its own) or ``none``; schema 1 runs ran
    every case in the pytest process and read as ``none``; a schema 2 run saved before a writer
    recorded it (`alexnet-bench ddp` before it had the field) reads as None. ``failed`` and
    ``skipped`` read as [] where absent; ``rounds``/``warmup_rounds`` as None. ``notices``: what
    the run said once rather than for every case (e.g. that NVML's pids cannot be matched with
    the suite's in this container); [] where absent. ``interrupted``: None, or for a run cut short
    by a signal ``{signal, not_run, collected}`` (the case ids it did not run): a partial run,
    which `history` leaves out and `compare` judges only when asked.
    """

    schema_version: int | None = SCHEMA_VERSION
    preset: str | None = None
    rounds: int | None = None
    warmup_rounds: int | None = None
    skipped: list[Skip] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    isolation: str | None = None
    calibration: dict[str, Any] | None = None
    calibrations: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    interrupted: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS: ClassVar[tuple[str, ...]] = ("schema_version", "preset", "rounds", "warmup_rounds", "skipped", "failed",
                                        "isolation", "calibration", "calibrations", "notices", "interrupted")

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._KEYS}
        out["skipped"] = [s.to_json() for s in self.skipped]
        out["failed"] = [f.to_json() for f in self.failed]
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str = "run") -> Section:
        if not isinstance(data, Mapping):
            raise RunLoadError(f"{where}: the '{SECTION}' section is {type(data).__name__}, not an object")
        known = {k: data[k] for k in cls._KEYS if k in data}
        version = known.get("schema_version")
        known["skipped"] = [Skip.from_json(s, where) for s in (known.get("skipped") or [])]
        known["failed"] = [Failure.from_json(f, where) for f in (known.get("failed") or [])]
        known["calibrations"] = known.get("calibrations") or {}
        known["notices"] = [str(n) for n in (known.get("notices") or [])]
        if "isolation" not in known and version == 1:
            known["isolation"] = "none"
        known.setdefault("schema_version", None)
        return cls(**known, extra={k: v for k, v in data.items() if k not in cls._KEYS})


@dataclass
class RunRecord:
    """A whole saved run. ``alexnet`` is None for a plain pytest-benchmark run of another project."""

    machine_info: dict[str, Any]
    benchmarks: list[Case] = field(default_factory=list)
    commit_info: dict[str, Any] = field(default_factory=dict)
    datetime: str | None = None
    version: str | None = None
    alexnet: Section | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS: ClassVar[tuple[str, ...]] = ("machine_info", "commit_info", "benchmarks", "datetime", "version", SECTION)

    @property
    def schema_version(self) -> int | None:
        """The suite's schema version (``alexnet.schema_version``, else ``machine_info.suite_schema_version``)."""
        if self.alexnet is not None and _int(self.alexnet.schema_version) is not None:
            return self.alexnet.schema_version
        return _int(self.machine_info.get("suite_schema_version"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "machine_info": self.machine_info,
            "commit_info": self.commit_info,
            "benchmarks": [b.to_json() for b in self.benchmarks],
            "datetime": self.datetime,
            "version": self.version,
        }
        if self.alexnet is not None:
            out[SECTION] = self.alexnet.to_json()
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str | Path = "run") -> RunRecord:
        where = str(where)
        check_run_json(data, where)
        section = data.get(SECTION)
        return cls(
            machine_info=data["machine_info"],
            benchmarks=[Case.from_json(b, where, i) for i, b in enumerate(data["benchmarks"])],
            commit_info=data.get("commit_info") or {},
            datetime=data.get("datetime"),
            version=data.get("version"),
            alexnet=Section.from_json(section, where) if section is not None else None,
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
        )


def check_run_json(data: Any, where: str | Path) -> None:
    """Raise `RunLoadError` unless ``data`` has the shape of a pytest-benchmark saved run."""
    if not isinstance(data, dict):
        raise RunLoadError(f"{where} is not a pytest-benchmark run: top level is {type(data).__name__}, not an object")
    missing = [k for k in ("machine_info", "benchmarks") if k not in data]
    if missing:
        raise RunLoadError(f"{where} is not a pytest-benchmark run: missing key(s) {', '.join(missing)}")
    if not isinstance(data["benchmarks"], list) or not isinstance(data["machine_info"], dict):
        raise RunLoadError(f"{where} is not a pytest-benchmark run: 'benchmarks' must be a list and 'machine_info' an object")
    for i, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict) or "name" not in bench:
            raise RunLoadError(f"{where} is not a pytest-benchmark run: benchmark #{i} has no 'name' and 'stats'")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def schema_version(doc: Mapping[str, Any]) -> int | None:
    """A saved run's schema version: ``alexnet.schema_version``, else ``machine_info.suite_schema_version``;
    None for a run that records neither (not one of ours)."""
    section = doc.get(SECTION)
    info = doc.get("machine_info")
    for value in ((section or {}).get("schema_version") if isinstance(section, Mapping) else None,
                  info.get("suite_schema_version") if isinstance(info, Mapping) else None):
        if _int(value) is not None:
            return value
    return None


def suite_machine_info(base: Mapping[str, Any], additions: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """A run's ``machine_info``: pytest-benchmark's fields (``base``), the suite's additions
    (`bench.instruments.envinfo.machine_info`, gathered where the cases ran) and ``overrides``,
    stamped with this schema's ``suite_schema_version``."""
    return {**base, **additions, **overrides, "suite_schema_version": SCHEMA_VERSION}
