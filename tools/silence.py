"""Silence: a service that did nothing for a long stretch of the window (no span of it began,
none was waiting on another service) while the rest of the system went on, far longer than its
baseline rate allows by chance. A stopped process (a stuck consumer, a paused worker) makes no
spans at all: the absence of spans is the signal, and a catch-up burst after it can leave the
window's counts as they were. Reads the bounded samples of the window and the baseline
(tools/sampling.py): a small window is read whole, and no silence is looked for in a slice
read only in part (a busy store); the store only for the few traces that tell a silence from
a wait. Ranks nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore, TimeWindow, peer_name
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, SURE, confidence

SILENT_SHARE = 0.25  # a silence must last this share of the time the window's data covers
SILENT_NS = 10 * 10**9  # and longer than a busy host stalls one process (seconds, not minutes)
BURST_NS = 10_000_000  # spans of one service starting within this of each other: one piece of work
EDGE_NS = 100_000_000  # work this close to a silence's ends belongs to the calls at its edges
PROBES = 5  # baseline requests of a silent service whose traces say who calls it
WAITED_NS = 500_000_000  # a call failing after this long waited for an answer (a timeout)
FOLLOWS = 0.5  # a call that followed its last span's kind this often is the one it stopped in
QUEUE_SCAN = 2000  # spans read from a silent worker's stretch to find work put into its queue
BLOCKING_POPS = {"BRPOP", "BLPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "XREAD",
                 "XREADGROUP"}
PUSHES = {"LPUSH", "RPUSH", "LPUSHX", "RPUSHX", "XADD", "ZADD", "LMOVE", "RPOPLPUSH"}


@dataclass
class Silence:
    service: str
    start_ns: int  # the last span of it before the silence began (or the data's start)
    end_ns: int  # the first span of it after (or the data's end)
    covered_ns: int  # the time the window's data covers
    rate_per_s: float  # pieces of work per second it was held to (baseline, or less)
    sure: float
    last: Span | None  # its span just before the silence
    first: Span | None  # and just after
    worker: bool = False  # it serves nothing: it takes its work from a queue
    waiting: tuple[str, str] | None = None  # (callee, operation) of the call it stopped in

    @property
    def share(self) -> float:
        return (self.end_ns - self.start_ns) / max(self.covered_ns, 1)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def describe(self) -> str:
        return (f"no span of {self.service} began for {self.seconds:.1f} s of the"
                f" {self.covered_ns / 1e9:.0f} s covered, while other services went on; at its"
                f" {self.rate_per_s:.2f} pieces of work per second that is no chance"
                f" ({self.sure:.1%} sure): it stopped")


def _events(starts: list[int]) -> int:
    """Pieces of work: spans starting together (a delivery, its query and its ack) count once."""
    starts = sorted(starts)
    return sum(1 for i, t in enumerate(starts) if i == 0 or t - starts[i - 1] > BURST_NS)


def _waiting(store: SpanStore, s: Span, lo: int, hi: int) -> bool:
    """Whether s, a call of the service in flight through [lo, hi], kept it waiting on another service:
    its callee was at work on it in the middle of the stretch (or is not seen). A callee that
    answered early (the reply read only at the end), or that began only at the end (the request
    sent only then), was not waited on: the caller was stopped."""
    if s.kind not in ("CLIENT", "PRODUCER"):
        return False
    answers = [k for k in store.trace(s.trace_id) if k.parent_span_id == s.span_id and k.kind == "SERVER"]
    mid = lo + (hi - lo) // 2
    return not answers or any(k.start_time_unix_nano <= mid <= k.end_time_unix_nano for k in answers)


def _callers(store: SpanStore, spans: list[Span], skip: set[str]) -> set[tuple[str, str]]:
    """(service, call name) of the calls that these SERVER spans answered, from their traces."""
    out: set[tuple[str, str]] = set()
    for s in [x for x in spans if x.kind == "SERVER" and x.parent_span_id][:PROBES]:
        out |= {(p.service, p.name) for p in store.trace(s.trace_id)
                if p.span_id == s.parent_span_id and p.service not in skip}
    return out


def takes_from(s: Span) -> str | None:
    """The queue a call takes work from (a delivery or receive, a blocking pop; "?" when it
    does not say which), else None."""
    a = s.attributes
    if a.get("messaging.operation.type") in ("receive", "process"):
        return str(a.get("messaging.rabbitmq.destination.routing_key") or a.get("messaging.destination.name") or "?")
    if str(a.get("db.operation.name", "")).upper() in BLOCKING_POPS:
        words = str(a.get("db.query.text", "")).split()
        return words[1] if len(words) > 1 else "?"
    return None


def _puts_to(s: Span) -> str | None:
    """The queue a call puts work into (a publish, a push), else None."""
    a = s.attributes
    if a.get("messaging.operation.type") in ("publish", "send", "create"):
        return str(a.get("messaging.rabbitmq.destination.routing_key") or a.get("messaging.destination.name") or "") or None
    if str(a.get("db.operation.name", "")).upper() in PUSHES:
        words = str(a.get("db.query.text", "")).split()
        return words[1] if len(words) > 1 else None
    return None


def _offered(store: SpanStore, svc: str, got_b: list[Span], lo: int, hi: int) -> bool:
    """Whether work for svc went on arriving during [lo, hi] (MIN_SAMPLE pieces at least): its
    baseline callers kept making the calls they made to it, and waited on them; or, for a
    worker that serves nothing, others kept putting work into the queue it takes from. A
    service nobody offered work is idle, not stopped; a client that serves nothing and takes
    no work (a load generator) sends what it is asked to."""
    w = TimeWindow(lo + EDGE_NS, hi - EDGE_NS)
    if w.end_ns <= w.start_ns:
        return False
    callers = _callers(store, got_b, {svc})
    if callers:
        # calls that failed without waiting (refused, a failed handshake) reached no process
        # that took them: it is down or unreachable, and their failures name it
        return sum(1 for c, n in sorted(callers) for x in store.spans(SpanFilter(
            window=w, service=c, name=n, kind="CLIENT", limit=PROBES * MIN_SAMPLE))
            if x.status_code != "ERROR" or x.duration_ns >= WAITED_NS) >= MIN_SAMPLE
    queues = {q for q in map(takes_from, got_b) if q}
    return bool(queues) and sum(1 for s in store.spans(SpanFilter(window=w, limit=QUEUE_SCAN))
                                if s.service != svc and s.kind in ("CLIENT", "PRODUCER")
                                and _puts_to(s) in queues) >= MIN_SAMPLE


def _stopped_in(svc: str, spans: list[Span], last: Span | None) -> tuple[str, str] | None:
    """The call a worker that never resumed was most likely in, when its last span took a piece
    of work and, in the sampled spans, taking work was followed at once by one call to another
    service: (callee, operation). That call never answered within the data, so it left no
    span: the worker was waiting on its callee (a row lock held elsewhere), not stopped (a
    stopped worker is stopped between pieces of work, or inside a take it never read). None
    when what followed varied; taking work again (after an empty pop) is not counted. Its
    calls seen only at their server (the CLIENT span lost) count: SERVER spans on the
    connections its calls use."""
    if last is None or takes_from(last) is None:
        return None
    own = [s for s in spans if s.service == svc]
    ids = {s.span_id for s in own}
    conns = {_conn(s) for s in own if s.kind == "CLIENT"} - {None}
    answered = [s for s in spans if s.service != svc and s.kind == "SERVER" and _conn(s) in conns
                and s.parent_span_id not in ids]
    mine = sorted(own + answered, key=lambda s: s.start_time_unix_nano)
    nxt: dict[tuple[str, str], int] = {}
    seen = 0
    for i, s in enumerate(mine):
        if s.service != svc or s.name != last.name or s.kind != last.kind:
            continue
        after = next((n for n in mine[i + 1:] if n.start_time_unix_nano >= s.end_time_unix_nano - BURST_NS), None)
        if after is None or after.start_time_unix_nano - s.end_time_unix_nano > EDGE_NS:
            continue
        if takes_from(after) is not None:
            continue  # it took no work (an empty pop) and asked again: no call of a piece of work
        seen += 1
        if (after.kind == "CLIENT") == (after.service == svc) and after.attributes.get("server.port"):
            k = (after.name, str(after.attributes["server.port"]))
            nxt[k] = nxt.get(k, 0) + 1
    if not nxt:
        return None
    (name, port), n = max(nxt.items(), key=lambda kv: kv[1])
    if n < MIN_SAMPLE or n < FOLLOWS * seen:
        return None
    callee = {x.service for x in spans if x.kind == "SERVER" and x.name == name
              and str(x.attributes.get("server.port")) == port}
    if len(callee) == 1:
        return next(iter(callee)), name
    tmpl = next(x for x in mine if x.name == name and str(x.attributes.get("server.port")) == port)
    peer = peer_name(tmpl.attributes)
    return (peer, name) if peer else None


def _conn(s: Span) -> tuple[str, str] | None:
    """The connection a call went over: (client port, server port)."""
    a = s.attributes
    if a.get("client.port") is None or a.get("server.port") is None:
        return None
    return str(a["client.port"]), str(a["server.port"])


def _p_silence(rate: float, gap_s: float, total_s: float) -> float:
    """Chance that work arriving at `rate` per second leaves a gap of gap_s somewhere in total_s:
    about the expected number of gaps that long among the arrivals."""
    return min(1.0, (1.0 + rate * max(total_s - gap_s, 0.0)) * math.exp(-rate * gap_s))


def _range(spans: list[Span], w: TimeWindow) -> tuple[int, int] | None:
    if not spans:
        return None
    return (max(w.start_ns, min(s.start_time_unix_nano for s in spans)),
            min(w.end_ns, max(s.start_time_unix_nano for s in spans)))


def silences(store: SpanStore, cur: Sample, base: Sample) -> list[Silence]:
    """Services silent for a stretch their rate does not allow, longest first."""
    rng, rng_b = _range(cur.spans, cur.window), _range(base.spans, base.window)
    if rng is None or rng_b is None:
        return []
    lo, hi = rng
    total = hi - lo
    base_s = (rng_b[1] - rng_b[0]) / 1e9
    if total <= 0 or base_s <= 0:
        return []
    now: dict[str, list[Span]] = {}
    before: dict[str, list[Span]] = {}
    for spans, into in ((cur.spans, now), (base.spans, before)):
        for s in spans:
            into.setdefault(s.service, []).append(s)
    out = []
    for svc, got_b in before.items():
        n_b = _events([s.start_time_unix_nano for s in got_b])
        if n_b < 2 * MIN_SAMPLE:
            continue
        got = sorted(now.get(svc, []), key=lambda s: s.start_time_unix_nano)
        starts = [s.start_time_unix_nano for s in got]
        edges = [lo, *starts, hi]
        i = max(range(len(edges) - 1), key=lambda j: edges[j + 1] - edges[j])
        a, b = edges[i], edges[i + 1]
        if b - a < max(SILENT_SHARE * total, SILENT_NS) or any(
                c.start_ns < b and a < c.end_ns for c in cur.cut):
            continue
        outside = _events(starts)
        # a baseline read in part tells no rate: the window's own, outside the stretch, does
        rate = n_b / base_s if not base.cut else math.inf
        if total - (b - a) > 0:
            rate = min(rate, outside / ((total - (b - a)) / 1e9))
        sure = confidence(_p_silence(rate, (b - a) / 1e9, total / 1e9)) if rate < math.inf else 0.0
        if sure < SURE:
            continue
        # its own calls still in flight through the stretch: it was waiting on them, not stopped
        crossing = [s for s in got if s.start_time_unix_nano <= a and s.end_time_unix_nano >= (a + b) // 2]
        if any(_waiting(store, s, a, b) for s in crossing):
            continue
        # the rest of the system went on and work for it was offered (not a capture or a host
        # that stopped, nor callers that stopped calling it)
        if not _offered(store, svc, got_b, a, b):
            continue
        last = next((s for s in reversed(got) if s.start_time_unix_nano <= a), None)
        first = next((s for s in got if s.start_time_unix_nano >= b), None)
        worker = not any(s.kind == "SERVER" for s in got_b)
        waiting = _stopped_in(svc, base.spans + cur.spans, last) if first is None else None
        out.append(Silence(svc, a, b, total, rate, sure, last, first, worker, waiting))
    out.sort(key=lambda x: -(x.end_ns - x.start_ns))
    return out
