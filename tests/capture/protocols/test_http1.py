"""HTTP/1 parser from bytes alone: framing, pairing, truncation, resync, hostile input."""
from __future__ import annotations

import os
import random

from capture.protocols.base import Side
from capture.protocols.http1 import Http1Parser, detect, route_of

C, S = Side.CLIENT, Side.SERVER


def feed_all(p, chunks):
    out = []
    for side, data, ts, *size in chunks:
        out += p.feed(side, data, ts, *size)
    return out


def test_keep_alive_exchanges_each_become_a_record():
    p = Http1Parser()
    recs = feed_all(p, [
        (C, b"GET /a?x=1 HTTP/1.1\r\nHost: svc:80\r\nUser-Agent: t\r\n\r\n", 100),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 250),
        (C, b"POST /users/42/orders HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 300),
        (S, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 390),
    ])
    assert [r.name for r in recs] == ["GET /a", "POST /users/{id}/orders"]
    a, b = recs
    assert (a.start_ns, a.end_ns, a.status) == (100, 250, "UNSET")
    assert a.attributes["url.query"] == "x=1"
    assert a.attributes["http.response.status_code"] == 200
    assert a.attributes["http.request.header.host"] == "svc:80"
    assert a.attributes["user_agent.original"] == "t"
    assert b.status == "ERROR" and b.attributes["error.type"] == "503"
    assert b.attributes["url.path"] == "/users/42/orders"


def test_pipelined_requests_pair_in_order():
    p = Http1Parser()
    reqs = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(5))
    assert p.feed(C, reqs, 1) == []
    resps = b"".join(f"HTTP/1.1 {200 + i} OK\r\nContent-Length: 1\r\n\r\n{i}".encode() for i in range(5))
    recs = p.feed(S, resps, 2)
    assert [(r.attributes["url.path"], r.attributes["http.response.status_code"]) for r in recs] == [
        (f"/p{i}", 200 + i) for i in range(5)]


def test_chunked_response_split_across_reads():
    p = Http1Parser()
    p.feed(C, b"GET /c HTTP/1.1\r\n\r\n", 1)
    body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n"
    recs = []
    for i in range(0, len(body), 7):  # 7-byte reads cut every token somewhere
        recs += p.feed(S, body[i:i + 7], 10 + i)
    assert len(recs) == 1 and recs[0].end_ns == 10 + (len(body) - 1) // 7 * 7
    assert p.stats == {}


def test_truncated_copy_of_a_large_body_is_skipped_by_length():
    p = Http1Parser()
    head = b"POST /upload HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
    # the kernel copied only the first 1 KiB of a 100 KiB write
    assert p.feed(C, (head + b"x" * 100000)[:1024], 1, len(head) + 100000) == []
    recs = p.feed(S, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 2)
    assert [r.attributes["http.response.status_code"] for r in recs] == [201]


def test_head_and_304_responses_have_no_body():
    p = Http1Parser()
    p.feed(C, b"HEAD /h HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\n", 1)
    recs = p.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 2)
    assert [r.attributes["http.response.status_code"] for r in recs] == [200, 304]


def test_interim_100_continue_is_not_a_response():
    p = Http1Parser()
    p.feed(C, b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 1)
    assert p.feed(S, b"HTTP/1.1 100 Continue\r\n\r\n", 2) == []
    p.feed(C, b"abc", 3)
    recs = p.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4)
    assert [(r.start_ns, r.end_ns) for r in recs] == [(1, 4)]


def test_mid_stream_join_resyncs_at_next_message():
    p = Http1Parser()
    # we start in the middle of a body and of a response: both are skipped, not misparsed
    assert p.feed(C, b"lo world\"}", 1) == []
    assert p.feed(S, b"ml>\r\n", 2) == []
    p.feed(C, b"GET /next HTTP/1.1\r\n\r\n", 3)
    recs = p.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4)
    assert [r.attributes["url.path"] for r in recs] == ["/next"]
    assert p.stats["garbage"] >= 1


def test_loss_never_mispairs():
    p = Http1Parser()
    p.feed(C, b"GET /one HTTP/1.1\r\n\r\n", 1)
    p.feed(S, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 2, 5000)  # lost the rest
    p.feed(C, b"GET /two HTTP/1.1\r\n\r\n", 3)
    recs = p.feed(S, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 4)
    assert [(r.attributes["url.path"], r.attributes["http.response.status_code"]) for r in recs] == [("/two", 404)]


def test_response_until_close_and_unanswered_request_on_close():
    p = Http1Parser()
    p.feed(C, b"GET /stream HTTP/1.0\r\n\r\n", 1)
    assert p.feed(S, b"HTTP/1.0 200 OK\r\n\r\nbody without length", 2) == []
    recs = p.close(9)
    assert [(r.attributes["http.response.status_code"], r.end_ns) for r in recs] == [(200, 9)]
    p = Http1Parser()
    p.feed(C, b"GET /dead HTTP/1.1\r\n\r\n", 1)
    recs = p.close(5)
    assert recs[0].status == "ERROR" and recs[0].attributes["error.type"] == "no_response"


def test_garbage_and_hostile_bytes_never_raise_and_stay_bounded():
    rng = random.Random(7)
    p = Http1Parser()
    for i in range(2000):
        data = os.urandom(rng.randint(0, 300)) if i % 3 else rng.choice([
            b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + b"A" * 70000, b"HTTP/1.1 99999999999 X\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n",
            b"GET /\x00\xff HTTP/1.1\r\nbad header line\r\n\r\n"])
        p.feed(rng.choice([C, S]), data, i, len(data) + rng.choice([0, 0, 10, 100000]))
    assert sum(p.stats.values()) > 0
    assert len(p._pending) <= 1024
    assert all(len(d.buf) <= 70000 + 300 for d in p._dirs.values())


def test_content_length_that_is_not_a_plain_number_is_a_bad_head_whole_or_split():
    # RFC 9110 §8.6: digits only; thousands of digits must not reach int() (it raises on them)
    for value in (b"-5", b"+5", b"5_0", b"9" * 5000):
        for split in (False, True):
            p = Http1Parser()
            p.feed(C, b"GET / HTTP/1.1\r\n\r\n", 1)
            msg = b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n"
            chunks = [msg[:5], msg[5:]] if split else [msg]
            assert [r for c in chunks for r in p.feed(S, c, 2)] == []
            assert p.stats["bad_head"] == 1, (value[:8], split, p.stats)


def test_detect_and_route():
    assert detect(b"GET / HTTP/1.1") == C and detect(b"HTTP/1.1 200 OK\r\n") == S
    assert detect(b"GETS / HTTP/1.1") is None and detect(b"\x16\x03\x01\x00\xa5") is None
    assert route_of("/users/42/orders/9f86d081884c7d65") == "/users/{id}/orders/{id}"
    assert route_of("/api/v1/items") == "/api/v1/items"
    assert route_of("/api/products/SKU-000123") == "/api/products/{id}"
    assert route_of("/page2/v10/top-5") == "/page2/v10/top-5"


def test_whole_message_fast_path_agrees_with_the_general_framing():
    """A chunk holding exactly one message takes a shortcut; the same bytes split so that the
    shortcut cannot apply must give identical records (and odd chunks must not take it)."""
    exchanges = [
        (b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nTraceparent: 00-ab-cd-01\r\n\r\n",
         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        (b"POST /p HTTP/1.0\r\ncontent-length: 3\r\n\r\nabc",
         b"HTTP/1.1 204 No Content\r\n\r\n"),
        (b"HEAD /h HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
        (b"GET /c HTTP/1.1\r\n\r\n",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
        (b"GET /d HTTP/1.1\r\n\r\n", b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno"),
        (b"PUT /e HTTP/1.1\r\nContent-Length: 4000\r\n\r\n" + b"x" * 100,  # truncated copy
         b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    ]

    def records(split: bool):
        p, out, ts = Http1Parser(), [], 0
        for req, resp in exchanges:
            for side, msg in ((C, req), (S, resp)):
                size = 4000 + req.index(b"\r\n\r\n") + 4 if msg is req and b"4000" in msg else len(msg)
                ts += 10
                if split:  # the head's end in a second chunk: general framing only
                    out += p.feed(side, msg[:5], ts, 5)
                    out += p.feed(side, msg[5:], ts, size - 5)
                else:
                    out += p.feed(side, msg, ts, size)
        return [(r.name, r.start_ns, r.end_ns, r.status, r.attributes) for r in out], p.stats

    fast, fast_stats = records(False)
    slow, slow_stats = records(True)
    assert len(fast) == len(exchanges)
    assert fast == slow and fast_stats == slow_stats


def test_status_line_without_a_space_before_the_code_is_no_crash():
    from capture.protocols.http1 import Http1Parser as _P
    for bad in (b"HTTP/1.1*200 OK\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 Not Found\r\n\r\n"):
        p = _P()
        p.feed(Side.CLIENT, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 1)
        p.feed(Side.SERVER, bad, 2)
        p.close(3)  # counted and dropped or closed, never raised
