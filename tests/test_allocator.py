"""bench.instruments.allocator: a duet worker pins glibc's malloc thresholds (the dynamic adjustment is off)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.instruments.allocator import MMAP_THRESHOLD

# A chunk well above glibc's default 128 KiB mmap threshold and below the pinned 32 MiB one.
_PROBE = r"""
import ctypes, json, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
record = None
if sys.argv[1] == "pinned":
    from bench.instruments.allocator import pin_malloc
    record = pin_malloc()
before = libc.mallinfo2().hblks
p = libc.malloc(8 << 20)
during = libc.mallinfo2().hblks
libc.free(p)
print(json.dumps({"record": record, "mmapped_chunks_added": during - before}))
"""


def _glibc_with_mallinfo2() -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallinfo2")
    except OSError:
        return False


def _probe(policy: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, policy], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_pinned_thresholds_put_an_8_mib_chunk_on_the_heap_where_the_default_mmaps_it() -> None:
    default = _probe("default")
    pinned = _probe("pinned")
    assert default["mmapped_chunks_added"] == 1  # 8 MiB > the 128 KiB a fresh process starts with
    assert pinned["mmapped_chunks_added"] == 0, pinned  # 8 MiB < the pinned 32 MiB: from the heap
    assert pinned["record"]["policy"] == "pinned" and pinned["record"]["mmap_threshold"] == MMAP_THRESHOLD


def test_the_record_says_what_was_done() -> None:
    code = "import json; from bench.instruments.allocator import pin_malloc; print(json.dumps(pin_malloc()))"
    record = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert record["policy"] in ("pinned", "default")
    if record["policy"] == "default":
        assert record["reason"]
    else:
        assert record["glibc"] and record["trim_threshold"] >= record["mmap_threshold"]
