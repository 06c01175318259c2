"""Parsing cost is linear in bytes: N and 4N bytes of one large message, read in fixed-size chunks.

A parser that re-copies or re-parses its buffer per chunk is quadratic: 4x the bytes cost ~16x.
Times are CPU ratios within one test (best of three), never absolute figures.
"""
import struct
import time

import pytest

from capture.protocols.base import Side
from capture.protocols.mysql import MysqlParser
from capture.protocols.postgres import PostgresParser
from capture.protocols.redis import RedisParser
from capture.protocols.memcached import MemcachedParser
from capture.protocols.nats import NatsParser

C, S = Side.CLIENT, Side.SERVER


def pg_query(n):
    q = b"SELECT '" + b"x" * n + b"'\0"
    return [(C, b"Q" + struct.pack(">I", len(q) + 4) + q),
            (S, b"C" + struct.pack(">I", 13) + b"SELECT 1\0" + b"Z\0\0\0\x05I")]


def redis_reply(n):
    item = b"$100\r\n" + b"v" * 100 + b"\r\n"
    count = n // len(item)
    return [(C, b"*4\r\n$6\r\nLRANGE\r\n$1\r\nk\r\n$1\r\n0\r\n$2\r\n-1\r\n"),
            (S, b"*%d\r\n" % count + item * count)]


def mysql_rows(n):
    pkts, seq = [], 1
    def pkt(payload):
        nonlocal seq
        out = len(payload).to_bytes(3, "little") + bytes([seq % 256]) + payload
        seq += 1
        return out
    head = pkt(b"\x01") + pkt(b"\x03def\x00\x00\x00\x01a\x00\x0c\x21\x00\x00\x01\x00\x00\xfd\x00\x00\x00\x00\x00")
    row = pkt(b"\x64" + b"r" * 100)
    count = n // len(row)
    body = head + pkt(b"\xfe\x00\x00\x02\x00") + b"".join(pkt(b"\x64" + b"r" * 100) for _ in range(count)) \
        + pkt(b"\xfe\x00\x00\x02\x00")
    q = b"\x03SELECT a FROM t"
    return [(C, len(q).to_bytes(3, "little") + b"\x00" + q), (S, body)]


def memcached_multi(n):
    item = b"VALUE k 0 100\r\n" + b"v" * 100 + b"\r\n"
    count = n // len(item)
    return [(C, b"get " + b"k " * 10 + b"\r\n"), (S, item * count + b"END\r\n")]


def nats_big(n):
    return [(C, b"PUB big %d\r\n" % n + b"x" * n + b"\r\nPING\r\n")]


CASES = {"postgres": (PostgresParser, pg_query, 64 * 1024),
         "redis": (RedisParser, redis_reply, 16 * 1024),
         "mysql": (MysqlParser, mysql_rows, 16 * 1024),
         "memcached": (MemcachedParser, memcached_multi, 16 * 1024),
         "nats": (NatsParser, nats_big, 16 * 1024)}


def cost(cls, messages, chunk):
    best = float("inf")
    for _ in range(3):
        p = cls()
        t = time.process_time()
        recs = 0
        for side, data in messages:
            for i in range(0, len(data), chunk):
                recs += len(p.feed(side, data[i:i + chunk], i + 1))
        best = min(best, time.process_time() - t)
    return best, recs


@pytest.mark.parametrize("name", CASES)
def test_cpu_is_linear_in_bytes(name):
    cls, make, chunk = CASES[name]
    n = 1 << 20
    small, recs_small = cost(cls, make(n), chunk)
    large, recs_large = cost(cls, make(4 * n), chunk)
    assert recs_small == recs_large  # the same exchange, only bigger
    # linear: ~4x; quadratic: ~16x. 8x leaves room for a noisy machine and fixed costs.
    assert large <= 8 * max(small, 0.002), (name, small, large)
