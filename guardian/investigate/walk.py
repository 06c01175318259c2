"""Walk one slow or failing request down its call tree to the span responsible.

Errors: the deepest failing spans (failing, with no failing child). Latency: the span whose
own time grew most against the same endpoint's baseline requests. Async consumers are
left out of latency: they do not delay the request that published to them. A call's time
before its server began it (a stalled or busy server not reading, the network) is the
server's, not the caller's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from capture.span import Span
from tools.base import peer_of
from tools.errors import classify_error, error_text
from tools.trace import Tree

Key = tuple[str, str]  # (responsible service or peer, operation)


@dataclass
class Vote:
    key: Key
    kind: str  # error | latency | saturation | dependency
    span: Span
    weight: float
    excess_ms: float = 0.0
    gap_ms: float = 0.0  # of the excess, time between the caller's call and this key's server span
    failed_after: Span | None = None  # the caller's span that failed right after this answer


def responsible(tree: Tree, s: Span) -> Key:
    """Who answers for a span: its service, or for an unanswered call, the peer it called.
    A step inside a service (an INTERNAL span) answers as the operation it is part of."""
    if s.kind in ("CLIENT", "PRODUCER"):
        linked = [c for c in tree.children[s.span_id] if c.kind in ("SERVER", "CONSUMER")]
        if not linked:
            return (peer_of(s) or s.service, s.name)
    if s.kind in ("INTERNAL", "CLIENT", "PRODUCER"):
        return (s.service, entry_of(tree, s).name)
    return (s.service, s.name)


def entry_of(tree: Tree, s: Span) -> Span:
    """The span by which s's request entered s's service (s itself when it is one)."""
    for _ in range(1000):
        p = tree.by_id.get(s.parent_span_id or "")
        if p is None or p.service != s.service:
            return s
        s = p
    return s


def peer_wait(tree: Tree, s: Span) -> tuple[Key, int] | None:
    """For a call its server answered in this trace: the server's key and how long the request
    waited before the server began it (unread in its socket: a stall, a backlog, the network)."""
    got = peer_gap(tree, s)
    return (got[0], got[1]) if got is not None else None


def peer_gap(tree: Tree, s: Span) -> tuple[Key, int, int] | None:
    """For a call its server answered in this trace: the server's key, the time before the
    server began it, and the time after it answered until the caller had the reply. Both are
    the callee's network or ingress, not the caller's own time."""
    if s.kind != "CLIENT":
        return None
    linked = [c for c in tree.children[s.span_id] if c.kind == "SERVER"]
    if not linked:
        return None
    first = min(linked, key=lambda c: c.start_time_unix_nano)
    last = max(linked, key=lambda c: c.end_time_unix_nano)
    wait = min(max(first.start_time_unix_nano - s.start_time_unix_nano, 0), s.duration_ns)
    after = min(max(s.end_time_unix_nano - last.end_time_unix_nano, 0), s.duration_ns - wait)
    return (first.service, first.name), wait, after


def _failing_below(tree: Tree, s: Span) -> list[Span]:
    """Failing children of s, looking through its service's own steps (INTERNAL spans that
    did not fail themselves, as instrumented code adds them)."""
    out = []
    for c in tree.children[s.span_id]:
        if c.status_code == "ERROR":
            out.append(c)
        elif c.kind == "INTERNAL" and c.service == s.service:
            out += _failing_below(tree, c)
    return out


def error_votes(tree: Tree, start: Span) -> list[Vote]:
    """One vote per deepest failing span under start, sharing a weight of 1."""
    leaves, stack = [], [start]
    while stack:
        s = stack.pop()
        failing = _failing_below(tree, s)
        if failing:
            stack += failing
        elif s.status_code == "ERROR":
            leaves.append(s)
    return [Vote(responsible(tree, s), _failure_kind(s), s, 1.0 / len(leaves)) for s in leaves]


_GAVE_UP = re.compile(r"cancel|time[sd]? ?out|deadline|57014", re.I)
GAVE_UP_NS = 500_000_000


def _failure_kind(s: Span) -> str:
    """A call cancelled or timed out after a long wait failed because it was slow (a lock
    held, a query too slow): its cause is latency, unless it says what ran out or broke."""
    kind = classify_error(s)
    if kind == "error" and s.duration_ns >= GAVE_UP_NS and _GAVE_UP.search(error_text(s)):
        return "latency"
    return kind


def last_answer(tree: Tree, s: Span) -> list[Span]:
    """The answers s may have failed on, if it failed right after a call answered with
    success: that callee's server span first, then those of calls made alongside it (a
    parallel fan-out is read when all of it answered: the value it failed on may be in any of
    them, and the slowest sibling answers last whoever sent the bad one)."""
    # Calls still in flight when s failed (a parallel call left behind) answered nothing it
    # could have failed on.
    calls = [c for c in tree.descendants(s) if c.service == s.service and c.kind == "CLIENT"
             and c.status_code != "ERROR" and c.end_time_unix_nano <= s.end_time_unix_nano]
    if not calls:
        return []
    last = max(calls, key=lambda c: c.end_time_unix_nano)
    after_ns = s.end_time_unix_nano - last.end_time_unix_nano
    if after_ns > max(2_000_000, 0.05 * s.duration_ns):
        return []
    # Failing while other calls were still in flight, it failed on the answer it had just
    # read; once all had answered, it may have read them in any order.
    pending = any(c.service == s.service and c.kind == "CLIENT"
                  and c.end_time_unix_nano > s.end_time_unix_nano for c in tree.descendants(s))
    along = [] if pending else [c for c in calls if c is not last
                                and c.end_time_unix_nano > last.start_time_unix_nano]
    out = []
    for c in [last] + sorted(along, key=lambda c: -c.end_time_unix_nano):
        servers = [k for k in tree.children[c.span_id] if k.kind == "SERVER" and k.status_code != "ERROR"]
        if servers:
            out.append(servers[0])
        elif c is last:
            return []
    return out


def _sync_subtree(tree: Tree, start: Span) -> list[Span]:
    out, stack = [], [start]
    while stack:
        s = stack.pop()
        out.append(s)
        stack += [c for c in tree.children[s.span_id] if c.kind != "CONSUMER"]
    return out


def self_times(tree: Tree, start: Span, own_gaps: frozenset = frozenset()
               ) -> dict[Key, tuple[int, int, Span, int]]:
    """Per responsible key: (own ns, wait-before-first-child ns, longest span, ns of it spent
    between a caller's CLIENT span and this key's SERVER span) in start's subtree. Gaps on
    the (caller, callee) edges in own_gaps are the caller's own time."""
    acc: dict[Key, tuple[int, int, Span, int]] = {}

    def add(k: Key, own_ns: int, wait_ns: int, s: Span, gap_ns: int = 0) -> None:
        own, wait, top, gap = acc.get(k, (0, 0, s, 0))
        acc[k] = (own + own_ns, wait + wait_ns, s if s.duration_ns > top.duration_ns else top,
                  gap + gap_ns)

    for s in _sync_subtree(tree, start):
        own, w = tree.self_ns(s), tree.wait_before_children_ns(s) or 0
        pg = peer_gap(tree, s)
        if pg is not None and (s.service, pg[0][0]) not in own_gaps:
            # The caller is not working while its request or the reply is in flight or unread.
            gap = min(pg[1] + pg[2], own)
            add(pg[0], gap, 0, s, gap)
            own, w = own - gap, 0
        add(responsible(tree, s), own, w, s)
    return acc


def baseline_self_times(trees: list[tuple[Tree, Span]], own_gaps: frozenset = frozenset()
                        ) -> dict[Key, tuple[float, float, float]]:
    """Mean own time, wait and call gap per key over baseline requests of the same endpoint."""
    sums: dict[Key, list[float]] = {}
    for tree, start in trees:
        for k, (own, wait, _, gap) in self_times(tree, start, own_gaps).items():
            acc = sums.setdefault(k, [0.0, 0.0, 0.0])
            acc[0] += own
            acc[1] += wait
            acc[2] += gap
    n = max(len(trees), 1)
    return {k: (v[0] / n, v[1] / n, v[2] / n) for k, v in sums.items()}


def latency_vote(tree: Tree, start: Span, base: dict[Key, tuple[float, float, float]],
                 own_gaps: frozenset = frozenset()) -> Vote | None:
    """The key whose own time grew most in this request, if it explains the slowdown."""
    best: tuple[float, Key, Span, float, float] | None = None
    for k, (own, wait, span, gap) in self_times(tree, start, own_gaps).items():
        b_own, b_wait, b_gap = base.get(k, (0.0, 0.0, 0.0))
        excess = own - b_own
        if best is None or excess > best[0]:
            best = (excess, k, span, wait - b_wait, gap - b_gap)
    if best is None or best[0] <= 1e6:  # under 1 ms of extra time explains nothing
        return None
    excess, key, span, wait_excess, gap_excess = best
    # Time lost before the first downstream call is queueing for a pool, thread or lock.
    if span.status_code == "ERROR" and classify_error(span) != "error":
        kind = classify_error(span)  # slow because it timed out connecting or waiting
    elif wait_excess > 0.8 * excess and tree.children[span.span_id]:
        kind = "saturation"
    else:
        kind = "latency"
    return Vote(key, kind, span, 1.0, excess_ms=excess / 1e6, gap_ms=max(gap_excess, 0) / 1e6)
