"""HTTP/1 under hostile and unanswered streams, through the pipeline as the live capture feeds
it: memory held per connection stays bounded and every bound that is hit is counted."""
from __future__ import annotations

import gc
import time
import tracemalloc

from capture.connection import Connection
from capture.pipeline import Pipeline
from capture.protocols import http1
from capture.protocols.base import Side
from capture.protocols.http1 import MAX_HEAD, MAX_PENDING_BYTES, Http1Parser

CONNS = 40


def conn(i: int) -> Connection:
    return Connection(conn_id=i, pid=1, protocol="HTTP1", role="SERVER", local=("127.0.0.1", 80),
                      remote=("127.0.0.1", 40000 + i))


def held(feed) -> int:
    """Bytes still allocated after `feed()` ran (what the connections hold)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = feed()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert keep is not None
    return after - before


def test_unanswered_requests_with_long_lines_hold_a_bounded_number_of_bytes():
    """Each connection sends 2,000 requests of ~2 KiB lines (4 MiB) that are never answered."""
    spans: list = []
    pipeline = Pipeline(spans.extend)
    conns = [conn(i) for i in range(CONNS)]

    def feed():
        for c in conns:
            for k in range(2000):
                line = b"GET /" + b"%d/" % k + b"x" * 2000 + b" HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\n\r\n"
                pipeline.data(c, False, line, k)  # a SERVER connection reads its requests
        return conns

    grown = held(feed)
    # the answer-less queue of every connection is at its byte bound, not at 2,000 requests
    per_conn = [c.parser._pending for c in conns]
    assert all(p.bytes <= MAX_PENDING_BYTES and len(p) < 40 for p in per_conn)
    assert grown < CONNS * (MAX_PENDING_BYTES + 16 * 1024), grown  # 4 MiB each would be sent
    waiting = sum(len(p) for p in per_conn)
    for c in conns:
        pipeline.close(c, 10**9)
    pipeline.flush()
    assert pipeline.stats["http1.pending_overflow_bytes"] > CONNS * 1900
    # what still waited at close became "no response" spans
    assert len(spans) == waiting and {s.status_code for s in spans} == {"ERROR"}


def test_a_head_or_chunk_line_that_never_ends_is_dropped_at_its_bound():
    p = Http1Parser()
    p.feed(Side.CLIENT, b"GET / HTTP/1.1\r\n", 1)
    for i in range(200):  # 200 x 1 KiB of header lines and no blank line
        p.feed(Side.CLIENT, b"X-Pad: " + b"a" * 1017 + b"\r\n", 2 + i)
        assert len(p._dirs[Side.CLIENT].buf) <= MAX_HEAD + 1024
    assert p.stats["head_too_large"] >= 1
    p.feed(Side.CLIENT, b"GET /ok HTTP/1.1\r\n\r\n", 300)  # resynchronised
    p.feed(Side.SERVER, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 301)
    for i in range(200):  # a chunk-size line that never ends
        p.feed(Side.SERVER, b"f" * 1024, 302 + i)
        assert len(p._dirs[Side.SERVER].buf) <= MAX_HEAD + 1024
    assert p.stats["bad_chunk"] >= 1


def test_many_small_chunks_in_one_read_cost_time_linear_in_bytes():
    """A chunked body of tiny chunks read in one call: each chunk line is found in place, the
    rest of the read is not copied for each of them."""
    def run(n: int) -> float:
        p = Http1Parser()
        p.feed(Side.CLIENT, b"GET / HTTP/1.1\r\n\r\n", 1)
        body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\na\r\n" * n + b"0\r\n\r\n"
        start = time.process_time()
        out = p.feed(Side.SERVER, body, 2)
        took = time.process_time() - start
        assert len(out) == 1 and not p.stats
        return took

    run(1000)
    small, large = min(run(20_000) for _ in range(3)), min(run(80_000) for _ in range(3))
    assert large < 8 * small, (small, large)  # 4x the bytes; quadratic copying would be ~16x


def test_pending_queue_bounds_by_count_and_by_bytes_and_counts_both():
    p = Http1Parser()
    for i in range(http1.MAX_PENDING + 10):
        p.feed(Side.CLIENT, b"GET /%d HTTP/1.1\r\n\r\n" % i, i)
    assert len(p._pending) <= http1.MAX_PENDING
    assert p.stats["pending_overflow"] + p.stats["pending_overflow_bytes"] == http1.MAX_PENDING + 10 - len(p._pending)
    assert p._pending.bytes <= MAX_PENDING_BYTES
    recs = p.feed(Side.SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 10**6)
    # the oldest went first: the answer pairs with the oldest request still waiting
    kept = len(p._pending) + 1
    assert recs[0].attributes["url.path"] == f"/{http1.MAX_PENDING + 10 - kept}"
