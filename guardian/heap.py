"""The agent process's C heap (glibc malloc): fewer arenas, and what was freed handed back to the
system now and then instead of kept for reuse. Not here: what the capture, the linker or the store
hold (each has its own bound); elsewhere than glibc every call here does nothing.

`python -m bench.soak_live` measures the resident set by source with and without these settings.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger(__name__)

# madvise(2): drop these pages from the process (a file's pages stay in the page cache; the next
# touch maps them again). MADV_PAGEOUT would leave alone every page another process maps too: the
# libraries a host's other Python processes share, i.e. nearly all of them
MADV_DONTNEED = 4
# file pages touched at start only (imports, the static registration of DuckDB's and Arrow's
# functions) are paged out when the agent is ready and once more after this long, when what the
# capture, the store and the API use has been touched again
PAGE_OUT_AGAIN_S = 60.0

# mallopt(3) parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# glibc gives each thread that meets a busy arena a new one (up to 8 per core), each keeping
# what its thread freed; the agent's threads (capture, worker, store, API) need few
ARENA_MAX = 2
# blocks this large or larger are mapped on their own and unmapped when freed; glibc otherwise
# raises this bound to the largest block freed so far, and the store's query buffers then stay
# in the heap as free space after every query
MMAP_THRESHOLD = 256 * 1024
TRIM_EVERY_S = 10.0


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim, libc.madvise  # noqa: B018 - glibc only
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def tune(arena_max: int = ARENA_MAX, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Set glibc's arena count and mapping threshold; call before the process starts threads.
    False where malloc is not glibc's."""
    if _LIBC is None:
        return False
    ok = _LIBC.mallopt(M_ARENA_MAX, arena_max) == 1
    ok &= _LIBC.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    if not ok:
        log.warning("mallopt refused the agent's heap settings")
    return ok


class Trimmer:
    """malloc_trim(0) at most every `every_s` seconds, called from a loop that runs anyway: the
    free pages inside every arena go back to the system (glibc trims only the main heap's top
    on its own)."""

    def __init__(self, every_s: float = TRIM_EVERY_S, clock=time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._next = clock() + every_s
        self.trims = 0

    def maybe(self) -> bool:
        now = self.clock()
        if _LIBC is None or now < self._next:
            return False
        self._next = now + self.every_s
        _LIBC.malloc_trim(0)
        self.trims += 1
        return True


def page_out_files(smaps: str = "/proc/self/smaps") -> int:
    """Drop this process's resident pages of read-only file mappings that hold only the file's own
    bytes (shared libraries' code and constants, the interpreter): a page used again comes back on
    its next touch from the page cache; what only the start used stays out of the resident set.
    A mapping that is writable or holds any anonymous page (a library's relocated data: what
    madvise would throw away) is left as it is. Returns the number of mappings dropped (0 where
    madvise is not glibc's)."""
    if _LIBC is None:
        return 0
    pristine: list[tuple[int, int]] = []
    span: tuple[int, int] | None = None
    with open(smaps) as f:
        for line in f:
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
                span = None
                if len(head) > 5 and head[5].startswith("/") and "w" not in head[1]:
                    lo, hi = (int(x, 16) for x in head[0].split("-"))
                    span = (lo, hi)
            elif span is not None and line.startswith("Anonymous:"):
                if int(line.split()[1]) == 0:
                    pristine.append(span)
                span = None
    return sum(_LIBC.madvise(lo, hi - lo, MADV_DONTNEED) == 0 for lo, hi in pristine)


class FilePager:
    """page_out_files() when called first and once more `again_s` later, from a loop that runs
    anyway; `paged_out` is what the file-backed resident set lost at each (bytes)."""

    def __init__(self, again_s: float = PAGE_OUT_AGAIN_S, clock=time.monotonic) -> None:
        self.clock = clock
        self._due = [0.0, clock() + again_s]
        self.paged_out = 0

    def maybe(self) -> bool:
        if not self._due or self.clock() < self._due[0]:
            return False
        self._due.pop(0)
        from guardian import rss

        before = rss.by_mapping()[rss.FILE]
        if page_out_files():
            self.paged_out += max(0, before - rss.by_mapping()[rss.FILE])
        return True
