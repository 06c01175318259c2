"""Differential test of the compiled path's PostgreSQL simple queries (capture/_fastpath.c) against
the Python path (capture/protocols/postgres.py is the specification): the same ring records through
ConnTracker.feed with and without the C table give the same spans in the same order (ids masked) —
the startup (Python's), queries with rows, tags, errors, notices, several statements in one Query,
pipelined queries, credentials in SQL, COPY and the extended protocol (handed back), replies
cut across reads and by the capture, answers missed without a gap, gaps, random chunking, kernel
pairing, hostile records."""
from __future__ import annotations

import json
import random
import struct

import pytest

from capture import abi, fastpath
from capture.live import BATCH
from capture.pairing import pair
from tests.capture.test_fastpath import hostile_rounds, same
from tests.capture.test_fastpath_redis import RedisConn, records

pytestmark = pytest.mark.skipif(fastpath._fastpath is None, reason="capture._fastpath not built")


class PostgresConn(RedisConn):
    proto = abi.Proto.POSTGRES


def msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack(">I", len(body) + 4) + body


def q(sql: str | bytes) -> bytes:
    return msg(b"Q", (sql.encode() if isinstance(sql, str) else sql) + b"\0")


def rows(n: int, tag: bytes, extra: bytes = b"") -> bytes:
    return (msg(b"T", b"\0\x01abalance\0" + bytes(18)) + msg(b"D", b"\0\x01\0\0\0\x01" + b"7") * n + extra +
            msg(b"C", tag + b"\0") + msg(b"Z", b"I"))


def error(code: bytes, text: bytes) -> bytes:
    return msg(b"E", b"SERROR\0C" + code + b"\0M" + text + b"\0\0") + msg(b"Z", b"I")


STARTUP = struct.pack(">II", 8 + 22, 196608) + b"user\0bob\0database\0bank\0\0"
AUTH_OK = msg(b"R", b"\0\0\0\0") + msg(b"S", b"TimeZone\0UTC\0") + msg(b"K", bytes(8)) + msg(b"Z", b"I")
EXCHANGES = [
    (STARTUP, [AUTH_OK]),
    (q("SELECT abalance FROM pgbench_accounts WHERE aid = 42;"), [rows(1, b"SELECT 1")]),
    (q("select * from t"), [rows(3, b"SELECT 3")]),
    (q("UPDATE accounts SET balance = 0 WHERE id = 9"), [msg(b"C", b"UPDATE 1\0") + msg(b"Z", b"T")]),
    (q("INSERT INTO log VALUES (1)"), [msg(b"C", b"INSERT 0 1\0") + msg(b"Z", b"I")]),
    (q("BEGIN"), [msg(b"C", b"BEGIN\0") + msg(b"Z", b"T")]),
    (q("SELECT * FROM missing"), [error(b"42P01", b'relation "missing" does not exist')]),
    (q("SELECT 1/x FROM t"), [msg(b"T", b"\0\0") + msg(b"D", b"\0\0") * 2 + error(b"22012", b"division by zero")]),
    (q("SELECT 1; SELECT 2"), [rows(1, b"SELECT 1") [:-6] + rows(1, b"SELECT 1")]),  # two statements, one span
    (q(""), [msg(b"I", b"") + msg(b"Z", b"I")]),  # an empty query
    (q("VACUUM"), [msg(b"N", b"SNOTICE\0Mhi\0\0") + msg(b"C", b"VACUUM\0") + msg(b"Z", b"I")]),
    (q("ALTER USER bob PASSWORD 'hunter2'"), [msg(b"C", b"ALTER ROLE\0") + msg(b"Z", b"I")]),
    (q("CREATE USER eve PASSWORD 'pw'"), [error(b"42710", b"role \"eve\" already exists")]),
    (q("SELECT 'caf\xc3\xa9', 'k\xff'".encode("latin-1")), [rows(1, b"SELECT 1")]),
    (q("SELECT 1") + q("SELECT 2"), [rows(1, b"SELECT 1"), rows(1, b"SELECT 1")]),  # pipelined, two reads
    (q("SELECT big FROM t"), [rows(1, b"SELECT 1")[:30], rows(1, b"SELECT 1")[30:]]),  # a reply over two reads
    (q("SELECT x FROM " + "y" * 5000), [rows(2, b"SELECT 2")]),  # a query longer than the text kept
    (q("SELECT * FROM w"), [rows(1, b"SELECT \xff5", msg(b"S", b"a\0b\0"))]),
    (q("COPY t FROM STDIN"), [msg(b"G", b"\0\0\0")]),
    (msg(b"d", b"1\t2\n") + msg(b"c", b""), [msg(b"C", b"COPY 1\0") + msg(b"Z", b"I")]),
    (q("SELECT after FROM copy"), [rows(1, b"SELECT 1")]),
    # answers the capture missed without a gap in the stream (postgres.py Rule 4): the next Query
    # ends a query at the last answer message seen, or drops one with none seen
    (q("SELECT unready FROM t"), [rows(2, b"SELECT 2")[:-6]]),
    (q("SELECT unanswered FROM t"), []),
    (q("SELECT answered FROM t"), [rows(4, b"SELECT 4")]),
]


# the extended protocol: Python's, and the connection stays there (it would be handed back at every message)
EXTENDED = [(msg(b"P", b"\0SELECT $1\0\0\0") + msg(b"B", b"\0\0" + bytes(6)) + msg(b"E", b"\0\0\0\0\0") +
             msg(b"S", b""), [msg(b"1", b"") + msg(b"2", b"") + rows(1, b"SELECT 1")]),
            (q("SELECT simple FROM again"), [rows(1, b"SELECT 1")])]


def pipelined(n: int, rnd: random.Random) -> tuple[bytes, list[bytes]]:
    aids = [rnd.randrange(100000) for _ in range(n)]
    return (b"".join(q(f"SELECT abalance FROM pgbench_accounts WHERE aid = {a};") for a in aids),
            [b"".join(rows(1, b"SELECT 1") for _ in aids)])


def seq(rnd: random.Random, n: int = 20):
    return EXCHANGES + [pipelined(rnd.choice([1, 1, 4]), rnd) for _ in range(n)] + EXTENDED


@pytest.mark.parametrize("batch", [1, 3, BATCH])
@pytest.mark.parametrize("kernel_pairing", [False, True])
def test_every_postgres_case_gives_the_same_spans(batch, kernel_pairing):
    rnd = random.Random(batch)
    recs = records(seq(rnd), rnd, kind=PostgresConn)
    spans, counts = same(list(pair(recs)) if kernel_pairing else recs, batch=batch)
    parsed = [json.loads(s) for s in spans]
    assert len(spans) >= 0.8 * 4 * (len(EXCHANGES) + 20 + 2) and counts["spans"] >= 0.5 * len(spans), counts
    assert counts["handed_over"] >= 4, counts
    seen = {(s["name"], s["status_code"], s["attributes"].get("db.response.returned_rows")) for s in parsed}
    texts = {(s["attributes"].get("db.query.text"), s["attributes"].get("db.response.returned_rows")) for s in parsed}
    assert ("SELECT unready FROM t", 2) in texts and ("SELECT answered FROM t", 4) in texts, texts
    assert not any(t == "SELECT unanswered FROM t" for t, _ in texts)
    assert {("SELECT pgbench_accounts", "UNSET", 1), ("SELECT t", "UNSET", 3), ("UPDATE accounts", "UNSET", 1),
            ("SELECT missing", "ERROR", None), ("SELECT t", "ERROR", 2), ("SELECT again", "UNSET", 1)} <= seen, seen
    # a startup the capture cut leaves the connection without its database name, on both paths
    assert sum(s["attributes"].get("db.namespace") == "bank" for s in parsed) >= 0.5 * len(parsed)
    assert "hunter2" not in "".join(spans)


@pytest.mark.parametrize("seed", range(6))
def test_random_chunking_gaps_and_truncation_give_the_same_spans(seed):
    rnd = random.Random(seed)
    recs = records(seq(rnd, 30), rnd, chunking=0.3, conns=3, gaps=seed % 2 == 1, kind=PostgresConn)
    spans, counts = same(recs, batch=rnd.choice([1, 5, BATCH]))
    assert len(spans) > 100 and counts["spans"] > 30, counts
    same(list(pair(recs)), batch=rnd.choice([1, 5, BATCH]))


def test_hostile_postgres_records_never_crash_and_give_the_same_spans():
    rnd = random.Random(2029)
    base = records(seq(rnd, 10), rnd, conns=1, kind=PostgresConn)
    assert hostile_rounds(base, rnd) > 200
