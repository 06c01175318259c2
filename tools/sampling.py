"""A bounded sample of a window's spans, as (partial) trace trees, for per-call analyses
(CLIENT/SERVER gaps, call patterns per operation) that aggregate queries cannot give.

Contiguous slices spread over the window, so the two sides of a call are read together. A
small window is read whole. Not a tool itself: gaps.py and shape.py build on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore, TimeWindow
from tools.base import spread_spans
from tools.trace import Tree

SAMPLE_SPANS = 6000  # spans read per window, at most (bench: python -m bench.investigate)
SLICES = 12


@dataclass
class Sample:
    window: TimeWindow
    spans: list[Span]
    trees: list[Tree] = field(default_factory=list)
    cut: list[TimeWindow] = field(default_factory=list)  # slices read only in part (at the limit)

    def __post_init__(self) -> None:
        by_trace: dict[str, list[Span]] = {}
        for s in self.spans:
            by_trace.setdefault(s.trace_id, []).append(s)
        self.trees = [Tree(v) for v in by_trace.values()]


def sample(store: SpanStore, window: TimeWindow, total: int = SAMPLE_SPANS) -> Sample:
    got = spread_spans(store, SpanFilter(window=window), total, SLICES)
    # the slices spread_spans read: one that returned its limit holds only its first spans
    step, per = max((window.end_ns - window.start_ns) // SLICES, 1), max(total // SLICES, 1)
    n = [0] * SLICES
    for s in got:
        n[min(max((s.start_time_unix_nano - window.start_ns) // step, 0), SLICES - 1)] += 1
    cut = [TimeWindow(window.start_ns + i * step, window.end_ns if i == SLICES - 1 else
                      window.start_ns + (i + 1) * step) for i in range(SLICES) if n[i] >= per]
    return Sample(window, got, cut=cut)


def covered(store: SpanStore, window: TimeWindow) -> float:
    """Seconds of the window that the store holds data for (its time range clipped to it)."""
    rng = store.time_range()
    if rng is None:
        return 0.0
    lo, hi = max(window.start_ns, rng.start_ns), min(window.end_ns, rng.end_ns)
    return max(hi - lo, 0) / 1e9
