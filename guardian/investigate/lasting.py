"""Whether a shift seen on calls holds across the window's time, not in one stretch of it.

Calls close in time share the host's state (a burst of load, a pause of the scheduler), so a
test that counts each call as independent is sure of a change one busy second made, the more
so on a few calls. Here the unit is a stretch of time: the window's and the baseline's calls
are cut into BLOCKS stretches each, and a shift counts when the window's stretches rank above
the baseline's more often than relabelling the stretches gives by chance (an exact
permutation test over stretches; a seeded sample of relabellings when there are too many).
Applied to shifts resting on few calls. Reads calls already sampled; ranks nothing.
"""
from __future__ import annotations

import random
from itertools import combinations
from math import comb

from capture.store.api import TimeWindow
from tools.gaps import MIN_SHIFT_MS, TAIL_FACTOR, GapShift, calls
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, SURE, _quantile, confidence, mann_whitney_p, tied_ranks

BLOCKS = 6  # stretches of time per window
# The window's stretches rank above the baseline's this surely: more than one stretch carries
# the shift (one busy stretch of the window against the baseline's six is 1 in 7 at best).
BLOCK_SURE = 0.86
EXACT = 5000  # relabellings enumerated up to this many, else RELABEL of them drawn (seeded)
RELABEL = 2000
# A shift on this many calls a side or more is left to the per-call test: a fault that began
# a little into the window leaves its first stretches as they were, which a test over a few
# stretches cannot tell from chance.
LASTING_CALLS = 20
TAIL_Q = 0.9  # a tail shift: more calls than the baseline's share beyond its p90


def _blocks(values: list[tuple[int, float]], w: TimeWindow) -> list[list[float]]:
    """values (start ns, value) cut into BLOCKS stretches of w, empty ones left out."""
    out: list[list[float]] = [[] for _ in range(BLOCKS)]
    span = max(w.end_ns - w.start_ns, 1)
    for t, v in values:
        out[min(max((t - w.start_ns) * BLOCKS // span, 0), BLOCKS - 1)].append(v)
    return [b for b in out if b]


def block_p(now: list[tuple[int, float]], before: list[tuple[int, float]],
            window: TimeWindow, baseline: TimeWindow) -> float:
    """One-sided p-value that now's values are larger than before's, stretches of time as the
    unit: the mean rank of now's values against that of every relabelling of stretches."""
    a, b = _blocks(now, window), _blocks(before, baseline)
    if not a or not b:
        return 1.0
    blocks = a + b
    flat = sorted((v, i) for i, blk in enumerate(blocks) for v in blk)
    ranks, _ = tied_ranks([v for v, _ in flat])
    sums, counts = [0.0] * len(blocks), [len(blk) for blk in blocks]
    for r, (_, i) in zip(ranks, flat):
        sums[i] += r

    def mean_rank(chosen: tuple[int, ...]) -> float:
        return sum(sums[i] for i in chosen) / max(sum(counts[i] for i in chosen), 1)

    observed = mean_rank(tuple(range(len(a))))
    n, k = len(blocks), len(a)
    if comb(n, k) <= EXACT:
        labels = list(combinations(range(n), k))
    else:
        rng = random.Random(0)
        labels = [tuple(rng.sample(range(n), k)) for _ in range(RELABEL)]
    hits = sum(1 for c in labels if mean_rank(c) >= observed - 1e-9)
    return max(hits, 1) / len(labels)


def _covered(s: Sample) -> TimeWindow:
    """The part of s's window its spans cover: a window running past the end of the data
    (or starting before its beginning) is cut into stretches of the time it holds."""
    if not s.spans:
        return s.window
    lo = max(s.window.start_ns, min(x.start_time_unix_nano for x in s.spans))
    hi = min(s.window.end_ns, max(x.end_time_unix_nano for x in s.spans))
    return TimeWindow(lo, hi) if hi > lo else s.window


def lasting_gaps(shifts: list[GapShift], cur: Sample, base: Sample) -> list[GapShift]:
    """The gap shifts resting on few calls (under LASTING_CALLS a side) that hold across the
    window's time: the typical call's shift when a test on every call found it, else (a shift
    of the tail: lost packets, a stall now and then) the calls beyond the edge's baseline p90,
    in more stretches than chance gives, unless two or more are far beyond its longest.
    A quiet edge, judged against every edge's baseline, is left as it was found."""
    def by_edge(s: Sample) -> dict[tuple[str, str], list[tuple[int, float]]]:
        out: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for c in calls(s):
            out.setdefault((c.client.service, c.server.service), []).append(
                (c.client.start_time_unix_nano, c.gap_ms))
        return out

    if not shifts:
        return shifts
    now, before = by_edge(cur), by_edge(base)
    kept = []
    for g in shifts:
        n, b = now.get((g.client, g.server), []), before.get((g.client, g.server), [])
        if len(b) < MIN_SAMPLE or len(n) < MIN_SAMPLE or min(len(b), len(n)) >= LASTING_CALLS:
            kept.append(g)
            continue
        if confidence(mann_whitney_p([v for _, v in n], [v for _, v in b])) < SURE:
            longest = max(v for _, v in b)
            if sum(1 for _, v in n if v > TAIL_FACTOR * longest + MIN_SHIFT_MS) >= 2:
                kept.append(g)  # far beyond it, twice or more (lost packets): its size says so
                continue
            # the tail: calls beyond the baseline's p90 (its longest may be one straggler)
            line = _quantile(sorted(v for _, v in b), TAIL_Q)
            n, b = [(t, float(v > line)) for t, v in n], [(t, float(v > line)) for t, v in b]
        if confidence(block_p(n, b, _covered(cur), _covered(base))) >= BLOCK_SURE:
            kept.append(g)
    return kept
