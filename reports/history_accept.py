"""Accepted changes: the small file that keeps a nightly job from staying red after an intended change.

``alexnet-bench history --accept COMMIT[:CASE]`` appends an entry to ``benchmarks-accepted.json``
at the repository root (``--accepted-file`` elsewhere); the file is committed like code, so an
acceptance is reviewed and has a history. Format (docs/history.md)::

    {"about": "...", "accepted": [{"commit": "1a2b3c4d5e6f", "case": "train-d2l-b32-96x96-fp32-cpu",
                                   "reason": "...", "date": "2026-11-30"}]}

``case`` null accepts the change in every series. An entry covers a change point whose commit,
previous commit or next commit starts with its ``commit`` (a change point is placed to within
one commit). A covered change no longer fails ``--fail-on-regression``, and creep is measured
from the last covered change on.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from reports.load import RunLoadError

__all__ = ["ACCEPTED_FILE", "Acceptance", "add_acceptances", "matches", "parse_accept", "read_acceptances"]

ACCEPTED_FILE = "benchmarks-accepted.json"
ABOUT = ("Changes in benchmark history accepted as intended (alexnet-bench history --accept COMMIT[:CASE]); "
         "see docs/history.md")
_KEYS = {"commit", "case", "reason", "date"}
_TOP_KEYS = {"about", "accepted"}
# A commit prefix as git abbreviates it: at least 7 hex digits.
_COMMIT_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")


@dataclass(frozen=True)
class Acceptance:
    commit: str
    case: str | None = None
    reason: str | None = None
    date: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_accept(text: str, *, reason: str | None = None) -> Acceptance:
    """``COMMIT`` or ``COMMIT:CASE`` (the ``--accept`` syntax) -> an Acceptance dated today (UTC)."""
    commit, _, case = text.partition(":")
    if not _COMMIT_RE.match(commit):
        raise ValueError(f"--accept {text!r}: {commit!r} is not a commit id; use COMMIT or COMMIT:CASE with at "
                         "least 7 hex digits, e.g. 1a2b3c4:train-d2l-b32-96x96-fp32-cpu")
    return Acceptance(commit=commit.lower(), case=case or None, reason=reason,
                      date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"))


def read_acceptances(path: Path) -> list[Acceptance]:
    """The file's entries; [] when it does not exist. A malformed file is a `RunLoadError` (exit 2)."""
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunLoadError(f"acceptance file {str(path)!r} is unreadable: {exc}") from None
    if not isinstance(doc, dict) or set(doc) - _TOP_KEYS or not isinstance(doc.get("accepted", []), list):
        raise RunLoadError(f"acceptance file {str(path)!r} must be an object with keys {sorted(_TOP_KEYS)} "
                           "and 'accepted' a list")
    out = []
    for i, entry in enumerate(doc.get("accepted", [])):
        if not isinstance(entry, dict) or set(entry) - _KEYS or not _COMMIT_RE.match(str(entry.get("commit", ""))):
            raise RunLoadError(f"acceptance file {str(path)!r}: entry #{i} must have a 'commit' (7+ hex digits) "
                               f"and only the keys {sorted(_KEYS)}")
        out.append(Acceptance(commit=str(entry["commit"]).lower(), case=entry.get("case"),
                              reason=entry.get("reason"), date=entry.get("date")))
    return out


def add_acceptances(path: Path, new: Sequence[Acceptance]) -> list[Acceptance]:
    """Append ``new`` entries (those not already there) and rewrite the file atomically."""
    current = read_acceptances(path)
    known = {(a.commit, a.case) for a in current}
    merged = current + [a for a in new if (a.commit, a.case) not in known]
    doc = {"about": ABOUT, "accepted": [a.to_dict() for a in merged]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return merged


def matches(acceptance: Acceptance, *, commits: Sequence[str], case_id: str) -> bool:
    """Whether the acceptance covers a change among ``commits`` in the series of ``case_id``."""
    if acceptance.case is not None and acceptance.case != case_id:
        return False
    return any(c.lower().startswith(acceptance.commit) for c in commits)
