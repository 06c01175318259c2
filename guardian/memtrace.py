"""A debug mode for the agent's memory: Python's allocations traced (tracemalloc) and, on request
(SIGUSR2), what grew since the last request by source line and live objects by type, as one log
line. Off by default (log.memory_trace_frames): tracing slows every allocation. It bounds nothing.
"""
from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from typing import Any

TOP = 20  # lines and types in one report
STOPPED = {"traced_bytes": 0, "lines": [], "types": {}, "stopped": True}  # a report once stopped


def _types() -> Counter:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


class MemTrace:
    """Snapshots diffed one against the next: `report()` says what grew since the last report
    (the first one: since `start()`)."""

    def __init__(self, frames: int = 1) -> None:
        self.frames = frames
        self._snap: tracemalloc.Snapshot | None = None
        self._types: Counter | None = None
        self._stopped = False

    def start(self) -> None:
        self._stopped = False
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
        self._snap = self._take()
        self._types = _types()  # with one snapshot alive, as at every report: its traces are tuples

    def stop(self) -> None:
        """Tracing off (what it held freed); a report after it is empty (`start()` again to trace)."""
        self._stopped = True
        tracemalloc.stop()
        self._snap = self._types = None

    @staticmethod
    def _take() -> tracemalloc.Snapshot:
        # the tracer's own frames and the import machinery are noise here
        return tracemalloc.take_snapshot().filter_traces((
            tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<unknown>")))

    def report(self, top: int = TOP) -> dict[str, Any]:
        """What grew since the last report: traced bytes in total, the `top` source lines (and the
        caller chain when tracing more than one frame) and object types with the largest growth."""
        if self._stopped:
            return dict(STOPPED)
        if self._snap is None:
            self.start()
        # the last report's, read once: stop() (another thread: the agent exiting) drops them
        last, last_types = self._snap, self._types
        types = _types()  # before the new snapshot: the old one's tuples only, as at the last count
        try:
            snap = self._take()
        except RuntimeError:  # stopped meanwhile: nothing to compare
            return dict(STOPPED)
        if last is None or last_types is None or self._stopped:
            return dict(STOPPED)
        key = "traceback" if self.frames > 1 else "lineno"
        diffs = sorted(snap.compare_to(last, key), key=lambda d: -d.size_diff)[:top]
        grown = (types - last_types).most_common(top)
        # the traced bytes without the snapshots' own (get_traced_memory counts them)
        traced = sum(t.size for t in snap.statistics("filename"))
        out = {"traced_bytes": traced,
               "lines": [{"at": [f"{f.filename}:{f.lineno}" for f in d.traceback][:self.frames],
                          "bytes": d.size_diff, "blocks": d.count_diff, "size": d.size} for d in diffs],
               "types": dict(grown)}
        if not self._stopped:
            self._snap, self._types = snap, types
        return out
