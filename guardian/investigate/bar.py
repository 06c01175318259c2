"""The bar between "a cause" and "nothing found", beside the score: a candidate whose abnormal
calls all fell in one short burst (a restart, a host's hiccup, a cache refill) is no lasting
change; failures that are closed connections retried while the requests succeeded were felt by
nobody. Reads the candidate's operation's spans and sampled traces; never ranks.
"""
from __future__ import annotations

from dataclasses import replace

from capture.span import Span
from capture.store.api import SpanFilter
from guardian.investigate.rank import FAMILY, Candidate, reach
from guardian.investigate.samples import Walker
from tools.stats import MIN_SAMPLE

BURST_SHARE = 0.25  # abnormal calls all within this share of the covered window: one burst
BURST_MIN = 3  # fewer abnormal calls than this cannot tell a burst from a trickle
BURST_WEIGHT = 0.2  # a burst's candidate keeps this share of its score


def _main_span(c: Candidate) -> Span | None:
    """The candidate's own span of its most voted operation (else its first own span; else,
    for a service that did not answer, its caller's call to it)."""
    own = [s for s in c.spans if s.service == c.key[0]] or c.spans
    top = max(c.ops, key=c.ops.get) if c.ops else ""
    return next((s for s in own if s.name == top), own[0] if own else None)


def covered_ns(walker: Walker) -> int:
    """The time the window's data covers (first to last span in it), not the window asked about:
    a store that began recording inside the window, or stopped before its end, covers less."""
    w = walker.window
    first = walker.store.spans(SpanFilter(window=w, order="start", limit=1))
    last = walker.store.spans(SpanFilter(window=w, order="start_desc", limit=1))
    start = max(w.start_ns, first[0].start_time_unix_nano) if first else w.start_ns
    end = min(w.end_ns, last[0].end_time_unix_nano) if last else w.end_ns
    return max(end - start, 1)


def burst(walker: Walker, c: Candidate, covered: int) -> tuple[float, float] | None:
    """When the candidate's abnormal calls (failed, or slower than its baseline p95) all fell in
    one stretch under BURST_SHARE of `covered` (covered_ns): (stretch, covered) in seconds.
    A restart, a host's hiccup, a cache refill: not a change that lasts."""
    s = _main_span(c)
    if s is None or c.stuck or c.kind in ("traffic", "network"):
        return None
    w = walker.window
    flt = SpanFilter(window=w, service=s.service, name=s.name, kind=s.kind, limit=500)
    if FAMILY[c.kind] == 0:
        bad = walker.store.spans(replace(flt, status_code="ERROR"))
    else:
        base = [x.duration_ns for x in walker.store.spans(replace(flt, window=walker.baseline, limit=2000))]
        if len(base) < MIN_SAMPLE:
            return None
        base.sort()
        p95 = base[min(len(base) - 1, int(0.95 * len(base)))]
        bad = walker.store.spans(replace(flt, min_duration_ns=max(p95, 1) + 1))
    if len(bad) < BURST_MIN:
        return None
    starts = sorted(x.start_time_unix_nano for x in bad)
    stretch = starts[-1] - starts[0]
    if stretch >= BURST_SHARE * covered:
        return None
    return stretch / 1e9, covered / 1e9


def not_alone(walker: Walker, c: Candidate, cands: list[Candidate]) -> list[str]:
    """Services that slowed past their own baseline noise too (moved) and do not call c, when
    c's slowdown was shown by a test of its own few calls (a quiet operation's tail): its
    slowdown cannot be theirs, so the host or the load slowed them all, not c alone."""
    if not c.shown or FAMILY[c.kind] != 1:
        return []
    return sorted({d.key[0] for d in cands if d.moved and d.key[0] != c.key[0]
                   and c.key[0] not in reach(walker, d.key[0])})


QUICK_NS = 5_000_000  # a call failing faster than this never reached a working server


def unanswered_but_absorbed(walker: Walker, c: Candidate) -> bool:
    """An error candidate whose failures are mostly its callers' calls that failed at once with
    no answer from it (a connection it closed, as on a restart: the next call opens a new one),
    while the requests those calls were made for succeeded anyway: nobody felt them."""
    if FAMILY[c.kind] != 0 or c.answered:
        return False
    failed = [s for s in c.spans if s.status_code == "ERROR"]
    quick = known = ok = 0
    for s in failed:
        tree = walker.tree(s.trace_id)
        if s.service == c.key[0] or s.duration_ns >= QUICK_NS or any(
                k.kind == "SERVER" for k in tree.children.get(s.span_id, [])):
            continue  # it answered (and failed), or the call waited: not a closed connection
        quick += 1
        roots = [r for r in tree.roots if r is not s]
        if roots:  # else the call is its trace's only span: what became of its request is unknown
            known += 1
            ok += all(r.status_code != "ERROR" for r in roots)
    return quick >= 0.8 * len(failed) and known >= BURST_MIN and ok >= 0.8 * known
