"""bench.soak_live's measuring parts, on this process: the resident set by source, glibc's heap
figures and the per-series slopes the result reports."""
from __future__ import annotations

import ctypes
import mmap

from bench.soak_live import malloc_mb, python_mb, rss_parts_mb, series


def test_rss_parts_add_up_and_see_a_new_anonymous_mapping():
    before = rss_parts_mb()
    assert before["vmrss"] >= before["rssanon"] > 0 and before["ring"] == 0
    assert abs(before["total"] - before["vmrss"]) < 0.05 * before["vmrss"]  # the classes cover every mapping
    # a mapping of its own (malloc could serve 32 MiB from a heap already resident once its
    # threshold has risen in a long-lived process), written, so resident
    block = mmap.mmap(-1, 32 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    page = b"\1" * mmap.PAGESIZE
    for off in range(0, 32 << 20, mmap.PAGESIZE):
        block[off:off + mmap.PAGESIZE] = page
    after = rss_parts_mb()
    block.close()
    assert after["anon"] - before["anon"] >= 30
    assert after["vmrss"] - before["vmrss"] >= 30


def test_malloc_figures_follow_an_allocation():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = malloc_mb()
    p = libc.malloc(8 << 20)
    after = malloc_mb()
    libc.free(p)
    assert after["in_use"] - before["in_use"] >= 7.9


def test_series_slope_is_taken_after_the_warmup_only():
    samples = [{"t": t, "rss": {"vmrss": 100 + (t if t < 60 else 60)}, "n": 5} for t in range(0, 600, 10)]
    out = series(samples, warmup_s=60)
    assert out["rss.vmrss"] == {"start": 100, "end": 160, "max": 160, "slope_per_min_after_warmup": 0.0}
    assert out["n"]["slope_per_min_after_warmup"] == 0.0


def test_python_figures_follow_small_objects():
    before = python_mb()
    keep = [(i, str(i)) for i in range(200_000)]  # small blocks: pymalloc's
    after = python_mb()
    assert len(keep) and after["in_use"] - before["in_use"] >= 5 and after["arenas"] >= after["in_use"]
