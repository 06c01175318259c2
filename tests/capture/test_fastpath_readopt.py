"""Ring-buffer drops on connections the compiled path (capture/_fastpath.c) holds: whole records
vanish at random points, as when the ring is full. The C path hands the connection back at the
gap and takes it again once its Python parser is idle (PostgreSQL: after ReadyForQuery; Redis,
Memcached: nothing waiting, nothing buffered; HTTP/1: between exchanges), and both paths give the
same spans (ids masked), unpaired and paired in the kernel, for every batch size."""
from __future__ import annotations

import json
import random
import struct

import pytest

from capture import abi, fastpath
from capture.live import BATCH
from capture.pairing import pair
from capture.protocols.base import Side
from capture.protocols.postgres import PostgresParser
from tests.capture.test_fastpath import run
from tests.capture.test_fastpath_memcached import MemcachedConn
from tests.capture.test_fastpath_postgres import AUTH_OK, PostgresConn, msg, q
from tests.capture.test_fastpath_redis import RedisConn, bulk, cmd, records
from tests.capture.test_pairing import Conn, get, ok

pytestmark = pytest.mark.skipif(fastpath._fastpath is None, reason="capture._fastpath not built")


def pg_rows(n: int) -> bytes:
    return (msg(b"T", b"\0\x01abalance\0" + bytes(18)) + msg(b"D", b"\0\x01\0\0\0\x01" + b"7") * n +
            msg(b"C", b"SELECT %d\0" % n) + msg(b"Z", b"I"))


STARTUP_BODY = b"user\0bob\0database\0bank\0\0"
STARTUP = struct.pack(">II", 8 + len(STARTUP_BODY), 196608) + STARTUP_BODY


def pg_exchanges(n: int) -> list:
    """pgbench -S's shape; each query's table says how many rows its reply has, so a span that
    paired a query with another query's reply shows (db.response.returned_rows != the table's)."""
    return [(STARTUP, [AUTH_OK])] + [
        (q(f"SELECT abalance FROM rows_{1 + i % 5} WHERE aid > {i}"), [pg_rows(1 + i % 5)]) for i in range(n)]


def redis_exchanges(n: int) -> list:
    return [(cmd("SET", f"k{i}", "v") if i % 2 else cmd("GET", f"k{i}"), [b"+OK\r\n" if i % 2 else bulk(b"v")])
            for i in range(n)]


def memcached_exchanges(n: int) -> list:
    return [(b"get k%d\r\n" % i, [b"VALUE k%d 0 1\r\nx\r\nEND\r\n" % i if i % 3 else b"END\r\n"]) for i in range(n)]


class HttpConn(Conn):
    proto = abi.Proto.HTTP1


def http_exchanges(n: int) -> list:
    return [(get(f"/item/{i}"), [ok(200 if i % 4 else 404, b"x" * (i % 7))]) for i in range(n)]


CASES = {"postgres": (pg_exchanges, PostgresConn), "redis": (redis_exchanges, RedisConn),
         "memcached": (memcached_exchanges, MemcachedConn), "http1": (http_exchanges, HttpConn)}


def dropped(recs: list[bytes], rnd: random.Random, share: float) -> list[bytes]:
    """`recs` without a random `share` of its data records (the first of each connection and the
    closes kept: what the ring lost, not what opened or ended a connection)."""
    seen, out = set(), []
    for raw in recs:
        conn_id = int.from_bytes(raw[8:16], "little")
        if raw[abi.Event.kind.offset] in (abi.EventKind.DATA, abi.EventKind.PAIR) and conn_id in seen and \
                rnd.random() < share:
            continue
        seen.add(conn_id)
        out.append(raw)
    return out


def both(recs: list[bytes], batch: int):
    python, _ = run(recs, False, batch=batch)
    compiled, tracker = run(recs, True, batch=batch)
    assert compiled == python
    return python, tracker


@pytest.mark.parametrize("kernel_pairing", [False, True])
@pytest.mark.parametrize("protocol", sorted(CASES))
def test_drops_at_random_points_give_the_same_spans_and_the_c_path_takes_the_connection_again(protocol,
                                                                                               kernel_pairing):
    make, kind = CASES[protocol]
    rnd = random.Random(f"{protocol}{kernel_pairing}")
    recs = records(make(600), rnd, conns=2, kind=kind)
    if kernel_pairing:
        recs = list(pair(recs))
    lossy = dropped(recs, rnd, 0.02)
    assert len(recs) - len(lossy) >= 20
    spans, tracker = both(lossy, rnd.choice([1, 7, BATCH]))
    counts, stats = tracker.fast.counts(), tracker.stats
    assert stats["gaps"] >= 10, stats
    # handed back at the gaps, and held again after: the C path still makes most of the spans
    assert stats["fastpath_readoptions"] >= counts["released"] - 4 > 0, (counts, dict(stats))
    assert counts["spans"] >= 0.85 * len(spans), counts
    assert len(spans) >= 0.85 * 4 * 600


@pytest.mark.parametrize("seed", range(4))
def test_every_batch_size_and_drop_rate_gives_the_same_spans(seed):
    rnd = random.Random(seed)
    for protocol in sorted(CASES):
        make, kind = CASES[protocol]
        recs = records(make(150), rnd, chunking=0.2, conns=3, kind=kind)
        if seed % 2:
            recs = list(pair(recs))
        both(dropped(recs, rnd, rnd.choice([0.005, 0.05, 0.2])), rnd.choice([1, 2, 5, BATCH]))


def test_a_postgres_reply_lost_in_the_ring_pairs_no_query_with_another_querys_reply():
    rnd = random.Random(11)
    recs = records(pg_exchanges(400), rnd, conns=1, kind=PostgresConn)
    spans, tracker = both(dropped(recs, rnd, 0.03), BATCH)
    queries = [json.loads(s) for s in spans if json.loads(s)["name"].startswith("SELECT rows_")]
    assert len(queries) >= 0.8 * 2 * 400 and tracker.stats["gaps"] >= 5
    for s in queries:  # an answer the capture cut (postgres.py Rule 5) has no row count
        assert s["attributes"].get("db.response.returned_rows") in (None, int(s["name"].rsplit("_", 1)[1])), s
    for kind in ("CLIENT", "SERVER"):  # one connection: no span reaches into the next exchange
        side = sorted((s["start_time_unix_nano"], s["end_time_unix_nano"]) for s in queries if s["kind"] == kind)
        assert all(end <= later for (_, end), (later, _) in zip(side, side[1:]))


def test_lost_postgres_bytes_drop_the_waiting_query_and_resync_at_the_next_message():
    p = PostgresParser()
    p.feed(Side.CLIENT, STARTUP, 1)
    p.feed(Side.SERVER, AUTH_OK, 2)
    assert p.idle()
    p.feed(Side.CLIENT, q("SELECT 1 LIMIT 1"), 3)
    p.feed(Side.SERVER, b"", 4, len(pg_rows(1)))  # its reply, lost
    assert not p.idle() and p.stats["lost_bytes"] == 1
    p.feed(Side.CLIENT, q("SELECT 2 LIMIT 2"), 5)
    out = p.feed(Side.SERVER, pg_rows(2), 6)
    assert [(r.attributes["db.query.text"], r.attributes["db.response.returned_rows"]) for r in out] == \
        [("SELECT 2 LIMIT 2", 2)]
    assert p.idle()
