"""``compare --paired --sessions DIR|TAG``: the run pairs of one `ab` invocation, found by folder or tag.

`ab` saves each session's (or each process-level pair's) two sides as runs named
``ab-<time>-<side>-<sha8>-<what>-<i>`` (``what``: ``c<case>`` for duet sessions, ``run`` or
``loop`` for process-level runs). The tag is ``ab-<time>``: every run of that invocation. A folder
holds one invocation's runs (or several: then give the tag). Pairs are matched by ``<what>-<i>``
and returned in case, then session order, which the sequential rule needs.
"""

from __future__ import annotations

import re
from pathlib import Path

from runrecord.store import run_file_id

NAME = re.compile(r"^(?P<tag>ab-\d{8}T\d{6})-(?P<side>base|head)-(?P<sha>[0-9a-f]+)-(?P<what>[a-z]+)(?P<k>\d*)-(?P<i>\d+)$")


def _runs_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.json") if p.is_file())


def session_pairs(spec: str, *, storage: Path) -> tuple[list[Path], list[Path]]:
    """(baseline paths, candidate paths), pair i in both; ValueError (one line) when none or unpaired."""
    folder = Path(spec)
    if folder.is_dir():
        files, where = _runs_under(folder), f"folder {spec}"
        tag = None
    else:
        tag = spec if spec.startswith("ab-") else f"ab-{spec}"
        files, where = (_runs_under(storage) if storage.is_dir() else []), f"{storage} (tag {tag})"
    found: dict[tuple[str, str, int, int], dict[str, Path]] = {}
    tags = set()
    for path in files:
        _, name = run_file_id(path)
        m = NAME.match(name or "")
        if not m or (tag is not None and m["tag"] != tag):
            continue
        tags.add(m["tag"])
        key = (m["tag"], m["what"], int(m["k"] or 0), int(m["i"]))
        side = found.setdefault(key, {})
        if m["side"] in side:
            raise ValueError(f"two {m['side']} runs for {m['what']}{m['k']}-{m['i']} of {m['tag']} in {where}")
        side[m["side"]] = path
    if not found:
        raise ValueError(f"no runs saved by `alexnet-bench ab` in {where}")
    if len(tags) > 1:
        raise ValueError(f"{where} holds runs of {len(tags)} ab invocations ({', '.join(sorted(tags)[:3])}"
                         f"{' ...' if len(tags) > 3 else ''}); name one with --sessions TAG")
    lone = [f"{w}{k}-{i}" for (_, w, k, i), v in sorted(found.items()) if len(v) != 2]
    if lone:
        raise ValueError(f"{len(lone)} session(s) in {where} have one side only (e.g. {lone[0]}): a paired comparison "
                         "needs both")
    keys = sorted(found)
    return [found[k]["base"] for k in keys], [found[k]["head"] for k in keys]
