"""Differential test of the compiled path's Memcached text exchanges (capture/_fastpath.c) against
the Python path (capture/protocols/memcached.py is the specification): the same ring records
through ConnTracker.feed with and without the C table give the same spans in the same order (ids
masked) — hits, misses, multi-gets, storage with values, noreply, counters, errors, stats, quit,
meta and binary commands (handed back; a binary connection stays with Python), values cut across
reads and by the capture, gaps, the same streams cut at random and paired as the kernel would,
hostile records."""
from __future__ import annotations

import json
import random

import pytest

from capture import abi, fastpath
from capture.live import BATCH
from capture.pairing import pair
from tests.capture.test_fastpath import hostile_rounds, same
from tests.capture.test_fastpath_redis import RedisConn, records

pytestmark = pytest.mark.skipif(fastpath._fastpath is None, reason="capture._fastpath not built")


class MemcachedConn(RedisConn):
    proto = abi.Proto.MEMCACHED


def binary(magic: int, op: int, key: bytes, opaque: int, status: int = 0, value: bytes = b"") -> bytes:
    return bytes([magic, op]) + len(key).to_bytes(2, "big") + b"\0\0" + status.to_bytes(2, "big") + \
        (len(key) + len(value)).to_bytes(4, "big") + opaque.to_bytes(4, "big") + bytes(8) + key + value


# (request bytes, [reply writes]): one exchange each, in order on every connection
EXCHANGES = [
    (b"set k1 0 0 5\r\nhello\r\n", [b"STORED\r\n"]),
    (b"get k1\r\n", [b"VALUE k1 0 5\r\nhello\r\nEND\r\n"]),
    (b"get missing\r\n", [b"END\r\n"]),  # a miss
    (b"get k1 k2 k3\r\n", [b"VALUE k1 0 5\r\nhello\r\nVALUE k3 0 2\r\nhi\r\nEND\r\n"]),
    (b"gets k1\r\n", [b"VALUE k1 0 5 42\r\nhello\r\nEND\r\n"]),
    (b"gat 100 k1 k2\r\n", [b"VALUE k1 0 5\r\nhello\r\nEND\r\n"]),
    (b"add k1 0 0 1\r\nx\r\n", [b"NOT_STORED\r\n"]),
    (b"cas k1 0 0 1 41\r\ny\r\n", [b"EXISTS\r\n"]),
    (b"append k1 0 0 3\r\nabc\r\n", [b"STORED\r\n"]),
    (b"delete k9\r\n", [b"NOT_FOUND\r\n"]),
    (b"incr n 5\r\n", [b"15\r\n"]),
    (b"incr k1 1\r\n", [b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"]),
    (b"decr n 1\r\n", [b"14\r\n"]),
    (b"touch k1 10\r\n", [b"TOUCHED\r\n"]),
    (b"set k2 0 0 2 noreply\r\nab\r\n", []),  # no reply comes
    (b"delete k2 noreply\r\n", []),
    (b"flush_all\r\n", [b"OK\r\n"]),
    (b"stats\r\n", [b"STAT pid 1\r\nSTAT uptime 5\r\n", b"STAT version 1.6\r\nEND\r\n"]),  # over two reads
    (b"version\r\n", [b"VERSION 1.6.21\r\n"]),
    (b"verbosity 1\r\n", [b"OK\r\n"]),
    (b"get caf\xc3\xa9 k\xff\r\n", [b"END\r\n"]),
    (b"set big 0 0 9000\r\n" + b"z" * 9000 + b"\r\n", [b"STORED\r\n"]),
    (b"get big\r\n", [b"VALUE big 0 9000\r\n" + b"z" * 5000, b"z" * 4000 + b"\r\nEND\r\n"]),  # over two reads
    (b"get " + b" ".join(b"k%d" % i for i in range(300)) + b"\r\n", [b"END\r\n"]),  # many keys
    (b"bogus\r\n", [b"ERROR\r\n"]),
    (b"set e 0 0 1\r\nx\r\n", [b"SERVER_ERROR out of memory storing object\r\n"]),
    (b"mn\r\n", [b"MN\r\n"]),
    (b"ms k5 2 T0\r\nhi\r\n", [b"HD\r\n"]),
    (b"mg k5 v\r\n", [b"VA 2\r\nhi\r\n"]),  # a meta value line: Python loses sync, then resyncs
    (b"get k1\r\n", [b"VALUE k1 0 5\r\nhello\r\nEND\r\n"]),
]
# the binary protocol: Python's, and the connection stays there (it would be handed back at every message)
BINARY = [(binary(0x80, 0x00, b"bk", 7), [binary(0x81, 0x00, b"", 7, value=b"v")]),
          (b"get k1\r\n", [b"VALUE k1 0 5\r\nhello\r\nEND\r\n"])]


def pipelined(n: int, rnd: random.Random) -> tuple[bytes, list[bytes]]:
    """n gets and sets in one write, their replies in one."""
    reqs, reps = b"", b""
    for i in range(n):
        key = b"key:%06d" % rnd.randrange(10**6)
        if i % 2:
            reqs += b"set %s 0 0 3\r\nxxx\r\n" % key
            reps += b"STORED\r\n"
        else:
            reqs += b"get %s\r\n" % key
            reps += b"VALUE %s 0 3\r\nxxx\r\nEND\r\n" % key if rnd.random() < 0.7 else b"END\r\n"
    return reqs, [reps]


def spans_of(recs, batch):
    spans, counts = same(recs, batch=batch)
    return spans, counts, [json.loads(s) for s in spans]


@pytest.mark.parametrize("batch", [1, 3, BATCH])
@pytest.mark.parametrize("kernel_pairing", [False, True])
def test_every_memcached_case_gives_the_same_spans(batch, kernel_pairing):
    rnd = random.Random(batch)
    recs = records(EXCHANGES + [pipelined(rnd.choice([1, 16]), rnd) for _ in range(20)] + BINARY, rnd,
                   kind=MemcachedConn)
    spans, counts, parsed = spans_of(list(pair(recs)) if kernel_pairing else recs, batch)
    assert len(spans) >= 0.8 * 4 * len(EXCHANGES) and counts["spans"] >= 0.5 * len(spans), counts
    assert counts["handed_over"] >= 10, counts
    seen = {(s["name"], s["attributes"].get("db.response.status_code"), s["attributes"].get("memcached.hit"),
             s["status_code"]) for s in parsed}
    assert {("get", "END", True, "UNSET"), ("get", "END", False, "UNSET"), ("set", "noreply", None, "UNSET"),
            ("incr", "CLIENT_ERROR", None, "ERROR"), ("stats", "END", None, "UNSET")} <= seen, seen


@pytest.mark.parametrize("seed", range(6))
def test_random_chunking_gaps_and_truncation_give_the_same_spans(seed):
    rnd = random.Random(seed)
    recs = records(EXCHANGES + [pipelined(rnd.choice([1, 4, 16]), rnd) for _ in range(30)] + BINARY, rnd,
                   chunking=0.3, conns=3, gaps=seed % 2 == 1, kind=MemcachedConn)
    spans, counts = same(recs, batch=rnd.choice([1, 5, BATCH]))
    assert len(spans) > 200 and counts["spans"] > 50, counts
    same(list(pair(recs)), batch=rnd.choice([1, 5, BATCH]))


def test_hostile_memcached_records_never_crash_and_give_the_same_spans():
    rnd = random.Random(2028)
    base = records(EXCHANGES + [pipelined(16, rnd) for _ in range(10)] + BINARY, rnd, conns=1, kind=MemcachedConn)
    assert hostile_rounds(base, rnd) > 300
