"""Parent links and trace ids for spans captured without context propagation.

Rule 1: W3C traceparent carried by a request wins (its trace id; its parent id when no
        captured CLIENT span is the parent).
Rule 2: cross-process: a SERVER span's parent is the CLIENT span of the same connection
        (same endpoints, either direction) during which the server answered (its end within
        the client's interval, `slack_ns` for clocks); one-to-one, closest start+end first.
Rule 3: in-process: a CLIENT span's parent is the SERVER span of the same host+pid that
        encloses its start on the same goroutine/thread; with no thread match, the only
        server span open on that pid. Several candidates = ambiguous: left unlinked.
Rule 4: a connected group of spans shares one trace id: a published (frozen) member's, else
        the traceparent's, else its root's.
Spans that already have a parent (imported traces) keep it. Works on spans from many hosts.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from heapq import heapify, heappop, heappush
from dataclasses import dataclass
from typing import Iterable

from capture.span import Span

TRACEPARENT = "http.request.header.traceparent"
_SERVERS = ("SERVER", "CONSUMER")
_CLIENTS = ("CLIENT", "PRODUCER")


@dataclass(slots=True)
class LinkStats:
    cross_process: int = 0
    in_process: int = 0
    traceparent: int = 0
    ambiguous: int = 0


def conn_key(s: Span) -> tuple | None:
    """Both endpoints of the span's connection, order-free (so either side's view matches)."""
    a = s.attributes
    if a is None:  # a compact row (capture.rows): its link facts were read when it was made
        return s.key[0]
    ca, cp, sa, sp = (a.get("client.address"), a.get("client.port"),
                      a.get("server.address"), a.get("server.port"))
    if ca is None or cp is None or sa is None or sp is None:
        return None
    ends = sorted([(str(ca), int(cp)), (str(sa), int(sp))])
    return (a.get("network.transport", "tcp"), ends[0], ends[1])


def parse_traceparent(value: object) -> tuple[str, str] | None:
    """(trace id, parent span id) from "00-<32 hex>-<16 hex>-<flags>", None when malformed."""
    parts = str(value).strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    trace, parent = parts[1].lower(), parts[2].lower()
    if trace == "0" * 32 or parent == "0" * 16:
        return None
    try:
        int(trace, 16), int(parent, 16)
    except ValueError:
        return None
    return trace, parent


def _traceparent(s: Span) -> object:
    """The span's traceparent header value, None without one."""
    a = s.attributes
    return s.key[2] if a is None else a.get(TRACEPARENT)


def _process(s: Span) -> tuple:
    return (s.resource.get("host.name"), s.resource.get("process.pid"))


def _thread(s: Span) -> tuple | None:
    a = s.attributes
    if a is None:  # a compact row (capture.rows)
        return s.key[1]
    if a.get("go.goroutine.id") is not None:
        return ("g", a["go.goroutine.id"])
    if a.get("thread.id") is not None:
        return ("t", a["thread.id"])
    return None


def link(spans: list[Span], frozen: frozenset[str] | set[str] = frozenset(),
         slack_ns: int = 50_000_000) -> LinkStats:
    """Set parent_span_id and trace_id in place (never on spans whose id is in `frozen`): in C
    (capture/traces/_link.c) where setup.py built it, else link_python, its specification."""
    if _link is not None and type(spans) is list:
        got = _link.link(spans, frozen, slack_ns, conn_key, _thread, _process, parse_traceparent)
        if got is not None:  # None: a case the C leaves to the specification (two spans, one id)
            return LinkStats(*got)
    return link_python(spans, frozen, slack_ns)


def link_python(spans: list[Span], frozen: frozenset[str] | set[str] = frozenset(),
                slack_ns: int = 50_000_000) -> LinkStats:
    """link() in Python: the rules as written at the top of this module."""
    stats = LinkStats()
    by_id = {s.span_id: s for s in spans}
    parent: dict[str, str] = {s.span_id: s.parent_span_id for s in spans if s.parent_span_id}
    open_ = [s for s in spans if s.span_id not in frozen and not s.parent_span_id]

    # Rule 2: CLIENT -> SERVER over the same connection.
    servers_by_conn: dict[tuple, list[Span]] = defaultdict(list)
    for s in open_:
        if s.kind in _SERVERS and (k := conn_key(s)) is not None:
            servers_by_conn[k].append(s)
    # each connection's server spans by end time: a client looks only at the few that ended
    # during it (a keep-alive connection carries thousands; trying each was quadratic)
    ends_by_conn: dict[tuple, list[int]] = {}
    for k, servers in servers_by_conn.items():
        servers.sort(key=lambda x: x.end_time_unix_nano)
        ends_by_conn[k] = [x.end_time_unix_nano for x in servers]
    # One-to-one, best fit first over every (client, server) candidate pair: a merge of each
    # client's candidates in fit order, a client's next one computed only when its better ones
    # were taken (a busy keep-alive connection gives each client dozens of candidates within the
    # slack; all of them at once were most of what a run held).
    # A CLIENT span already answered by a SERVER span (released earlier, or imported) is taken.
    used_c = {p for sid, p in parent.items() if by_id[sid].kind in _SERVERS}
    heap: list[tuple] = []
    for n, c in enumerate(spans):
        if c.kind in _CLIENTS and c.span_id not in used_c and (k := conn_key(c)) in servers_by_conn:
            cands = _candidates(c, servers_by_conn[k], ends_by_conn[k], slack_ns)
            if cands:
                fit, sid = min(cands)
                heap.append((fit, c.span_id, sid, n, 0))
    heapify(heap)
    rest: dict[int, list[tuple[int, str]]] = {}  # a client's candidates in order, once it needed a second
    while heap:
        fit, cid, sid, n, i = heappop(heap)
        if cid in used_c:
            continue
        if sid not in parent:
            used_c.add(cid)
            parent[sid] = cid
            stats.cross_process += 1
            continue
        c = spans[n]
        if (cands := rest.get(n)) is None:
            cands = rest[n] = sorted(_candidates(c, servers_by_conn[conn_key(c)],
                                                 ends_by_conn[conn_key(c)], slack_ns))
        if i + 1 < len(cands):
            heappush(heap, (cands[i + 1][0], cid, cands[i + 1][1], n, i + 1))

    # Rule 1 (fallback half): a SERVER span with a traceparent but no captured caller.
    for s in open_:
        if s.kind in _SERVERS and s.span_id not in parent and (value := _traceparent(s)) is not None:
            tp = parse_traceparent(value)
            if tp:
                parent[s.span_id] = tp[1]
                stats.traceparent += 1

    # Rule 3: CLIENT spans inside a SERVER span of the same process: a sweep by start time per
    # process, keeping the server spans open at each client's start (few: the concurrency).
    servers_by_proc: dict[tuple, list[Span]] = defaultdict(list)
    clients_by_proc: dict[tuple, list[Span]] = defaultdict(list)
    for s in spans:
        if s.kind in _SERVERS:
            servers_by_proc[_process(s)].append(s)
    for c in open_:
        if c.kind in _CLIENTS and c.span_id not in parent:
            clients_by_proc[_process(c)].append(c)
    for key, clients in clients_by_proc.items():
        servers = sorted(servers_by_proc.get(key, ()), key=lambda x: x.start_time_unix_nano)
        clients.sort(key=lambda x: x.start_time_unix_nano)
        active: list[Span] = []
        k = 0
        for c in clients:
            t = c.start_time_unix_nano
            while k < len(servers) and servers[k].start_time_unix_nano <= t:
                active.append(servers[k])
                k += 1
            active = [s for s in active if s.end_time_unix_nano >= t]
            enclosing = [s for s in active if s.span_id != c.span_id]
            th = _thread(c)
            same_thread = [s for s in enclosing if th is not None and _thread(s) == th]
            pick = same_thread if same_thread else enclosing
            if len(pick) == 1:
                parent[c.span_id] = pick[0].span_id
                stats.in_process += 1
            elif len(pick) > 1:
                stats.ambiguous += 1

    # Rule 4: one trace id per connected group.
    _assign_traces(spans, by_id, parent, frozen)
    for s in open_:
        if s.span_id in parent:
            s.parent_span_id = parent[s.span_id]
    return stats


def _candidates(c: Span, servers: list[Span], ends: list[int], slack_ns: int) -> list[tuple[int, str]]:
    """(fit, span id) of the server spans of c's connection that may have answered it."""
    cs, ce = c.start_time_unix_nano, c.end_time_unix_nano
    lo = bisect_left(ends, cs - slack_ns)
    hi = bisect_right(ends, ce + slack_ns)
    # The response is the anchor (both ends see it at once); a server span's start can be early
    # when the capture joined the connection mid-request.
    return [(abs(ce - s.end_time_unix_nano) + abs(s.start_time_unix_nano - cs), s.span_id)
            for s in servers[lo:hi] if s.start_time_unix_nano <= ce + slack_ns]


def _assign_traces(spans: list[Span], by_id: dict[str, Span], parent: dict[str, str],
                   frozen: frozenset[str] | set[str]) -> None:
    root_of: dict[str, str] = {}

    def root(sid: str) -> str:
        path = []
        while sid not in root_of and parent.get(sid) in by_id and sid not in path:
            path.append(sid)
            sid = parent[sid]
        r = root_of.get(sid, sid)
        for p in path:
            root_of[p] = r
        root_of[sid] = r
        return r

    groups: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        groups[root(s.span_id)].append(s)
    for rid, members in groups.items():
        trace = next((m.trace_id for m in members if m.span_id in frozen), None)
        if trace is None:
            carried = sorted((m.start_time_unix_nano, tp[0]) for m in members
                             if (value := _traceparent(m)) is not None
                             and (tp := parse_traceparent(value)))
            trace = carried[0][1] if carried else by_id[rid].trace_id
        for m in members:
            if m.span_id not in frozen:
                m.trace_id = trace


def resources_of(spans: list[Span]) -> list[dict]:
    """The spans' resources, each once by identity, in the order first seen (in C where built:
    capture/traces/_link.c resources)."""
    if _link is not None and type(spans) is list:
        return _link.resources(spans)
    return resources_python(spans)


def resources_python(spans: Iterable[Span]) -> list[dict]:
    """resources_of in Python: the specification of the compiled one."""
    return list({id(s.resource): s.resource for s in spans}.values())


def link_all(spans: Iterable[Span], slack_ns: int = 50_000_000) -> list[Span]:
    """Link a finished batch (e.g. spans loaded from a store or several hosts' files)."""
    out = list(spans)
    link(out, slack_ns=slack_ns)
    return out


try:
    from capture.traces import _link
except ImportError:  # not built (setup.py): link_python for every run
    _link = None
