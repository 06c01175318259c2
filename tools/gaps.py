"""Time between a CLIENT span and the SERVER span it is linked to: the network, the callee's
accept queue, its socket buffers. That time is the callee's (its network or ingress), never
the caller's, unless every callee of one caller grew at once (then the caller or its host is
slow to send and read).

Only linked calls count (a SERVER span whose parent is a CLIENT span in another service).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.span import Span
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, SURE, _quantile, binom_sf, confidence, mann_whitney_p

MIN_SHIFT_MS = 5.0  # a gap this much longer at least, to be worth naming (a busy host adds ms)
MIN_RATIO = 1.5
TAIL_FACTOR = 3.0  # a gap this many times the baseline's longest is a lost packet, not noise
QUEUED_MS = 100.0  # a baseline p90 gap this long: the edge's requests queue already
QUEUEING = 10.0  # an edge whose baseline p99 gap is this many times a typical edge's queues
QUIET_NOW = 2 * MIN_SAMPLE  # calls now on an edge too quiet in the baseline to test on its own


@dataclass
class Call:
    client: Span
    server: Span
    before_ns: int  # client start -> server start: request in flight or unread
    after_ns: int  # server end -> client end: response in flight
    unwaited: bool = False  # made in no request seen, or it ended long after its request

    @property
    def gap_ms(self) -> float:
        return (self.before_ns + self.after_ns) / 1e6


@dataclass
class GapShift:
    client: str
    server: str
    operation: str  # the server operation most affected
    p50_ms: tuple[float, float]  # baseline, now
    p90_ms: tuple[float, float]
    sure: float  # confidence that gaps grew (Mann-Whitney)
    count: tuple[int, int]
    every_call: bool  # even short gaps grew: a delay on every packet, not a queue now and then
    after: bool  # the response leg grew too (a stalled server cannot delay its sent reply)
    examples: list[Call] = field(default_factory=list)

    @property
    def shift_ms(self) -> float:
        return max(self.p50_ms[1] - self.p50_ms[0], self.p90_ms[1] - self.p90_ms[0])


def calls(sample: Sample) -> list[Call]:
    out = []
    for tree in sample.trees:
        for s in tree.spans:
            if s.kind != "SERVER":
                continue
            c = tree.by_id.get(s.parent_span_id or "")
            if c is None or c.kind != "CLIENT" or c.service == s.service:
                continue
            room = max(c.duration_ns - s.duration_ns, 0)  # clock skew cannot make a gap
            before = min(max(s.start_time_unix_nano - c.start_time_unix_nano, 0), room)
            after = min(max(c.end_time_unix_nano - s.end_time_unix_nano, 0), room - before)
            p = tree.by_id.get(c.parent_span_id or "")
            unwaited = p is None or (p.service == c.service and
                                     c.end_time_unix_nano - p.end_time_unix_nano > MIN_SHIFT_MS * 1e6)
            out.append(Call(c, s, before, after, unwaited))
    return out


def _by_edge(cs: list[Call]) -> dict[tuple[str, str], list[Call]]:
    out: dict[tuple[str, str], list[Call]] = {}
    for c in cs:
        out.setdefault((c.client.service, c.server.service), []).append(c)
    return out


def _tail_p(g1: list[float], g0: list[float], pooled: list[float]) -> float:
    """One-sided p-value that more calls than usual took far longer than the baseline allows
    (lost packets: a few calls wait a retransmission timeout, the rest are as before). The
    chance of such a gap is read from the baseline gaps of every edge (many more calls)."""
    if not g0 or not pooled:
        return 1.0
    limit = max(max(g0), _quantile(pooled, 0.99)) * TAIL_FACTOR + MIN_SHIFT_MS
    k = sum(1 for g in g1 if g > limit)
    p0 = (sum(1 for g in pooled if g > limit) + 1) / (len(pooled) + 2)
    return binom_sf(k, len(g1), p0) if k >= 2 else 1.0


def _beyond_p(g1: list[float], own: list[float], pooled: list[float]) -> float:
    """One-sided p-value that more calls than chance took longer than a quiet edge's own few
    baseline calls and the baseline's p99 over every typical edge."""
    limit = max(max(own), _quantile(pooled, 0.99)) + MIN_SHIFT_MS
    k = sum(1 for g in g1 if g > limit)
    p0 = (sum(1 for g in pooled if g > limit) + 1) / (len(pooled) + 2)
    return binom_sf(k, len(g1), p0) if k >= 2 else 1.0


def gap_shifts(cur: Sample, base: Sample) -> list[GapShift]:
    """Edges whose call gaps grew against the baseline, surest and largest first."""
    now, before = _by_edge(calls(cur)), _by_edge(calls(base))
    # What calls on a typical edge already waited: an edge whose requests queue for long in
    # the baseline (a pool, a lock) must not make every other edge's stall look ordinary.
    p99 = {e: _quantile(sorted(c.gap_ms for c in cs), 0.99) for e, cs in before.items()
           if len(cs) >= MIN_SAMPLE}
    busy = sorted(p99.values())[len(p99) // 2] if p99 else 0.0
    typical = [cs for e, cs in before.items() if p99.get(e, 0.0) <= QUEUEING * max(busy, 1.0)]
    pooled = sorted(c.gap_ms for cs in typical for c in cs)
    pooled_after = sorted(c.after_ns / 1e6 for cs in typical for c in cs)
    out = []
    for edge, cs in now.items():
        bs = before.get(edge, [])
        g1 = sorted(c.gap_ms for c in cs)
        if len(cs) < MIN_SAMPLE or not bs:
            continue
        own = None
        if len(bs) < MIN_SAMPLE:
            # A quiet edge's few baseline calls tell no spread: the gaps of every typical edge
            # of the baseline stand in (one host's network and scheduling), when its own few
            # were typically no longer than those and its calls now are many enough to test;
            # not where ordinary calls already waited for long now and then (calls held open,
            # paired across idle time): those tell nothing of a quiet edge's few long ones.
            own = sorted(c.gap_ms for c in bs)
            if len(cs) < QUIET_NOW or len(pooled) < QUIET_NOW or \
                    _quantile(own, 0.5) > _quantile(pooled, 0.9) or _quantile(pooled, 0.99) >= QUEUED_MS:
                continue
            bs = [c for cs_ in typical for c in cs_]
            # only calls a request of the caller was seen waiting on: one made in no request
            # seen, or outliving its request by far (paired across idle time), waited on nothing
            cs = [c for c in cs if not c.unwaited]
            g1 = sorted(c.gap_ms for c in cs)
            if len(cs) < QUIET_NOW:
                continue
        g0 = sorted(c.gap_ms for c in bs)
        p50 = (_quantile(g0, 0.5), _quantile(g1, 0.5))
        p90 = (_quantile(g0, 0.9), _quantile(g1, 0.9))
        grew = [(b, a) for b, a in (p50, p90)
                if a - b >= MIN_SHIFT_MS and a >= MIN_RATIO * b]
        # (on a quiet edge: calls now beyond every typical edge's p99 and its own few, more
        # often than chance: requests held unread, as by a stopped callee, now and then)
        lost = _tail_p(g1, g0, pooled) if own is None else _beyond_p(g1, own, pooled)
        # The longest gap alone is one call: it counts when calls far beyond the baseline's
        # longest are more than chance (lost packets), not when one straggler says so.
        if not grew and confidence(lost) < SURE:
            continue
        a1 = sorted(c.after_ns / 1e6 for c in cs)
        a0 = sorted(c.after_ns / 1e6 for c in bs)
        # Replies held after the server sent them, on many more calls than the baseline's
        # replies ever were: the path back, told apart from the server's queue (which delays
        # only the request leg) and tested on its own, where one slow request leg of the
        # baseline cannot hide it.
        late = _tail_p(a1, a0, pooled_after)
        sure = confidence(min(mann_whitney_p(g1, g0), lost, late if grew else 1.0))
        if sure < SURE:
            continue
        after = ((_quantile(a1, 0.75) - _quantile(a0, 0.75) >= MIN_SHIFT_MS
                  and confidence(mann_whitney_p(a1, a0)) >= SURE)
                 or confidence(late) >= SURE)
        every = _quantile(g1, 0.25) - _quantile(g0, 0.75) >= max(MIN_SHIFT_MS, 0.5 * (p50[1] - p50[0]))
        if p50[0] >= QUEUED_MS and p90[1] < TAIL_FACTOR * p90[0]:
            # The typical call already spent this long between call and answer in the
            # baseline (a client holding its calls open, calls paired across idle time): no
            # path takes that long, and a little longer now is more of the same.
            continue
        if not (every or after) and p90[0] >= QUEUED_MS:
            # Requests on this edge already waited unread for long in the baseline (a pool, a
            # lock, a busy database takes them in turn): a longer wait now, with replies as
            # prompt as before, is more of the same queue, not a stall of the callee.
            continue
        if p90[0] >= QUEUED_MS and not every and p50[1] - p50[0] < MIN_SHIFT_MS and \
                confidence(mann_whitney_p(g1, g0)) < SURE:
            # An edge whose calls already waited for long now and then (a lock, a queue) and
            # whose typical call did not move: more long waits, on either leg (a long
            # operation's reply is paired where the capture could), are its queue's tail; a
            # change of the path shows on every call, tested on all of them together.
            continue
        if not (every or after) and p90[1] < _quantile(pooled, 0.99) and confidence(lost) < SURE:
            # Requests now and then waiting unread, but no longer than calls on every edge
            # already waited in the baseline (and no lost packets): the busy host's
            # scheduling, not a stall.
            continue
        ops: dict[str, float] = {}
        base_med = p50[0]
        for c in cs:
            ops[c.server.name] = ops.get(c.server.name, 0.0) + max(c.gap_ms - base_med, 0.0)
        worst = sorted(cs, key=lambda c: -c.gap_ms)
        out.append(GapShift(client=edge[0], server=edge[1], operation=max(ops, key=ops.get),
                            p50_ms=p50, p90_ms=p90, sure=sure, count=(len(before.get(edge, [])), len(cs)),
                            every_call=every, after=after, examples=worst[:5]))
    out.sort(key=lambda g: (-g.sure, -g.shift_ms))
    return out


def callers_all_grew(shifts: list[GapShift], edges: dict[str, set[str]]) -> set[str]:
    """Callers whose callees' gaps all grew: the caller (or its host) is slow to send and read,
    not each of its callees' networks at once. Two callees or more say so; half of them do when
    the calls into the caller grew too (it is the one thing those calls share)."""
    grown: dict[str, set[str]] = {}
    for g in shifts:
        grown.setdefault(g.client, set()).add(g.server)
    called = {g.server for g in shifts}
    out = set()
    for c, servers in grown.items():
        mine = edges.get(c, set())
        if (len(mine) >= 2 and servers >= mine) or (c in called and 2 * len(servers & mine) >= len(mine)):
            out.add(c)
    return out


def lone_edges(shifts: list[GapShift], cur: Sample, base: Sample) -> set[tuple[str, str]]:
    """Edges whose typical gap grew while the callee's other callers, with calls enough to
    tell, saw theirs stay as they were: one caller slow to send or read (its threads, its
    pool, its host), not the callee's network, which every caller would cross."""
    now, before = _by_edge(calls(cur)), _by_edge(calls(base))

    def grew(edge: tuple[str, str], q: float) -> float:
        return (_quantile(sorted(c.gap_ms for c in now[edge]), q)
                - _quantile(sorted(c.gap_ms for c in before[edge]), q))

    shifted = {(g.client, g.server) for g in shifts}
    out = set()
    for g in shifts:
        typical = g.p50_ms[1] - g.p50_ms[0]
        if typical < MIN_SHIFT_MS:
            continue  # a tail (lost packets, a stall now and then) may miss a quieter edge
        others = [e for e in now if e[1] == g.server and e[0] != g.client and e not in shifted
                  and len(now[e]) >= 2 * MIN_SAMPLE and len(before.get(e, [])) >= 2 * MIN_SAMPLE]
        if others and all(grew(e, 0.5) < 0.25 * typical and grew(e, 0.9) < 0.25 * g.shift_ms
                          for e in others):
            out.add((g.client, g.server))
    return out
