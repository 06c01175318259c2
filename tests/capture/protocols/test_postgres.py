"""PostgreSQL parser, bytes only: startup/auth, simple and extended query, errors, pipelining,
truncation, garbage and mid-stream joins."""
import struct

from capture.protocols.base import Side
from capture.protocols.postgres import PostgresParser, detect
from capture.protocols.sql import sql_summary
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER


def m(t: bytes, body: bytes = b"") -> bytes:
    return t + struct.pack(">I", len(body) + 4) + body


def startup(**params: str) -> bytes:
    body = struct.pack(">I", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack(">I", len(body) + 4) + body


def query(sql: str) -> bytes:
    return m(b"Q", sql.encode() + b"\0")


def extended(sql: str, name: str = "", portal: str = "") -> bytes:
    return (m(b"P", name.encode() + b"\0" + sql.encode() + b"\0\0\0")
            + m(b"B", portal.encode() + b"\0" + name.encode() + b"\0" + b"\0\0\0\0\0\0")
            + m(b"D", b"P" + portal.encode() + b"\0") + m(b"E", portal.encode() + b"\0\0\0\0\0") + m(b"S"))


def ok_result(tag: str, rows: int = 0, parse: bool = True) -> bytes:
    head = (m(b"1") + m(b"2") + m(b"T", b"\0\0")) if parse else b""
    return head + m(b"D", b"\0\0") * rows + m(b"C", tag.encode() + b"\0") + m(b"Z", b"I")


def error(code: str, msg: str) -> bytes:
    return m(b"E", b"SERROR\0VERROR\0C" + code.encode() + b"\0M" + msg.encode() + b"\0\0")


def connected() -> PostgresParser:
    p = PostgresParser()
    p.feed(C, startup(user="app", database="shop"), 1)
    p.feed(S, m(b"R", struct.pack(">I", 3)), 2)  # cleartext password requested
    p.feed(C, m(b"p", b"hunter2\0"), 3)
    p.feed(S, m(b"R", struct.pack(">I", 0)) + m(b"S", b"server_version\x0015\0") + m(b"K", b"\0" * 8) + m(b"Z", b"I"), 4)
    return p


def bench_sample():
    req = query("SELECT * FROM users WHERE id = 1") + extended("UPDATE users SET n = $1 WHERE id = $2")
    resp = m(b"T", b"\0\0") + m(b"D", b"\0\0") + m(b"C", b"SELECT 1\0") + m(b"Z", b"I") + ok_result("UPDATE 1")
    return [(C, req), (S, resp)], 2


def test_simple_query_after_startup_and_password():
    p = connected()
    p.feed(C, query("SELECT * FROM orders WHERE id = 7"), 10)
    (r,) = p.feed(S, m(b"T", b"\0\0") + m(b"D", b"\0\0") + m(b"C", b"SELECT 1\0") + m(b"Z", b"I"), 20)
    assert (r.name, r.start_ns, r.end_ns, r.status) == ("SELECT orders", 10, 20, "UNSET")
    assert r.attributes == {"db.system": "postgresql", "db.namespace": "shop", "db.query.text":
                            "SELECT * FROM orders WHERE id = 7", "db.operation.name": "SELECT",
                            "db.collection.name": "orders", "db.response.returned_rows": 1}
    assert "hunter2" not in repr(p.__dict__)


def test_error_response_sqlstate():
    p = connected()
    p.feed(C, query("SELECT * FROM nope"), 1)
    (r,) = p.feed(S, error("42P01", 'relation "nope" does not exist') + m(b"Z", b"I"), 2)
    assert r.status == "ERROR" and r.attributes["db.response.status_code"] == "42P01"
    assert r.attributes["error.type"] == "42P01" and "does not exist" in r.status_message


def test_extended_protocol_unnamed_and_named_statements():
    p = connected()
    p.feed(C, extended("INSERT INTO t VALUES ($1)"), 1)
    (r,) = p.feed(S, m(b"1") + m(b"2") + m(b"n") + m(b"C", b"INSERT 0 1\0") + m(b"Z", b"I"), 2)
    assert r.attributes["db.query.text"] == "INSERT INTO t VALUES ($1)" and r.attributes["db.response.returned_rows"] == 1
    # a named statement prepared once, then only Bind/Execute: the text still reaches the span
    p.feed(C, m(b"P", b"s1\0SELECT a FROM t WHERE b = $1\0\0\0") + m(b"S"), 3)
    p.feed(S, m(b"1") + m(b"Z", b"I"), 4)
    for i in range(3):
        p.feed(C, m(b"B", b"\0s1\0\0\0\0\0\0\0") + m(b"E", b"\0\0\0\0\0") + m(b"S"), 5 + i)
    recs = p.feed(S, (m(b"2") + m(b"D", b"\0\0") + m(b"C", b"SELECT 1\0") + m(b"Z", b"I")) * 3, 9)
    assert [r.attributes["db.query.text"] for r in recs] == ["SELECT a FROM t WHERE b = $1"] * 3


def test_pipelined_extended_batch_with_error_skips_to_sync():
    p = connected()
    p.feed(C, extended("SELECT 1") + extended("SELECT * FROM bad") + extended("SELECT 3"), 1)
    recs = p.feed(S, ok_result("SELECT 1", 1) + m(b"1") + error("42P01", "nope") + m(b"Z", b"I")
                  + ok_result("SELECT 1", 1), 2)
    assert [(r.attributes["db.query.text"], r.status) for r in recs] == [
        ("SELECT 1", "UNSET"), ("SELECT * FROM bad", "ERROR"), ("SELECT 3", "UNSET")]


def test_parse_error_without_execute_still_one_span():
    p = connected()
    p.feed(C, m(b"P", b"\0SELEC oops\0\0\0") + m(b"S"), 1)
    (r,) = p.feed(S, error("42601", "syntax error") + m(b"Z", b"I"), 2)
    assert r.status == "ERROR" and r.attributes["db.query.text"] == "SELEC oops"


def test_length_written_alone_and_large_truncated_query():
    p = connected()
    msg = query("SELECT '" + "x" * 20000 + "'")
    p.feed(C, msg[:1], 1)
    p.feed(C, msg[1:5], 2)  # the length alone
    p.feed(C, msg[5:4096], 3, size=len(msg) - 5)  # the capture copied 4 kB of the rest
    (r,) = p.feed(S, m(b"T", b"\0\0") + m(b"D", b"\0\0") + m(b"C", b"SELECT 1\0") + m(b"Z", b"I"), 4)
    assert r.start_ns == 1 and r.attributes["db.query.text"].startswith("SELECT 'xxxx")
    assert len(r.attributes["db.query.text"]) <= 4096


def test_ssl_request_refused_then_startup():
    p = PostgresParser()
    p.feed(C, struct.pack(">II", 8, 80877103), 1)
    p.feed(S, b"N", 2)
    p.feed(C, startup(user="u", database="d"), 3)
    p.feed(S, m(b"R", b"\0\0\0\0") + m(b"Z", b"I"), 4)
    p.feed(C, query("SELECT 1"), 5)
    (r,) = p.feed(S, ok_result("SELECT 1", 1, parse=False), 6)
    assert r.attributes["db.namespace"] == "d" and p.stats["garbage"] == 0


def test_mid_stream_join_and_garbage():
    p = PostgresParser()  # no startup seen
    assert p.feed(S, b"\x00\x01garbage-tail", 1) == []
    p.feed(C, query("SELECT 2"), 2)
    (r,) = p.feed(S, ok_result("SELECT 1", 1, parse=False), 3)
    assert r.attributes["db.query.text"] == "SELECT 2" and "db.namespace" not in r.attributes
    p.feed(C, b"\xff\xfe\xfd\xfc\xfb garbage", 4)
    assert p.stats["garbage"] == 2
    p.feed(C, query("SELECT 3"), 5)
    (r,) = p.feed(S, ok_result("SELECT 1", 1, parse=False), 6)
    assert r.attributes["db.query.text"] == "SELECT 3"


def test_close_reports_unanswered_query():
    p = connected()
    p.feed(C, query("SELECT pg_sleep(100)"), 1)
    (r,) = p.close(9)
    assert r.status == "ERROR" and r.attributes["error.type"] == "no_response"


def test_sql_summary():
    assert sql_summary("  /* c */ select a from public.users u join x") == ("SELECT", "public.users")
    assert sql_summary("INSERT INTO \"Orders\" VALUES (1)") == ("INSERT", "Orders")
    assert sql_summary("BEGIN") == ("BEGIN", "")


def test_detect():
    assert detect(startup(user="u")) == C and detect(struct.pack(">II", 8, 80877103)) == C
    assert detect(query("SELECT 1")) == C and detect(m(b"Z", b"I")) == S
    assert detect(error("42601", "x")) == S and detect(m(b"R", b"\0\0\0\0")) == S
    assert random_match_rate(detect) < 0.001
    # the shared startup sample's length field (41) disagrees with its 35 bytes: rightly refused
    assert other_protocol_matches(detect) == [b"\x00\x00\x00\x08\x04\xd2\x16\x2f"]


def test_kernel_detector_agrees_with_its_userspace_mirror():
    import random

    from tests.capture.protocols.fuzz import OTHER_PROTOCOLS
    from tests.capture.protocols.kernel_detect import agrees, kernel_detect

    rng = random.Random(11)
    own = [data for _, data in bench_sample()[0]]
    samples = own + OTHER_PROTOCOLS + [rng.randbytes(rng.choice((16, 64, 300))) for _ in range(3000)]
    assert agrees("postgres", detect, samples) == []
    assert all(kernel_detect("postgres")(data) for data in own[:1])  # the first message of the sample is detected


def test_completion_tag_whose_count_is_not_an_ascii_number():
    # str.isdigit() takes "5³"; int() raised on it and on thousands of digits: no row count then
    p = connected()
    for tag in ("SELECT 5\u00b3", "SELECT " + "9" * 5000, "SELECT ５"):
        p.feed(C, query("SELECT 1"), 5)
        (r,) = p.feed(S, ok_result(tag, parse=False), 6)
        assert r.attributes["db.operation.name"] == "SELECT" and "db.response.returned_rows" not in r.attributes
    p.feed(C, query("SELECT 1"), 7)
    (r,) = p.feed(S, ok_result("SELECT 3", rows=3, parse=False), 8)
    assert r.attributes["db.response.returned_rows"] == 3


def test_a_query_whose_answer_was_missed_ends_at_the_last_answer_seen_never_at_the_next_one():
    """Rule 4: a capture that missed an answer's end (its ReadyForQuery) or all of it, with no gap
    in the stream, must not pair the next query's answer with that query: an idle pooled connection
    would then show as one query lasting until the connection's next use."""
    p = connected()
    p.feed(C, query("SELECT a FROM t WHERE id = 1"), 10)
    assert p.feed(S, m(b"T", b"\0\0") + m(b"D", b"\0\0") + m(b"C", b"SELECT 1\0"), 11) == []  # its Z missed
    (a,) = p.feed(C, query("SELECT b FROM t"), 2_000_000_000)  # after 2 s idle in the pool
    assert (a.start_ns, a.end_ns, a.attributes["db.response.returned_rows"]) == (10, 11, 1)
    (b,) = p.feed(S, m(b"T", b"\0\0") + m(b"D", b"\0\0") * 20 + m(b"C", b"SELECT 20\0") + m(b"Z", b"I"), 2_000_000_050)
    assert (b.start_ns, b.end_ns, b.attributes["db.response.returned_rows"]) == (2_000_000_000, 2_000_000_050, 20)
    # nothing of its answer seen: dropped and counted, the next query keeps its own answer
    p.feed(C, query("SELECT c FROM t"), 3_000_000_000)
    p.feed(C, query("SELECT d FROM t"), 4_000_000_000)
    (d,) = p.feed(S, m(b"C", b"SELECT 3\0") + m(b"Z", b"I"), 4_000_000_020)
    assert (d.attributes["db.query.text"], d.end_ns - d.start_ns) == ("SELECT d FROM t", 20)
    assert p.stats["answers_missed"] == 2
    # a notice or a notification is no answer: a query that saw only those is dropped
    p.feed(C, query("SELECT e FROM t"), 5_000_000_000)
    p.feed(S, m(b"A", b"\0\0\0\1ch\0x\0"), 5_000_000_001)
    p.feed(C, query("SELECT f FROM t"), 6_000_000_000)
    (f,) = p.feed(S, m(b"C", b"SELECT 0\0") + m(b"Z", b"I"), 6_000_000_010)
    assert f.attributes["db.query.text"] == "SELECT f FROM t" and p.stats["answers_missed"] == 3


def test_simple_queries_pipelined_in_one_write_still_pair_in_order():
    p = connected()
    p.feed(C, query("SELECT 1") + query("SELECT 2"), 10)
    first = p.feed(S, m(b"C", b"SELECT 1\0") + m(b"Z", b"I"), 20)
    second = p.feed(S, m(b"C", b"SELECT 1\0") + m(b"Z", b"I"), 30)
    assert [(r.attributes["db.query.text"], r.end_ns) for r in first + second] == [("SELECT 1", 20), ("SELECT 2", 30)]
    assert not p.stats["answers_missed"]


def bind_execute(statement: bytes = b"stmt_1", describe: bool = False) -> bytes:
    bind = m(b"B", b"\0" + statement + b"\0" + b"\0\0" + b"\0\x01" + b"\0\0\0\x013" + b"\0\0")
    return bind + (m(b"D", b"P\0") if describe else b"") + m(b"E", b"\0\0\0\0\0") + m(b"S")


def test_a_bind_of_a_statement_prepared_before_the_capture_is_detected():
    """A connection older than the capture whose statements were prepared before it starts with
    Bind: detected (Bind then Execute or Describe in one write), in the kernel as in its mirror;
    its Execute gives a span (the statement's text was never seen)."""
    import random

    from tests.capture.protocols.kernel_detect import agrees, kernel_detect

    samples = [bind_execute(), bind_execute(b"", describe=True), bind_execute(b"s" * 40)]
    for data in samples:
        assert detect(data) == C and kernel_detect("postgres")(data)
    refused = [m(b"B", b"\0stmt\0" + bytes(6)), bind_execute()[:20], m(b"B", bytes(8)) + m(b"X"),
               m(b"B", bytes(8)) + m(b"D", b"Q\0")]
    assert [detect(d) for d in refused] == [None] * len(refused)
    rng = random.Random(3)
    noisy = [d[:k] + bytes([rng.randrange(256)]) + d[k + 1:] for d in samples for k in range(len(d))]
    assert agrees("postgres", detect, samples + refused + noisy) == []
    p = PostgresParser()
    p.feed(C, bind_execute(), 10)
    (r,) = p.feed(S, m(b"2") + m(b"D", b"\0\x01\0\0\0\x011") + m(b"C", b"SELECT 1\0") + m(b"Z", b"I"), 20)
    assert (r.start_ns, r.end_ns, r.attributes["db.response.returned_rows"]) == (10, 20, 1)


def test_an_answer_the_capture_cut_ends_with_its_last_bytes_seen_not_at_the_close():
    """Rule 5: a result set larger than the copied prefix (psycopg's extended protocol, one 12 kB
    server write of which 4 kB were copied) loses sync mid-answer; the Execute keeps that answer and
    ends with its last bytes seen once the client asks again, without a row count. Before, the first
    such query was dropped and every later one waited until the connection closed (an ERROR span
    lasting until the close)."""
    p = connected()
    answer = m(b"1") + m(b"2") + m(b"T", b"\0\0") + m(b"D", b"\0\x01\0\0\0\x14" + b"x" * 20) * 400 \
        + m(b"C", b"SELECT 400\0") + m(b"Z", b"I")
    spans = []
    for i in range(3):
        t = 1_000_000_000 * (i + 1)
        spans += p.feed(C, extended(f"SELECT category, count(*) FROM items GROUP BY category /* {i} */"), t)
        spans += p.feed(S, answer[:4096], t + 90_000_000, size=len(answer))
        assert p.stats["lost_bytes"] == i + 1
    spans += p.close(9_000_000_000)
    assert [(r.start_ns, r.end_ns, r.status) for r in spans] == [
        (t, t + 90_000_000, "UNSET") for t in (1_000_000_000, 2_000_000_000, 3_000_000_000)]
    assert all("db.response.returned_rows" not in r.attributes for r in spans)
    assert p.stats["answers_cut"] == 3 and not p.stats["requests_without_response"]
    # a long answer read in several chunks ends with the last of them; one that resyncs ends in sync
    p = connected()
    p.feed(C, query("SELECT big FROM t"), 10)
    p.feed(S, answer[:4096], 20, size=8192)
    p.feed(S, answer[8192:8192 + 4096], 30, size=len(answer) - 8192)  # starts mid-row: out of sync
    (r,) = p.feed(C, query("SELECT 1"), 40)
    assert (r.attributes["db.query.text"], r.start_ns, r.end_ns) == ("SELECT big FROM t", 10, 30)
    (one,) = p.feed(S, ok_result("SELECT 1", 1, parse=False), 50)
    assert (one.attributes["db.query.text"], one.end_ns, one.attributes["db.response.returned_rows"]) == ("SELECT 1", 50, 1)


def test_a_cut_answer_with_pipelined_queries_waiting_drops_them():
    """Rule 3 stays for pipelines: after a cut answer with two Executes waiting, neither is paired."""
    p = connected()
    p.feed(C, extended("SELECT a FROM t") + extended("SELECT b FROM t"), 10)
    big = m(b"1") + m(b"2") + m(b"T", b"\0\0") + m(b"D", b"\0\x01\0\0\0\x14" + b"x" * 20) * 400
    assert p.feed(S, big[:4096], 20, size=len(big) + 40) == []
    p.feed(C, query("SELECT c FROM t"), 30)
    assert p.feed(S, b"x" * 10, 35) == []  # the rest of the pipeline's answers, out of sync
    (c,) = p.feed(S, ok_result("SELECT 1", 1, parse=False), 40)
    assert c.attributes["db.query.text"] == "SELECT c FROM t" and not p.stats["answers_cut"]


def test_a_cut_answer_is_never_stretched_to_an_answer_whose_request_was_lost():
    """A server chunk that starts a message while a cut answer waits may be the answer to a request
    the ring lost: the cut query ends before it, at its own last bytes."""
    p = connected()
    answer = m(b"T", b"\0\0") + m(b"D", b"\0\x01\0\0\0\x14" + b"x" * 20) * 400 + m(b"C", b"SELECT 400\0") + m(b"Z", b"I")
    p.feed(C, query("SELECT big FROM t"), 10)
    assert p.feed(S, answer[:4096], 20, size=len(answer)) == []
    (r,) = p.feed(S, ok_result("SELECT 1", 1, parse=False), 1_000)  # a lost query's answer
    assert (r.attributes["db.query.text"], r.start_ns, r.end_ns) == ("SELECT big FROM t", 10, 20)
    p.feed(C, query("SELECT 2"), 2_000)
    (two,) = p.feed(S, ok_result("SELECT 1", 1, parse=False), 2_010)
    assert (two.attributes["db.query.text"], two.end_ns) == ("SELECT 2", 2_010)
