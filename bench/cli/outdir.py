"""The one ``--out`` policy of every command that writes a folder (docs/cli.md, "Output folders").

- ``--out DIR`` is checked before any work: it must be a new folder, an empty one, or a folder
  this same command wrote before; a file, a folder that holds anything else (or that another
  command wrote), or a place that cannot be created is refused with one line (exit 2).
- The output is built in a temporary sibling of DIR (``.DIR.XXXX.partial``) and renamed into
  place only when complete: a failure or an interrupt leaves the earlier folder untouched and
  no half-written one behind.
- The command's own earlier output in DIR is then replaced whole. It is recognised by the marker
  file the command writes (`MARKER`: the command's name and the entries it wrote); a folder
  holding any entry the marker does not list (a file the user added) is refused, so nothing the
  suite did not write is ever deleted.

Folders written before the marker existed are recognised by a command's ``legacy`` test (the
report's and the history page's own index.html), and only when they hold nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from bench.cli.errors import UsageError

__all__ = ["MARKER", "POLICY", "check_out_dir", "write_out_dir"]

MARKER = ".alexnet-bench-out.json"
# One line for each command's --help; the whole policy is in docs/cli.md.
POLICY = "a new or empty folder, or this command's own earlier output there, which is replaced (docs/cli.md)"

T = TypeVar("T")


def _read_marker(out: Path) -> dict | None:
    try:
        data = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _names(paths: list[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(paths)[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def check_out_dir(out: Path, command: str, what: str, *, flag: str = "--out",
                  legacy: Callable[[Path, list[str]], bool] | None = None) -> None:
    """Refuse, before any work, an output folder this command may not write (`UsageError`, exit 2).

    ``what`` names the command's output in the message ("report", "history page", ...);
    ``legacy(out, entries)`` recognises this command's output from before the marker.
    """
    shown = str(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {shown!r} is a file, not a folder; choose a new or empty folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            marker = _read_marker(out)
            if marker is not None and marker.get("command") == command:
                extra = [e for e in entries if e != MARKER and e not in set(marker.get("files") or [])]
                if extra:
                    raise UsageError(f"{flag} {shown!r} holds this command's earlier {what} and also "
                                     f"{_names(extra)}, which it did not write; move those or choose another folder")
            elif marker is not None:
                raise UsageError(f"{flag} {shown!r} holds no {what}: it holds the output of alexnet-bench "
                                 f"{marker.get('command')}; choose a new or empty folder")
            elif legacy is None or not legacy(out, entries):
                raise UsageError(f"{flag} {shown!r} holds no {what} (it already holds {_names(entries)}); choose a "
                                 "new or empty folder: nothing the suite did not write is replaced")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {shown!r} is not writable")
    # The folder beside which the output is built must exist or be creatable, and be writable.
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {shown!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {shown!r}: the folder {str(parent)!r} is not writable")


def write_out_dir(out: Path, command: str, build: Callable[[Path], T], *, flag: str = "--out",
                  keep_on_interrupt: bool = False) -> T:
    """Build into a temporary sibling of ``out`` with ``build(tmp)``, write the marker, rename it
    into place (replacing the command's earlier output, already checked by `check_out_dir`), and
    return what ``build`` returned. An error writing is one line and exit 2; a failed build or an
    interrupt removes the temporary folder and leaves ``out`` as it was.

    ``keep_on_interrupt``: a build that writes complete files as it goes (``train``: every
    finished epoch) is kept when interrupted (SIGINT, SIGTERM) if it wrote anything, its marker
    saying ``"interrupted": true``: as ``out``, or beside it as ``OUT-interrupted[-N]`` when
    ``out`` holds the command's earlier, complete output (never replaced by a partial one). The
    interrupt then goes on, carrying the folder as ``exc.kept_in``."""
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # innermost first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        _remove_empty(created)
        raise _write_error(out, flag, exc) from None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a page is meant to be read and served
        try:
            result = build(tmp)
        except OSError as exc:  # an error writing into the folder is the output's; any other is the build's
            if exc.filename is None or not str(exc.filename).startswith(str(tmp)):
                raise
            raise _write_error(out, flag, exc) from None
        except BaseException as exc:
            if keep_on_interrupt and not isinstance(exc, Exception) and any(tmp.iterdir()):
                # Never over the command's complete earlier output: then beside it, in a new folder.
                target = out if not out.exists() else _fresh_sibling(out, "interrupted")
                exc.kept_in = _put_in_place(tmp, target, command, flag, interrupted=True)  # type: ignore[attr-defined]
            raise
        _put_in_place(tmp, out, command, flag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)  # the folders made for it, so a refused or failed run leaves nothing
        raise
    return result


def _fresh_sibling(out: Path, tag: str) -> Path:
    path, n = out.with_name(f"{out.name}-{tag}"), 1
    while path.exists():
        n += 1
        path = out.with_name(f"{out.name}-{tag}-{n}")
    return path


def _put_in_place(tmp: Path, out: Path, command: str, flag: str, *, interrupted: bool = False) -> Path:
    """Write the marker into ``tmp`` and rename it to ``out`` (replacing the command's own earlier output)."""
    try:
        files = sorted(p.name for p in tmp.iterdir())
        marker = {"command": command, "files": files, **({"interrupted": True} if interrupted else {})}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except OSError as exc:
        raise _write_error(out, flag, exc) from None
    return out


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_error(out: Path, flag: str, exc: OSError) -> UsageError:
    return UsageError(f"{flag} {str(out)!r} could not be written: {exc.strerror or exc}")
