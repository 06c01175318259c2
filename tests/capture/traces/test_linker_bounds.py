"""The stream linker under a flood: spans waiting and spans kept as context stay bounded in
count (released early, counted) instead of growing with the traffic of one window."""
from __future__ import annotations

from capture.span import Span
from capture.traces.stream import StreamLinker

MS = 1_000_000


def test_a_flood_within_one_window_keeps_pending_and_context_bounded():
    stream = StreamLinker(window_s=5.0, max_pending=1000)
    released = 0
    for i in range(20_000):  # 20,000 spans within 2 s of stream time: all in one window
        t = i * 100_000
        s = Span(name="GET /", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=t + MS,
                 attributes={"server.port": 80, "client.port": 40000 + i % 20000})
        released += len(stream.add([s]))
        assert stream.pending <= 1000 and len(stream._context) <= 1000
    assert stream.forced > 0 and stream.context_trimmed > 0
    released += len(stream.flush())
    assert released == 20_000  # every span still comes out, once


def _exchange(i: int, kind: str) -> Span:
    t = i * MS
    start, end = (t, t + MS // 2) if kind == "CLIENT" else (t + MS // 10, t + MS // 3)
    return Span(name="GET /", kind=kind, start_time_unix_nano=start, end_time_unix_nano=end,
                attributes={"client.address": "10.0.0.1", "client.port": 40000,
                            "server.address": "10.0.0.2", "server.port": 80})


def test_a_keep_alive_connection_links_in_time_linear_in_its_exchanges():
    """One connection carrying 20,000 exchanges: each server span gets its own client span, and a
    client looks only at servers that ended during it (trying every server was quadratic: minutes)."""
    import time

    from capture.traces.linker import link
    clients = [_exchange(i, "CLIENT") for i in range(20_000)]
    servers = [_exchange(i, "SERVER") for i in range(20_000)]
    t0 = time.process_time()
    stats = link(clients + servers[::-1], slack_ns=MS // 20)
    assert time.process_time() - t0 < 5.0
    assert stats.cross_process == 20_000
    assert all(s.parent_span_id == c.span_id and s.trace_id == c.trace_id for c, s in zip(clients, servers))
