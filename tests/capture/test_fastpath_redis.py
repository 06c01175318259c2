"""Differential test of the compiled path's Redis exchanges (capture/_fastpath.c) against the Python
path (capture/protocols/redis.py is the specification): the same ring records through
ConnTracker.feed with and without the C table give the same spans in the same order (ids masked)
— transcripts of hits, misses, nil replies, errors, pipelines answered over several reads, MULTI/EXEC,
RESP3, pub/sub, pushes, inline commands, big values cut across chunks and by the capture, gaps,
credentials; the same streams cut at random; recorded redis-benchmark and redis-py traffic;
hostile records — and secrets are scrubbed on both paths alike."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.events import load
from capture import abi, fastpath, scrub
from capture.live import BATCH
from capture.pairing import pair
from tests.capture.test_fastpath import hostile_rounds, same
from tests.capture.test_pairing import Conn

FIXTURES = Path(__file__).parent / "fixtures"
E, I = abi.Direction.EGRESS, abi.Direction.INGRESS
SECRETS = ("hunter2", "s3cr3t-pw", "masterpw", "sentinelpw", "helloPW", "migratepw", "setuserpw")

pytestmark = pytest.mark.skipif(fastpath._fastpath is None, reason="capture._fastpath not built")


def cmd(*args: bytes | str) -> bytes:
    args = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def bulk(v: bytes | None) -> bytes:
    return b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v)


class RedisConn(Conn):
    """Records of one Redis connection (client or server side), unpaired."""

    proto = abi.Proto.REDIS

    def data(self, direction: int, payload: bytes, ts: int, total: int | None = None, tid: int = 9) -> bytes:
        raw = super().data(direction, payload, ts, total, tid)
        return raw[:abi.Event.proto.offset] + bytes([self.proto]) + raw[abi.Event.proto.offset + 1:]

    def close(self, ts: int) -> bytes:
        raw = super().close(ts)
        return raw[:abi.Event.proto.offset] + bytes([self.proto]) + raw[abi.Event.proto.offset + 1:]


# (request bytes, [reply writes]) in order: each is one exchange of a connection
EXCHANGES = [
    (cmd("SET", "k1", "v1"), [b"+OK\r\n"]),
    (cmd("GET", "k1"), [bulk(b"v1")]),
    (cmd("get", "missing"), [bulk(None)]),  # a miss: nil is not an error
    (cmd("LPOP", "none", "2"), [b"*-1\r\n"]),
    (cmd("INCR", "k1"), [b"-ERR value is not an integer or out of range\r\n"]),
    (cmd("LPUSH", "k1", "x"), [b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"]),
    (cmd("FCALL", "f", "0"), [b"!21\r\nSYNTAX invalid syntax\r\n"]),  # RESP3 blob error
    (cmd("SET", "k2", "a b c", "EX", "10"), [b"+OK\r\n"]),
    (cmd("MSET", "a", "1", "b", "2"), [b"+OK\r\n"]),
    (cmd("set", "k", ""), [b"+OK\r\n"]),  # scrubbing cuts words of the text, not arguments
    (cmd("SET", "a b", "v"), [b"+OK\r\n"]),
    (cmd("SET", "k"), [b"-ERR wrong number of arguments for 'set' command\r\n"]),
    (cmd("APPEND", "k", " x "), [b":3\r\n"]),
    (cmd("HSET", "h", "f", "v", "g", "w"), [b":2\r\n"]),
    (cmd("HGETALL", "h"), [b"%2\r\n+f\r\n+v\r\n+g\r\n+w\r\n"]),  # RESP3 map
    (cmd("SMEMBERS", "s"), [b"~2\r\n+a\r\n+b\r\n"]),
    (cmd("ZSCORE", "z", "m"), [b",3.5\r\n"]),
    (cmd("EXISTS", "k"), [b"#t\r\n"]),
    (cmd("OBJECT", "encoding", "k1"), [b"_\r\n"]),
    (cmd("CLIENT", "setname", "conn-a"), [b"+OK\r\n"]),
    (cmd("AUTH", "hunter2"), [b"+OK\r\n"]),
    (cmd("AUTH", "default", "s3cr3t-pw"), [b"-WRONGPASS invalid username-password pair\r\n"]),
    (cmd("CONFIG", "SET", "masterauth", "masterpw"), [b"+OK\r\n"]),
    (cmd("SENTINEL", "SET", "mymaster", "auth-pass", "sentinelpw"), [b"+OK\r\n"]),
    (cmd("ACL", "SETUSER", "bob", "on", ">setuserpw", "~*"), [b"+OK\r\n"]),
    (cmd("HELLO", "3", "AUTH", "default", "helloPW"), [b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n"]),
    (cmd("MIGRATE", "h", "6379", "k", "0", "100", "AUTH", "migratepw"), [b"+NOKEY\r\n"]),
    (cmd("PUBLISH", "news", "hello"), [b":1\r\n"]),
    (cmd("MULTI"), [b"+OK\r\n"]),
    (cmd("INCR", "c"), [b"+QUEUED\r\n"]),
    (cmd("GET", "c"), [b"+QUEUED\r\n"]),
    (cmd("EXEC"), [b"*2\r\n:1\r\n$1\r\n1\r\n"]),
    (cmd("LRANGE", "l", "0", "-1"), [b"*3\r\n$7\r\nmessage\r\n$1\r\nn\r\n$2\r\nhi\r\n"]),  # looks like a push
    (cmd("GET", "caf\xc3\xa9".encode("latin-1")), [bulk(b"x")]),  # non-ASCII: Python describes it
    (cmd("GET", "k\xff"), [bulk(b"y")]),
    (cmd("SET", "big", b"z" * 9000), [b"+OK\r\n"]),
    (cmd("GET", "big"), [b"$9000\r\n" + b"z" * 4000, b"z" * 5000 + b"\r\n"]),  # a reply over two reads
    (cmd("ECHO", "x" * 3000), [bulk(b"x" * 3000)]),
    (cmd("DEL", *[f"k{i}" for i in range(1100)]), [b":0\r\n"]),  # more arguments than the reader keeps
    (b"PING\r\n", [b"+PONG\r\n"]),  # an inline command
    (cmd("CLIENT", "TRACKING", "on"), [b"+OK\r\n"]),
    (cmd("GET", "t"), [b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nt\r\n" + bulk(b"1")]),  # a push first
    (cmd("SUBSCRIBE", "news", "alerts"), [b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
                                          b"*3\r\n$9\r\nsubscribe\r\n$6\r\nalerts\r\n:2\r\n"]),
    (b"", [b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"]),
    (cmd("UNSUBSCRIBE", "alerts"), [b"*3\r\n$11\r\nunsubscribe\r\n$6\r\nalerts\r\n:1\r\n"]),
    (cmd("UNSUBSCRIBE", "news"), [b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"]),
    (cmd("GET", "after"), [bulk(b"1")]),
    (cmd("DEBUG", "x"), [b"|1\r\n+key\r\n+val\r\n+OK\r\n"]),  # an attribute before the reply
]


def pipelined(n: int, rnd: random.Random) -> tuple[bytes, list[bytes]]:
    """redis-benchmark -P n: n commands in one write, their replies in one write (cut in reads)."""
    keys = [f"key:{rnd.randrange(10**6):012d}" for _ in range(n)]
    reqs = b"".join(cmd("SET", k, "xxx") if i % 2 else cmd("GET", k) for i, k in enumerate(keys))
    reps = b"".join(b"+OK\r\n" if i % 2 else bulk(b"xxx" if rnd.random() < 0.7 else None) for i in range(n))
    return reqs, [reps]


def cut(data: bytes, rnd: random.Random, pieces: int) -> list[bytes]:
    if pieces <= 1 or len(data) < 2:
        return [data]
    at = sorted(rnd.sample(range(1, len(data)), min(pieces - 1, len(data) - 1)))
    return [data[a:b] for a, b in zip([0] + at, at + [len(data)])]


def records(exchanges, rnd: random.Random, chunking: float = 0.0, conns: int = 2, gaps: bool = False,
            kind: type = RedisConn):
    """Client and server sides of `conns` connections each running `exchanges`, interleaved in
    ring order; with `chunking`, that share of writes cut at random places; the ends closed."""
    out, t = [], 1000
    sides = []
    for k in range(conns):
        sides.append((kind(100 + 2 * k, abi.Role.CLIENT, 41000 + k, 6379), E, I))
        sides.append((kind(101 + 2 * k, abi.Role.SERVER, 6379, 41000 + k), I, E))
    cursor = {id(s[0]): 0 for s in sides}
    while any(cursor[id(c)] < len(exchanges) for c, _, _ in sides):
        c, req_dir, resp_dir = rnd.choice([s for s in sides if cursor[id(s[0])] < len(exchanges)])
        req, replies = exchanges[cursor[id(c)]]
        cursor[id(c)] += 1
        for direction, payloads in ((req_dir, [req] if req else []), (resp_dir, replies)):
            for payload in payloads:
                pieces = cut(payload, rnd, rnd.randint(2, 4)) if rnd.random() < chunking else [payload]
                for piece in pieces:
                    t += rnd.randint(1, 50)
                    if gaps and rnd.random() < 0.01:
                        c.pos[direction] += 7  # records the ring dropped
                    copied = piece if rnd.random() > 0.02 else piece[:len(piece) // 2]  # the capture's prefix
                    out.append(c.data(direction, copied, t, total=len(piece), tid=rnd.choice([9, 9, 10])))
    for c, _, _ in sides:
        t += 10
        out.append(c.close(t))
    return out


@pytest.mark.parametrize("batch", [1, 3, BATCH])
@pytest.mark.parametrize("kernel_pairing", [False, True])
def test_every_redis_case_gives_the_same_spans(batch, kernel_pairing):
    rnd = random.Random(batch)
    recs = records(EXCHANGES + [pipelined(16, rnd) for _ in range(20)], rnd)
    spans, counts = same(list(pair(recs)) if kernel_pairing else recs, batch=batch)
    names = [json.loads(s)["name"] for s in spans]
    assert len(spans) >= 0.8 * 4 * (len(EXCHANGES) + 20 * 16), len(spans)  # a few copies cut short lose some
    assert {"GET", "SET", "CONFIG SET", "ACL SETUSER", "EXEC", "receive news"} <= set(names)
    assert counts["spans"] >= 0.6 * len(spans) and counts["handed_over"] >= 20, counts
    kinds = {(json.loads(s)["name"], json.loads(s)["status_code"]) for s in spans}
    assert ("GET", "UNSET") in kinds and ("INCR", "ERROR") in kinds and ("LPOP", "UNSET") in kinds


@pytest.mark.parametrize("seed", range(6))
def test_random_chunking_gaps_and_truncation_give_the_same_spans(seed):
    rnd = random.Random(seed)
    recs = records(EXCHANGES + [pipelined(rnd.choice([1, 4, 16]), rnd) for _ in range(30)], rnd, chunking=0.3,
                   conns=3, gaps=seed % 2 == 1)
    spans, counts = same(recs, batch=rnd.choice([1, 5, BATCH]))
    assert len(spans) > 300 and counts["spans"] > 100, counts
    same(list(pair(recs)), batch=rnd.choice([1, 5, BATCH]))


def test_hostile_redis_records_never_crash_and_give_the_same_spans():
    rnd = random.Random(2027)
    base = records(EXCHANGES + [pipelined(16, rnd) for _ in range(10)], rnd, conns=1)
    assert hostile_rounds(base, rnd) > 500


def test_credentials_are_scrubbed_on_the_c_path_as_on_the_python_path():
    rnd = random.Random(3)
    recs = records(EXCHANGES[:30], rnd, conns=1)
    spans, counts = same(recs)
    text = "".join(spans)
    assert counts["spans"] >= 40
    for secret in SECRETS + ("v1", "conn-a"):  # values never kept, credentials never
        assert secret not in text, secret
    texts = {json.loads(s)["attributes"]["db.query.text"] for s in spans}
    assert {"SET k1 ?", "SET k2 ?", "AUTH ?", "CONFIG SET ? ?", "ACL SETUSER bob ?",
            "SENTINEL SET mymaster ?", "MIGRATE ?", "PUBLISH news ?"} <= texts, texts
    saved = scrub._config
    scrub.configure(scrub.ScrubConfig(enabled=False))
    try:
        unscrubbed, _ = same(recs)  # off means off on both paths (AUTH's arguments stay hidden by the parser)
    finally:
        scrub.configure(saved)
    assert "conn-a" in "".join(unscrubbed) and "hunter2" not in "".join(unscrubbed)


@pytest.mark.parametrize("name", ["redis_bench", "redis_bench_pair"])
def test_recorded_redis_traffic_gives_the_same_spans(name):
    """redis-benchmark (-P 1 and 16, GET/SET with misses) and redis-py (pipelines, MULTI/EXEC,
    errors, a 100 kB value, pub/sub) under a live capture (python -m bench.events record --redis)."""
    header, recs = load(str(FIXTURES / f"{name}.events.gz"))
    spans, counts = same(recs, header)
    assert len(spans) >= 0.95 * header["requests"] * 2, (len(spans), header["requests"])
    assert counts["spans"] >= 0.9 * len(spans), counts
    assert counts["connections"] == 0 and counts["exchanges_waiting"] == 0
