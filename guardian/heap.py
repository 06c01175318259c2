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
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only
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
