"""Cassandra CQL parser, bytes only: v1 and v4 frames, stream pairing, PREPARE/EXECUTE, BATCH, errors,
tracing/warning flags, truncation, garbage; plus the recorded v4/v5 capture."""
import struct

import pytest

from capture.protocols.base import Side
from capture.protocols.cassandra import CassandraParser, detect
from capture.sources.pcap import replay
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate
from tests.capture.sources.pcapwriter import CAPTURES

C, S = Side.CLIENT, Side.SERVER


def frame(version, stream, opcode, body=b"", flags=0, response=False):
    v = version | (0x80 if response else 0)
    if version <= 2:
        return struct.pack(">BBbBi", v, flags, stream, opcode, len(body)) + body
    return struct.pack(">BBhBi", v, flags, stream, opcode, len(body)) + body


def long_string(s):
    return struct.pack(">i", len(s.encode())) + s.encode()


def query(text, consistency=1, version=4):
    return long_string(text) + struct.pack(">H", consistency) + (b"\x00" if version >= 2 else b"")


def rows():
    return struct.pack(">i", 2) + struct.pack(">ii", 0x0004, 0)  # Rows, no metadata, 0 columns


def error(code, msg):
    return struct.pack(">i", code) + struct.pack(">H", len(msg)) + msg.encode()


def test_v4_query_and_rows():
    p = CassandraParser()
    p.feed(C, frame(4, 3, 7, query("SELECT name FROM shop.users WHERE id = 1", consistency=6)), 10)
    (rec,) = p.feed(S, frame(4, 3, 8, rows(), response=True), 50)
    a = rec.attributes
    assert rec.name == "SELECT users" and (rec.start_ns, rec.end_ns) == (10, 50) and rec.status == "UNSET"
    assert (a["db.system"], a["db.namespace"], a["db.collection.name"], a["db.operation.name"],
            a["cassandra.consistency.level"]) == ("cassandra", "shop", "users", "SELECT", "local_quorum")
    assert a["db.query.text"] == "SELECT name FROM shop.users WHERE id = 1"


def test_v1_frames_and_errors():
    p = CassandraParser()
    p.feed(C, frame(1, 0, 7, query("INSERT INTO t (k) VALUES (1)", version=1)), 1)
    (rec,) = p.feed(S, frame(1, 0, 0, error(0x2200, "unconfigured columnfamily t"), response=True), 2)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "Invalid"
    assert rec.attributes["db.response.status_code"] == "0x2200" and rec.status_message.startswith("unconfigured")


def test_streams_pair_out_of_order():
    p = CassandraParser()
    p.feed(C, frame(4, 1, 7, query("SELECT * FROM a")) + frame(4, 2, 7, query("SELECT * FROM b")), 1)
    (r2,) = p.feed(S, frame(4, 2, 8, rows(), response=True), 2)
    (r1,) = p.feed(S, frame(4, 1, 8, rows(), response=True), 3)
    assert (r1.name, r2.name) == ("SELECT a", "SELECT b")


def test_prepare_then_execute_by_id_and_keyspace_from_use():
    p = CassandraParser()
    p.feed(C, frame(4, 1, 7, query("USE shop")), 1)
    p.feed(S, frame(4, 1, 8, struct.pack(">i", 3) + b"\x00\x04shop", response=True), 2)
    p.feed(C, frame(4, 2, 9, long_string("UPDATE users SET n = ? WHERE id = ?")), 3)
    pid = b"\x01\x02\x03\x04"
    (prep,) = p.feed(S, frame(4, 2, 8, struct.pack(">i", 4) + struct.pack(">H", 4) + pid + b"\0" * 8,
                              response=True), 4)
    assert prep.name == "PREPARE UPDATE users" and prep.attributes["db.namespace"] == "shop"
    p.feed(C, frame(4, 5, 10, struct.pack(">H", 4) + pid + struct.pack(">H", 4) + b"\x00"), 5)
    (ex,) = p.feed(S, frame(4, 5, 8, struct.pack(">i", 1), response=True), 6)
    assert ex.name == "UPDATE users" and ex.attributes["cassandra.consistency.level"] == "quorum"


def test_batch_names_its_first_statement():
    p = CassandraParser()
    body = b"\x00" + struct.pack(">H", 2) + b"\x00" + long_string("INSERT INTO ev (id) VALUES (1)") + \
        struct.pack(">H", 0) + b"\x00" + long_string("INSERT INTO ev (id) VALUES (2)") + struct.pack(">H", 0)
    p.feed(C, frame(4, 9, 13, body + struct.pack(">H", 1) + b"\x00"), 1)
    (rec,) = p.feed(S, frame(4, 9, 8, struct.pack(">i", 1), response=True), 2)
    assert rec.name == "BATCH INSERT ev"


def test_tracing_and_warning_flags_are_skipped_before_the_error():
    p = CassandraParser()
    p.feed(C, frame(4, 4, 7, query("SELECT * FROM x")), 1)
    extra = b"\x11" * 16 + struct.pack(">H", 1) + struct.pack(">H", 4) + b"warn"
    (rec,) = p.feed(S, frame(4, 4, 0, extra + error(0x1200, "timeout"), flags=0x0A, response=True), 2)
    assert rec.attributes["error.type"] == "Read_timeout"


def test_events_truncation_garbage_and_resync():
    p = CassandraParser()
    assert p.feed(S, frame(4, -1, 12, b"\x00\x0dSCHEMA_CHANGE", response=True), 1) == []  # server push
    big = frame(4, 6, 7, query("INSERT INTO blobs (b) VALUES ('" + "z" * 9000 + "')"))
    p.feed(C, big[:4096], 2, size=len(big))
    (rec,) = p.feed(S, frame(4, 6, 8, struct.pack(">i", 1), response=True), 3)
    assert rec.name == "INSERT blobs"
    p.feed(C, b"", 4, size=77)
    assert p.feed(C, b"\x99garbage!!", 5) == []
    p.feed(C, frame(4, 7, 5), 6)
    (rec,) = p.feed(S, frame(4, 7, 6, b"\x00\x00", response=True), 7)
    assert rec.name == "OPTIONS" and p.stats["resyncs"] == 1


def test_unanswered_on_close():
    p = CassandraParser()
    p.feed(C, frame(4, 1, 7, query("SELECT * FROM a")), 1)
    (rec,) = p.close(2)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "no_response"


def test_detect():
    assert detect(frame(4, 0, 5)) == C
    assert detect(frame(1, 0, 5)) == C  # v1 OPTIONS: 8 bytes
    assert detect(frame(4, 0, 6, b"\x00\x00", response=True)) == S
    assert detect(frame(4, 0, 2, response=True)) == S
    assert detect(frame(4, -1, 7, query("x"))) is None  # requests never use negative streams
    assert random_match_rate(detect) < 0.002
    assert other_protocol_matches(detect) == []


@pytest.mark.skipif(not (CAPTURES / "cassandra").is_dir(), reason="shared/captures not present")
def test_recorded_capture():
    spans = []
    stats = replay(str(CAPTURES / "cassandra" / "ndpi-cassandra.pcap"), lambda b: spans.extend(s.to_dict() for s in b))
    assert stats["pcap.flows.CASSANDRA"] == 2  # v4 and v5 sessions; the gossip flow on 7000 is not CQL
    assert sorted(s["name"] for s in spans if s["status_code"] == "UNSET") == ["OPTIONS", "OPTIONS"]
    assert all(s["attributes"]["server.port"] == 9042 for s in spans)


def bench_sample():
    """One QUERY and its Rows result (bench/parsers.py)."""
    return [(C, frame(4, 1, 7, query("SELECT name FROM shop.users WHERE id = 1"))),
            (S, frame(4, 1, 8, rows(), response=True))], 1
