"""guardian/heap.py: the agent's glibc heap settings and the periodic trim, on this process's real heap."""
from __future__ import annotations

import ctypes

import pytest

from guardian import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="malloc is not glibc's")


def rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon")


def test_the_trim_returns_free_pages_held_inside_the_heap():
    libc = heap._LIBC
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for _ in range(65536):  # 64 MiB in 1 KiB blocks, below the mapping threshold: in the heap
        p = libc.malloc(1024)
        ctypes.memset(p, 1, 1024)
        blocks.append(p)
    kept = set(blocks[::64])  # one block per 64 KiB stays: the heap's top never comes free by itself
    for p in blocks:
        if p not in kept:
            libc.free(p)
    held = rss_anon_mb()
    clock = [0.0]
    trimmer = heap.Trimmer(every_s=10.0, clock=lambda: clock[0])
    assert not trimmer.maybe()  # not yet due
    clock[0] = 10.0
    assert trimmer.maybe() and trimmer.trims == 1
    assert not trimmer.maybe()  # due again only 10 s later
    returned = held - rss_anon_mb()
    for p in kept:
        libc.free(p)
    assert returned > 30, f"only {returned:.1f} MB of ~63 MB freed came back"


def test_the_settings_are_accepted():
    assert heap.tune() is True


def test_file_pages_only_the_start_used_leave_the_resident_set_and_come_back_when_used():
    import duckdb

    from guardian import rss

    con = duckdb.connect()  # DuckDB's start touches most of its library (its functions' registration)
    before = rss.by_mapping()[rss.FILE]
    clock = [0.0]
    pager = heap.FilePager(again_s=60.0, clock=lambda: clock[0])
    assert pager.maybe() and pager.paged_out > 10 * rss.MB
    after = rss.by_mapping()[rss.FILE]
    assert before - after > 10 * rss.MB
    assert not pager.maybe()  # again only 60 s later, then never
    assert con.execute("SELECT sum(range) FROM range(1000)").fetchall() == [(499500,)]  # paged back in
    assert rss.by_mapping()[rss.FILE] > after
    clock[0] = 60.0
    assert pager.maybe() and not pager.maybe()
    clock[0] = 1e9
    assert not pager.maybe()
