"""The one store of saved runs: numbering, saving, finding and reading them. No torch, nothing else of ours.

Layout (pytest-benchmark's `FileStorage`, docs/saved-run-format.md):
``<storage>/<machine_id>/NNNN_<name>.json``, where ``machine_id`` is pytest-benchmark's
(``Linux-CPython-3.11-64bit``: system, interpreter, version, word size) and ``NNNN`` is one more
than the largest number in that machine's folder (4 digits at least; each machine folder counts
on its own). ``<storage>`` may be written as pytest-benchmark spells it, ``file://DIR``.

Every writer saves through `RunStore.save`:

- `alexnet-bench ddp` and each side of a duet (`bench.duet.session`) call it directly;
- the suite's run is made and saved by pytest-benchmark (``--benchmark-save``,
  ``--benchmark-autosave``, ``--benchmark-storage`` keep their meaning): the plugin
  (`bench.suite.plugin`) swaps pytest-benchmark's `FileStorage` for `file_storage`'s, which is the
  same class with its ``save`` done here. The file is the one pytest-benchmark would write
  (same folder, name, number and JSON text), except that it is never overwritten.

Saving never overwrites: the file is created with ``open(..., "x")`` and the next number is
tried when it exists. Writers of this store also hold an exclusive `fcntl.flock` on the machine
folder while they number and create, so two runs saved at the same moment under different names
never share a number (a writer that does not take the lock, e.g. pytest-benchmark itself in an
older checkout, still cannot overwrite, only collide on the number).

Runs are named by path, by run id (``0003`` or ``3``, searched under ``<storage>/*/``) or by save
name (``smoke``: the latest run saved under that name, or ``0003_smoke``); no spec means the latest
run. Every failure to find or read one raises `RunLoadError` with a one-line message naming the
bad value, so a command can print it and exit 2.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from runrecord.schema import RunLoadError, RunRecord, check_run_json

__all__ = [
    "DEFAULT_STORAGE",
    "RUN_FILE_RE",
    "RunLoadError",
    "RunStore",
    "current_machine_id",
    "dumps",
    "file_storage",
    "read_run",
    "read_run_json",
    "run_file_id",
    "storage_dir",
]

DEFAULT_STORAGE = Path(".benchmarks")
# pytest-benchmark names saved runs NNNN_<name>.json, numbered per machine_id folder.
RUN_FILE_RE = re.compile(r"^(?P<id>\d{4,})_(?P<name>.*)\.json$")
_RUN_ID_RE = re.compile(r"^\d+$")
# pytest-benchmark refuses these in --benchmark-save (pytest_benchmark.utils.parse_save).
_ILLEGAL_NAME_CHARS = "\\/:*?<>|"
# A save retries with the next number at most this often (other writers saving meanwhile).
_MAX_SAVE_ATTEMPTS = 1000


def storage_dir(storage: Path | str) -> Path:
    """The storage folder, accepting pytest-benchmark's own spelling too: ``file://DIR``."""
    text = str(storage)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return Path(text)


def run_file_id(path: Path | str) -> tuple[str, str]:
    """A run file's id and save name, ``("0003", "smoke")``; ``(stem, "")`` for a file not named ``NNNN_<name>.json``."""
    path = Path(path)
    m = RUN_FILE_RE.match(path.name)
    return (m.group("id"), m.group("name")) if m else (path.stem, "")


def current_machine_id() -> str:
    """pytest-benchmark's machine id for this interpreter: the folder its runs are saved in."""
    from pytest_benchmark.utils import get_machine_id

    return get_machine_id()


def dumps(doc: dict[str, Any]) -> str:
    """The JSON text of a run, as pytest-benchmark writes it (`pytest_benchmark.utils.safe_dumps`
    with ``ensure_ascii=True, indent=4``: a value JSON cannot hold is written as ``UNSERIALIZABLE[repr]``
    rather than losing the run)."""
    return json.dumps(doc, ensure_ascii=True, indent=4, default=lambda o: f"UNSERIALIZABLE[{o!r}]")


def read_run_json(path: Path | str) -> dict[str, Any]:
    """Read one saved run file and check it has the shape of a pytest-benchmark run."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunLoadError(f"run file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunLoadError(f"cannot read run file {str(path)!r}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunLoadError(f"{path} is corrupt JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    check_run_json(data, path)
    return data


def read_run(path: Path | str) -> RunRecord:
    """`read_run_json` as typed records."""
    return RunRecord.from_json(read_run_json(path), path)


def _number(path: Path) -> int:
    return int(RUN_FILE_RE.match(path.name).group("id"))  # type: ignore[union-attr]


def _next_number(folder: Path) -> int:
    numbers = [int(m.group("id")) for p in folder.iterdir() if (m := RUN_FILE_RE.match(p.name))]
    return max(numbers, default=0) + 1


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive flock on the machine folder (POSIX); no lock where flock is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: "x" alone still never overwrites
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class RunStore:
    """The saved runs under one storage folder (default ``.benchmarks``; ``file://DIR`` accepted)."""

    def __init__(self, storage: Path | str = DEFAULT_STORAGE) -> None:
        self.root = storage_dir(storage)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # --- saving ---------------------------------------------------------------------------------

    def save(self, run: RunRecord | dict[str, Any], name: str, *, machine_id: str | None = None) -> Path:
        """Write ``<storage>/<machine_id>/NNNN_<name>.json`` with the next free number and return it.

        ``machine_id`` defaults to this interpreter's (pytest-benchmark's). Never overwrites a file.
        Raises ValueError for a name pytest-benchmark would refuse (empty, or one of ``\\/:*?<>|``).
        """
        bad = "".join(c for c in _ILLEGAL_NAME_CHARS if c in name)
        if not name or bad:
            raise ValueError(f"run name {name!r} is not valid; it must be non-empty and hold none of {_ILLEGAL_NAME_CHARS}")
        machine_id = machine_id or current_machine_id()
        if not machine_id or any(c in machine_id for c in "/\\") or machine_id in (".", ".."):
            raise ValueError(f"machine id {machine_id!r} is not a folder name")
        text = dumps(run.to_json() if isinstance(run, RunRecord) else run)
        folder = self.root / machine_id
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            for _ in range(_MAX_SAVE_ATTEMPTS):
                path = folder / f"{_next_number(folder):04d}_{name}.json"
                try:
                    with open(path, "x", encoding="utf-8") as fh:  # "x": fail rather than overwrite
                        fh.write(text)
                    return path
                except FileExistsError:  # saved meanwhile by a writer without the lock: number again
                    continue
        raise RuntimeError(f"no free run number in {folder} after {_MAX_SAVE_ATTEMPTS} attempts")

    # --- finding --------------------------------------------------------------------------------

    def saved(self) -> list[Path]:
        """Every ``NNNN_<name>.json`` under ``<storage>/*/``, sorted by path."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*/*.json") if RUN_FILE_RE.match(p.name))

    @staticmethod
    def newest(paths: Sequence[Path]) -> Path:
        """The latest of these run files."""
        # Run numbers only order runs within one machine_id folder; across folders the file's
        # modification time is the better guide, with the run number breaking ties.
        return max(paths, key=lambda p: (p.stat().st_mtime, _number(p)))

    def resolve(self, specs: Sequence[str]) -> list[Path]:
        """Turn run specs (paths, run ids, save names) into existing run files, in the order given.

        Raises `RunLoadError` naming the spec that matched nothing (or more than one run).
        """
        saved = self.saved()
        if not specs:
            if not saved:
                raise RunLoadError(
                    f"no runs found in {self.root}/; save one with `pytest bench/ --benchmark-save=NAME` "
                    "or name a run file"
                )
            return [self.newest(saved)]

        paths: list[Path] = []
        for spec in specs:
            spec = str(spec)
            as_path = Path(spec)
            if as_path.is_file():
                paths.append(as_path)
                continue
            if _RUN_ID_RE.match(spec):
                wanted = int(spec)
                hits = [p for p in saved if _number(p) == wanted]
                what = f"run id {spec!r}"
            elif not spec.endswith(".json") and "/" not in spec:
                hits = [p for p in saved if spec in (run_file_id(p)[1], p.stem)]
                hits = [self.newest(hits)] if hits else []
                what = f"run name {spec!r}"
            else:
                raise RunLoadError(f"run file {spec!r} not found")
            if not hits:
                known = ", ".join(p.stem for p in saved[-5:]) or "none"
                raise RunLoadError(f"{what} not found in {self.root}/*/ (latest saved runs: {known})")
            if len(hits) > 1:
                raise RunLoadError(
                    f"{what} is ambiguous: {', '.join(str(p) for p in hits)}; give the file path instead"
                )
            paths.append(hits[0])
        return paths


@functools.cache
def _file_storage_class() -> type:
    from pytest_benchmark.storage.file import FileStorage

    class StoreFileStorage(FileStorage):
        """pytest-benchmark's `FileStorage` whose ``save`` is `RunStore.save` (same file, never overwritten)."""

        def save(self, output_json: dict[str, Any], save: str) -> Path:
            path = RunStore(self.path).save(output_json, save, machine_id=self.default_machine_id)
            self.logger.info(f"Saved benchmark data in: {path}")
            return path

    return StoreFileStorage


def file_storage(storage: Any) -> Any:
    """pytest-benchmark's storage object with its saves done by `RunStore.save`.

    Given a plain `pytest_benchmark.storage.file.FileStorage` (what ``--benchmark-storage=DIR`` or
    ``file://DIR`` makes) with a machine id, returns the same storage (folder, logger, machine id)
    whose ``save`` goes through this store; anything else (an Elasticsearch storage) is returned
    unchanged and saves as pytest-benchmark does.
    """
    from pytest_benchmark.storage.file import FileStorage

    if type(storage) is not FileStorage or not storage.default_machine_id:
        return storage
    return _file_storage_class()(storage.path, logger=storage.logger, default_machine_id=storage.default_machine_id)
