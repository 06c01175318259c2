"""Cassandra CQL parser, bytes only: v1 and v4 frames, stream pairing, PREPARE/EXECUTE, BATCH, errors,
tracing/warning flags, truncation, garbage; plus the recorded v4/v5 capture."""
import struct
import zlib

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


def crc24(data: bytes) -> int:
    """native_protocol_v5.spec §2.2: CRC24 of a segment header (init 0x875060, poly 0x1974F0B)."""
    crc = 0x875060
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1974F0B
    return crc & 0xFFFFFF


def segment(payload: bytes, self_contained: bool = True) -> bytes:
    head = (len(payload) | (1 << 17 if self_contained else 0)).to_bytes(3, "little")
    return head + crc24(head).to_bytes(3, "little") + payload + zlib.crc32(payload).to_bytes(4, "little")


def v5_session(p: CassandraParser, chunks_of=None) -> list:
    """STARTUP/READY in plain frames, then segments: three QUERYs in one segment, one large
    QUERY split over two segments; the answers (rows, an error, rows, rows) in one segment."""
    out = p.feed(C, frame(5, 0, 1, struct.pack(">H", 1) + b"\x00\x0bCQL_VERSION\x00\x053.0.0"), 10)
    out += p.feed(S, frame(5, 0, 2, response=True), 20)
    big = "SELECT * FROM shop.orders WHERE note = '" + "x" * 200_000 + "'"
    requests = b"".join(frame(5, i, 7, query(q, version=5)) for i, q in enumerate(
        ["SELECT name FROM shop.users", "INSERT INTO shop.carts (id) VALUES (1)", "SELECT * FROM shop.nope"], 1))
    big_frame = frame(5, 4, 7, query(big, version=5))
    half = len(big_frame) // 2
    client = segment(requests) + segment(big_frame[:half], False) + segment(big_frame[half:], False)
    server = segment(frame(5, 1, 8, rows(), response=True) + frame(5, 2, 8, rows(), response=True)
                     + frame(5, 3, 0, error(0x2200, "unconfigured table nope"), response=True)
                     + frame(5, 4, 8, rows(), response=True))
    for side, data, ts in ((C, client, 30), (S, server, 40)):
        step = chunks_of or len(data)
        for i in range(0, len(data), step):
            out += p.feed(side, data[i:i + step], ts)
    return out


def test_v5_segments_after_ready_are_unwrapped():
    p = CassandraParser()
    recs = v5_session(p)
    names = [r.name for r in recs]
    assert names == ["STARTUP", "SELECT users", "INSERT carts", "SELECT nope", "SELECT orders"]
    err = recs[3]
    assert err.status == "ERROR" and err.attributes["db.response.status_code"] == "0x2200"
    assert recs[4].attributes["db.query.text"].startswith("SELECT * FROM shop.orders")
    assert p.stats["v5_segments"] == 4 and not p.stats.get("resyncs")


def test_v5_segments_split_anywhere_and_truncated_copies():
    whole = [r.name for r in v5_session(CassandraParser())]
    assert [r.name for r in v5_session(CassandraParser(), chunks_of=1)] == whole
    assert [r.name for r in v5_session(CassandraParser(), chunks_of=7)] == whole
    # The large frame's middle not copied (size > len(data)): skipped by length, pairing intact.
    p = CassandraParser()
    p.feed(C, frame(5, 0, 1, b"\x00\x00"), 1)
    p.feed(S, frame(5, 0, 2, response=True), 2)
    body = query("SELECT * FROM shop.big WHERE k = '" + "y" * 50_000 + "'", version=5)
    seg = segment(frame(5, 9, 7, body))
    assert p.feed(C, seg[:4000], 3, len(seg)) == []
    (rec,) = p.feed(S, segment(frame(5, 9, 8, rows(), response=True)), 4)
    assert rec.name == "SELECT big" and rec.status == "UNSET"


def test_v5_lost_segment_header_and_compressed_segments_are_counted_not_parsed():
    p = CassandraParser()
    p.feed(C, frame(5, 0, 1, b"\x00\x01\x00\x0bCOMPRESSION\x00\x03lz4"), 1)
    p.feed(S, frame(5, 0, 2, response=True), 2)
    compressed = (10 | (10 << 17)).to_bytes(5, "little") + b"\0\0\0" + b"z" * 10 + b"\0" * 4
    assert p.feed(C, compressed * 3, 3) == [] and p.stats["v5_compressed_segments"] == 3
    q = CassandraParser()
    q.feed(C, frame(5, 0, 1, b"\x00\x00"), 1)
    q.feed(S, frame(5, 0, 2, response=True), 2)
    seg = segment(frame(5, 1, 7, query("SELECT 1", version=5)))
    q.feed(C, seg[:2], 3, len(seg) + 50)  # the next segment's header was not copied
    assert q.feed(C, seg, 4) == [] and q.stats["v5_segments_lost"] == 1


def test_v5_garbage_segments_never_raise():
    import random

    rng = random.Random(5)
    for _ in range(300):
        p = CassandraParser()
        p.feed(C, frame(5, 0, 1, b"\x00\x00"), 1)
        p.feed(S, frame(5, 0, 2, response=True), 2)
        for side in (C, S, C):
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
            p.feed(side, data, 3, len(data) + rng.choice((0, 0, 5, 70_000)))
        p.close(4)
