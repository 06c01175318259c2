"""MySQL/MariaDB parser, bytes only: handshake, COM_QUERY, result sets (with and without EOF),
prepared statements, errors, truncation, garbage and mid-stream joins."""
import struct

from capture.protocols.base import Side
from capture.protocols.mysql import MysqlParser, detect
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER


def pkt(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


GREETING = pkt(0, b"\x0a" + b"10.11.6-MariaDB\0" + b"\x01\0\0\0" + b"abcdefgh\0" + b"\xff\xf7\x21\x02\0" + b"\0" * 13
               + b"ijklmnopqrst\0mysql_native_password\0")
CAPS = 0x000FA68D | 0x8  # protocol 41, secure connection, plugin auth, CONNECT_WITH_DB


def handshake_response(user=b"app", db=b"shop", secret=b"\x01" * 20) -> bytes:
    body = struct.pack("<IIB", CAPS, 1 << 24, 33) + b"\0" * 23 + user + b"\0" + bytes([len(secret)]) + secret + db + b"\0"
    return pkt(1, body + b"mysql_native_password\0")


def ok(seq=1, affected=0) -> bytes:
    return pkt(seq, b"\x00" + bytes([affected]) + b"\x00\x02\x00\x00\x00")


def err(code: int, state: str, msg: str, seq=1) -> bytes:
    return pkt(seq, b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + msg.encode())


def coldef(seq: int, name: bytes) -> bytes:
    lenenc = lambda s: bytes([len(s)]) + s  # noqa: E731
    return pkt(seq, lenenc(b"def") + lenenc(b"db") + lenenc(b"t") + lenenc(b"t") + lenenc(name) + lenenc(name)
               + b"\x0c\x21\x00\x00\x01\x00\xfd\x00\x00\x00\x00\x00")


def resultset(ncols: int, rows: list[bytes], eof: bool = True) -> bytes:
    out, seq = pkt(1, bytes([ncols])), 2
    for i in range(ncols):
        out += coldef(seq, b"c%d" % i)
        seq += 1
    if eof:
        out += pkt(seq, b"\xfe\x00\x00\x02\x00")
        seq += 1
    for r in rows:
        out += pkt(seq, r)
        seq += 1
    return out + (pkt(seq, b"\xfe\x00\x00\x02\x00") if eof else pkt(seq, b"\xfe\x00\x00\x02\x00\x00\x00"))


def connected() -> MysqlParser:
    p = MysqlParser()
    p.feed(S, GREETING, 1)
    p.feed(C, handshake_response(), 2)
    p.feed(S, ok(seq=2), 3)
    return p


def query(sql: str) -> bytes:
    return pkt(0, b"\x03" + sql.encode())


def bench_sample():
    req = query("SELECT id, name FROM users WHERE id = 1")
    return [(C, req), (S, resultset(2, [b"\x011\x03bob"])), (C, query("UPDATE users SET a = 1")), (S, ok(affected=1))], 2


def test_handshake_then_query_result_set():
    p = connected()
    p.feed(C, query("SELECT * FROM users"), 10)
    (r,) = p.feed(S, resultset(2, [b"\x011\x03bob", b"\x012\x05alice"]), 20)
    assert (r.name, r.start_ns, r.end_ns, r.status) == ("SELECT users", 10, 20, "UNSET")
    a = r.attributes
    assert a["db.system"] == "mariadb" and a["db.namespace"] == "shop" and a["db.response.returned_rows"] == 2
    assert a["db.operation.name"] == "SELECT" and a["db.collection.name"] == "users"


def test_auth_data_never_reaches_attributes():
    p = MysqlParser()
    p.feed(S, GREETING, 1)
    p.feed(C, handshake_response(secret=b"SECRETSCRAMBLE123456"), 2)
    p.feed(S, pkt(2, b"\xfe" + b"mysql_native_password\0" + b"x" * 20), 3)  # auth switch
    p.feed(C, pkt(3, b"hunter2-scrambled-xx"), 4)
    p.feed(S, ok(seq=4), 5)
    p.feed(C, query("SELECT 1"), 6)
    (r,) = p.feed(S, resultset(1, [b"\x011"]), 7)
    assert "SECRET" not in repr(r) and "hunter2" not in repr(r) and r.attributes["db.query.text"] == "SELECT 1"


def test_error_packet():
    p = connected()
    p.feed(C, query("SELECT * FROM nope"), 1)
    (r,) = p.feed(S, err(1146, "42S02", "Table 'shop.nope' doesn't exist"), 2)
    assert r.status == "ERROR" and r.attributes["error.type"] == "1146"
    assert r.attributes["db.mysql.sqlstate"] == "42S02" and "doesn't exist" in r.status_message


def test_deprecate_eof_result_and_ok_with_rows():
    p = connected()
    p.feed(C, query("SELECT a FROM t"), 1)
    (r,) = p.feed(S, resultset(1, [b"\x01x"] * 3, eof=False), 2)
    assert r.attributes["db.response.returned_rows"] == 3
    p.feed(C, query("DELETE FROM t"), 3)
    (r,) = p.feed(S, ok(affected=3), 4)
    assert r.attributes["db.response.returned_rows"] == 3 and r.name == "DELETE t"


def test_prepare_execute_carry_the_statement_text():
    p = connected()
    p.feed(C, pkt(0, b"\x16SELECT name FROM users WHERE id = ?"), 1)
    prep = pkt(1, b"\x00" + struct.pack("<IHH", 7, 1, 1) + b"\x00\x00\x00") + coldef(2, b"?") + \
        pkt(3, b"\xfe\x00\x00\x02\x00") + coldef(4, b"name") + pkt(5, b"\xfe\x00\x00\x02\x00")
    (r,) = p.feed(S, prep, 2)
    assert r.name == "PREPARE SELECT users"
    for i in range(2):
        p.feed(C, pkt(0, b"\x17" + struct.pack("<IBI", 7, 0, 1) + b"\x00\x01\x08\x00" + struct.pack("<q", i)), 3 + i)
        (r,) = p.feed(S, resultset(1, [b"\x00\x00\x03bob"]), 5 + i)
        assert r.attributes["db.query.text"] == "SELECT name FROM users WHERE id = ?"
        assert r.attributes["mysql.command"] == "STMT_EXECUTE" and r.attributes["db.response.returned_rows"] == 1
    (c,) = p.feed(C, pkt(0, b"\x19" + struct.pack("<I", 7)), 9)  # no reply: a span right away
    assert c.attributes["mysql.command"] == "STMT_CLOSE"


def test_query_split_and_truncated():
    p = connected()
    q = query("SELECT '" + "x" * 50000 + "'")
    p.feed(C, q[:3], 1)  # part of the header alone
    p.feed(C, q[3:4096], 2, size=len(q) - 3)
    (r,) = p.feed(S, resultset(1, [b"\x01x"]), 3)
    assert r.start_ns == 1 and r.attributes["db.query.text"].startswith("SELECT 'xxx")


def test_mid_stream_join_waits_for_a_response_start():
    p = MysqlParser()  # joined after the handshake, inside a result set
    assert p.feed(S, pkt(5, b"\x01x") + pkt(6, b"\xfe\x00\x00\x02\x00"), 1) == []
    p.feed(C, query("SELECT 2"), 2)
    (r,) = p.feed(S, resultset(1, [b"\x012"]), 3)
    assert r.attributes["db.query.text"] == "SELECT 2" and r.attributes["db.system"] == "mysql"


def test_garbage_on_the_client_resyncs_at_a_command():
    p = connected()
    p.feed(C, b"\xff\xff\xff\x09garbage", 1)  # a 16 MB "packet": waits, then we lose bytes
    p.feed(C, b"\x00" * 10, 2, size=100_000_000)
    assert p.stats["lost_bytes"] == 1
    p.feed(C, query("SELECT 3"), 3)
    (r,) = p.feed(S, resultset(1, [b"\x013"]), 4)
    assert r.attributes["db.query.text"] == "SELECT 3"


def test_close_reports_unanswered():
    p = connected()
    p.feed(C, query("SELECT SLEEP(100)"), 1)
    (r,) = p.close(9)
    assert r.status == "ERROR" and r.attributes["error.type"] == "no_response"


def test_detect():
    assert detect(GREETING) == S and detect(query("SELECT 1")) == C and detect(pkt(0, b"\x0e")) == C
    assert detect(err(1045, "28000", "Access denied", seq=2)) == S
    assert detect(query("SELECT 1")[:-1]) is None  # a command must be whole
    assert random_match_rate(detect) < 0.001
    assert other_protocol_matches(detect) == [b"J\x00\x00\x00\x0a8.0.33\x00" + b"\x00" * 60]


def test_kernel_detector_agrees_with_its_userspace_mirror():
    import random

    from tests.capture.protocols.fuzz import OTHER_PROTOCOLS
    from tests.capture.protocols.kernel_detect import agrees, kernel_detect

    rng = random.Random(11)
    own = [data for _, data in bench_sample()[0]]
    samples = own + OTHER_PROTOCOLS + [rng.randbytes(rng.choice((16, 64, 300))) for _ in range(3000)]
    assert agrees("mysql", detect, samples) == []
    assert all(kernel_detect("mysql")(data) for data in own[:1])  # the first message of the sample is detected


def test_result_set_written_at_once_and_copied_in_part_still_ends_its_command():
    # A server writes a whole result set in one write; the capture copies its first 4 KiB. The
    # uncopied tail crosses packet boundaries (a 20 kB row, then the final EOF): the command
    # ends with that write instead of being dropped with the lost framing.
    import struct

    def packet(seq, payload):
        return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload

    def lenenc(b):
        return (bytes([len(b)]) if len(b) < 251 else b"\xfc" + struct.pack("<H", len(b))) + b

    query = packet(0, b"\x03SELECT '" + b"x" * 20000 + b"' AS big")
    coldef = b"".join(lenenc(x) for x in (b"def", b"", b"", b"", b"big", b"")) + b"\x0c\x21\x00\x00\x00\x01\x00\xfd\x00\x00\x1f\x00\x00"
    eof = b"\xfe\x00\x00\x02\x00"
    resp = packet(1, b"\x01") + packet(2, coldef) + packet(3, eof) + packet(4, lenenc(b"x" * 20000)) + packet(5, eof)
    p = MysqlParser()
    assert p.feed(C, query, 1) == []
    (r,) = p.feed(S, resp[:4096], 2, size=len(resp))
    assert r.name == "SELECT" and r.status == "UNSET" and r.end_ns == 2
    assert p.stats["responses_ended_uncopied"] == 1
    p.feed(C, packet(0, b"\x0e"), 3)  # COM_PING after it pairs with its own OK
    (ping,) = p.feed(S, packet(1, b"\x00\x00\x00\x02\x00\x00\x00"), 4)
    assert ping.attributes["mysql.command"] == "PING"


def server_end() -> MysqlParser:
    p = connected()
    p.at_server = True
    return p


def test_at_the_server_a_command_whose_answer_was_missed_ends_at_the_last_answer_seen():
    """Rule 5: a server reads its next command only once it answered the last, so a command read
    in a later chunk while one waits means that one's answer was not all seen: it ends at its last
    answer packet seen, or is dropped, never at the next command's answer."""
    p = server_end()
    p.feed(C, query("SELECT a FROM t WHERE id = 1"), 10)
    assert p.feed(S, resultset(1, [b"\x011", b"\x012"])[:-9], 11) == []  # its last EOF missed
    (a,) = p.feed(C, query("SELECT b FROM t"), 2_000_000_000)  # after 2 s idle in the pool
    assert (a.start_ns, a.end_ns, a.attributes["db.response.returned_rows"]) == (10, 11, 2)
    (b,) = p.feed(S, resultset(1, [b"\x011"] * 20), 2_000_000_050)
    assert (b.start_ns, b.end_ns, b.attributes["db.response.returned_rows"]) == (2_000_000_000, 2_000_000_050, 20)
    # nothing of its answer seen: dropped and counted, the next command keeps its own answer
    p.feed(C, query("SELECT c FROM t"), 3_000_000_000)
    p.feed(C, query("UPDATE d SET x = 1"), 4_000_000_000)
    (d,) = p.feed(S, ok(affected=3), 4_000_000_020)
    assert (d.attributes["db.query.text"], d.end_ns - d.start_ns, d.attributes["db.response.returned_rows"]) == \
        ("UPDATE d SET x = 1", 20, 3)
    assert p.stats["answers_missed"] == 2


def test_commands_read_in_one_chunk_still_pair_in_order_at_the_server():
    p = server_end()
    p.feed(C, query("SELECT 1") + query("UPDATE t SET a = 2"), 10)
    first = p.feed(S, resultset(1, [b"\x011"]), 20)
    second = p.feed(S, ok(affected=1), 30)
    assert [(r.attributes["db.query.text"], r.end_ns) for r in first + second] == \
        [("SELECT 1", 20), ("UPDATE t SET a = 2", 30)]
    assert not p.stats["answers_missed"]


def test_a_server_reading_headers_and_payloads_apart_is_no_missed_answer():
    p = server_end()
    for k, sql in enumerate(("SELECT a FROM t", "SELECT b FROM t")):
        packet = query(sql)
        p.feed(C, packet[:4], 10 + 10 * k)
        p.feed(C, packet[4:], 11 + 10 * k)
        (r,) = p.feed(S, resultset(1, [b"\x011"]), 15 + 10 * k)
        assert r.attributes["db.query.text"] == sql
    assert not p.stats["answers_missed"]


def test_at_the_client_commands_pipelined_in_separate_writes_keep_their_fifo_pairing():
    """Connectors that pipeline (MariaDB Connector/J batches, Vert.x, R2DBC) write commands before
    reading any answer: at the client's end those are not missed answers (Rule 5)."""
    p = connected()
    for k in range(3):
        p.feed(C, query(f"UPDATE t SET a = {k}"), 10 + k)
    out = []
    for k in range(3):
        out += p.feed(S, ok(affected=k + 1), 20 + k)
    assert [(r.attributes["db.query.text"], r.end_ns, r.attributes.get("db.response.returned_rows")) for r in out] == \
        [("UPDATE t SET a = 0", 20, 1), ("UPDATE t SET a = 1", 21, 2), ("UPDATE t SET a = 2", 22, 3)]
    assert not p.stats["answers_missed"]
