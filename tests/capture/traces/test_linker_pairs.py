"""The linker's one-to-one CLIENT -> SERVER matching (rule 2), made without holding every candidate
pair, gives the pairs the plain greedy gives (all pairs sorted by fit, taken best first), on busy
keep-alive connections where each client has dozens of candidates within the slack."""
from __future__ import annotations

import random
from bisect import bisect_left, bisect_right

import pytest

from capture.span import Span
from capture.traces.linker import conn_key, link

MS = 1_000_000


def busy(seed: int, conns: int = 3, requests: int = 150) -> list[Span]:
    """Clients and servers on a few connections, requests overlapping within the slack, some
    server spans missing or doubled, clocks apart by up to 2 ms."""
    rng = random.Random(seed)
    spans = []
    for c in range(conns):
        conn = {"client.address": "10.0.0.1", "client.port": 40000 + c, "server.address": "10.0.0.2",
                "server.port": 80, "network.transport": "tcp"}
        t = 0
        for _ in range(requests):
            t += rng.randint(0, 300_000)
            d = rng.randint(20_000, 2 * MS)
            skew = rng.randint(-2 * MS, 2 * MS)
            spans.append(Span("GET /", "CLIENT", t, t + d, attributes=dict(conn),
                              resource={"host.name": "a", "process.pid": 1}))
            for _ in range(rng.choice((0, 1, 1, 1, 2))):
                s = t + skew + rng.randint(0, d // 4)
                spans.append(Span("GET /", "SERVER", s, s + rng.randint(10_000, d), attributes=dict(conn),
                                  resource={"host.name": "b", "process.pid": 2}))
    rng.shuffle(spans)
    return spans


def greedy(spans: list[Span], slack_ns: int) -> dict[str, str]:
    """server span id -> client span id: every candidate pair, sorted, taken best first."""
    servers: dict = {}
    for s in spans:
        if s.kind == "SERVER":
            servers.setdefault(conn_key(s), []).append(s)
    for v in servers.values():
        v.sort(key=lambda x: x.end_time_unix_nano)
    pairs = []
    for c in spans:
        if c.kind == "CLIENT" and conn_key(c) in servers:
            ss = servers[conn_key(c)]
            ends = [x.end_time_unix_nano for x in ss]
            lo = bisect_left(ends, c.start_time_unix_nano - slack_ns)
            hi = bisect_right(ends, c.end_time_unix_nano + slack_ns)
            for s in ss[lo:hi]:
                if s.start_time_unix_nano <= c.end_time_unix_nano + slack_ns:
                    fit = (abs(c.end_time_unix_nano - s.end_time_unix_nano)
                           + abs(s.start_time_unix_nano - c.start_time_unix_nano))
                    pairs.append((fit, c.span_id, s.span_id))
    used, parent = set(), {}
    for _fit, cid, sid in sorted(pairs):
        if cid not in used and sid not in parent:
            used.add(cid)
            parent[sid] = cid
    return parent


@pytest.mark.parametrize("seed", range(6))
def test_matching_is_the_greedy_over_all_pairs(seed):
    spans = busy(seed)
    want = greedy(spans, 50 * MS)
    stats = link(spans, slack_ns=50 * MS)
    got = {s.span_id: s.parent_span_id for s in spans if s.kind == "SERVER" and s.parent_span_id}
    assert got == want
    assert stats.cross_process == len(want) > 200
