"""Differential test of the HTTP/1 head scan: capture/_http1.c against its specification
capture/protocols/http1_head.py, on the recorded nginx + hey ring records and on hostile,
mutated and truncated heads; and the HTTP/1 parser built on either gives the same records."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.events import load
from bench.fuzz import chunkings, mutate, transcripts
from capture import abi
from capture.protocols import http1, http1_head
from tests.capture.test_hotpath_diff import spans

try:
    from capture import _http1
except ImportError:  # the test below says how to build it
    _http1 = None

RECORDING = Path(__file__).parent.parent / "fixtures" / "nginx_hey.events.gz"
EDGES = [
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, Chunked \r\n"
    b"User-Agent:  x y \r\ntraceparent: 00-ab\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 12345678901234567890\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 123456789012345678\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\ncontent-length: 7\r\n\r\n",
    b"HTTP/1.1 200\r\ncontent-length:\x0b12\x0c\r\n\r\n",
    b"HTTP/1.0 20\r\n\r\n", b"HTTP/1.1 2000 x\r\n\r\n", b"HTTP/1.x 200 OK\r\n\r\n", b"HTTP/1. 200 OK\r\n\r\n",
    b"HTTP/1.1 099\r\n\r\n", b"HTTP/1.1 1\r\n\r\n", b"HTTP/1.1 \r\n\r\n", b"HTTP/1.1\r\n\r\n",
    b"POST *x HTTP/1.0\r\n\r\n", b"GET  HTTP/1.1\r\n\r\n", b"GET h HTTP/1.1\r\n\r\n", b"GET -x HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.2\r\n\r\n", b"GET /a\nb HTTP/1.1\r\n\r\n", b"GETX / HTTP/1.1\r\n\r\n", b"CONNECT h:1 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1", b"\r\n\r\n", b"", b"\r\n\r\n\r\n", b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHOST: \xff\xfe\r\nUSER-AGENT:\r\n\r\n\r\nhost: later\r\n\r\n",
    b"GET / HTTP/1.1\r\ntransfer-encoding: chunke\r\ntransfer-encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nx: \r\nhost: \r\ntraceparent:\t00-1-2-01 \r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\nhost: after the head\r\n\r\n",
]


def payloads() -> list[bytes]:
    _header, records = load(str(RECORDING))
    return [r[abi.EVENT_SIZE:] for r in records]


def hostile(seed: int = 3, n: int = 6000) -> list[bytes]:
    """Heads edited byte by byte with the characters that steer the scan."""
    rng = random.Random(seed)
    alphabet = b"\r\n :\t\x0b\x0cHTTP/1.01GETHEADchunkedCHUNKEDcontent-lengthhostuser-agenttraceparent0123456789\xff"
    base = EDGES + payloads()[:40]
    out = []
    for _ in range(n):
        b = bytearray(rng.choice(base))
        for _ in range(rng.randint(0, 6)):
            i = rng.randint(0, len(b))
            op = rng.random()
            if op < 0.4:
                b[i:i] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            elif op < 0.7:
                del b[i:i + rng.randint(1, 5)]
            elif b:
                b[min(i, len(b) - 1)] = rng.randrange(256)
        out.append(bytes(b))
    return out


def test_the_extension_is_built():
    assert _http1 is not None, "capture._http1 is not built: python setup.py build_ext --inplace"


needs_c = pytest.mark.skipif(_http1 is None, reason="capture._http1 not built (test_the_extension_is_built fails)")


@needs_c
def test_c_and_python_scan_the_recorded_traffic_alike():
    datas = payloads()
    assert len(datas) > 1000
    heads = 0
    for data in datas:
        expected = http1_head.scan(data)
        heads += expected is not None
        assert _http1.scan(data) == expected, data[:200]
    assert heads > 1000  # the recording is keep-alive HTTP: most chunks hold a head


@needs_c
def test_c_and_python_scan_hostile_and_truncated_heads_alike():
    rng = random.Random(5)
    checked = 0
    for data in EDGES + hostile():
        cases = [(data,), (data, 0, len(data))]
        for cut in {0, len(data) // 2, len(data)}:  # every truncation point a copy may stop at
            cases.append((data[:cut],))
        if data:
            pos = rng.randint(0, len(data))
            cases += [(data, pos), (data, pos, rng.randint(pos, len(data)))]
        for args in cases:
            assert _http1.scan(*args) == http1_head.scan(*args), args
            checked += 1
    assert checked > 30000
    for data in EDGES[:8]:  # every prefix of real heads
        for cut in range(len(data) + 1):
            assert _http1.scan(data[:cut]) == http1_head.scan(data[:cut])


@needs_c
def test_c_scan_refuses_bounds_outside_the_data():
    for args in ((b"abc", 4), (b"abc", -1), (b"abc", 2, 1), (b"abc", 0, 4)):
        with pytest.raises(ValueError):
            _http1.scan(*args)
    assert _http1.scan(bytearray(b"GET / HTTP/1.1\r\n\r\n")) == http1_head.scan(b"GET / HTTP/1.1\r\n\r\n")


def records(chunks) -> tuple[list[tuple], dict]:
    p = http1.Http1Parser()
    out, ts = [], 0
    for side, data, size in chunks:
        ts += 1000
        out += p.feed(side, data, ts, size)
    out += p.close(ts + 1)
    return [(r.name, r.start_ns, r.end_ns, sorted(r.attributes.items()), r.status, r.status_message)
            for r in out], dict(p.stats)


@needs_c
def test_the_recorded_traffic_gives_the_same_spans_on_either_scan(monkeypatch):
    header, recs = load(str(RECORDING))
    batches = [recs[i:i + 256] for i in range(0, len(recs), 256)]
    monkeypatch.setattr(http1, "_scan", _http1.scan)
    with_c = spans(header, batches)
    monkeypatch.setattr(http1, "_scan", http1_head.scan)
    assert spans(header, batches) == with_c and len(with_c) > 1000


@needs_c
def test_the_parser_gives_the_same_records_on_either_scan(monkeypatch):
    """Mutated transcripts, chunked whole, byte by byte, at random and with gaps."""
    rng = random.Random(11)
    pool = transcripts().get("HTTP1", [])
    assert pool
    streams = [list(chunkings(rng, mutate(rng, rng.choice(pool), pool))) for _ in range(500)]
    monkeypatch.setattr(http1, "_scan", _http1.scan)
    with_c = [records(s) for s in streams]
    monkeypatch.setattr(http1, "_scan", http1_head.scan)
    assert [records(s) for s in streams] == with_c
    assert sum(len(r) for r, _ in with_c) > 300
