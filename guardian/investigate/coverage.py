"""The time a window's data covers, for what is sized or counted per second of the window: a
window that runs past the recorded data (a capture that stopped, a question about the last
15 minutes of a store that ends earlier) holds calls for only part of its length, so rates
and "a share of the window" are read on the covered time, not the time asked about.
"""
from __future__ import annotations

from capture.store.api import TimeWindow
from guardian.investigate.samples import Walker
from tools.sampling import covered
from tools.stats import RedStats


def covered_s(walker: Walker, w: TimeWindow) -> float:
    """Seconds of w the store holds data for (w's own length when it holds none)."""
    return covered(walker.store, w) or w.seconds


def per_s(walker: Walker, stats: RedStats, w: TimeWindow) -> float:
    """stats' calls per second of w's covered time."""
    return stats.count / max(covered_s(walker, w), 1e-9)
