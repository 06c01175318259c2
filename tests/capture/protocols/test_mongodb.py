"""MongoDB parser, bytes only: OP_MSG, OP_QUERY/OP_REPLY, OP_COMPRESSED, pairing by id, errors, loss."""
import struct
import zlib

import bson

from capture.protocols.base import Side
from capture.protocols.mongodb import MongoParser, detect
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER


def op_msg(req_id, doc, response_to=0, flags=0, docs=None):
    body = struct.pack("<I", flags) + b"\x00" + bson.encode(doc)
    if docs:
        payload = b"documents\x00" + b"".join(bson.encode(d) for d in docs)
        body += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
    return struct.pack("<iiii", 16 + len(body), req_id, response_to, 2013) + body


def op_query(req_id, ns, doc):
    body = struct.pack("<i", 0) + ns.encode() + b"\x00" + struct.pack("<ii", 0, -1) + bson.encode(doc)
    return struct.pack("<iiii", 16 + len(body), req_id, 0, 2004) + body


def op_reply(req_id, response_to, doc, flags=0):
    body = struct.pack("<iqii", flags, 0, 0, 1) + bson.encode(doc)
    return struct.pack("<iiii", 16 + len(body), req_id, response_to, 1) + body


def compressed(msg, compressor=2):
    _n, req, to, op = struct.unpack_from("<iiii", msg)
    raw = msg[16:]
    data = zlib.compress(raw) if compressor == 2 else raw
    body = struct.pack("<iiB", op, len(raw), compressor) + data
    return struct.pack("<iiii", 16 + len(body), req, to, 2012) + body


def test_find_command_and_reply():
    p = MongoParser()
    assert p.feed(C, op_msg(7, {"find": "users", "filter": {"age": 3}, "$db": "shop"}), 100) == []
    (rec,) = p.feed(S, op_msg(900, {"cursor": {"firstBatch": [], "id": 0}, "ok": 1.0}, response_to=7), 350)
    assert rec.name == "find users" and rec.status == "UNSET" and (rec.start_ns, rec.end_ns) == (100, 350)
    a = rec.attributes
    assert (a["db.system"], a["db.operation.name"], a["db.collection.name"], a["db.namespace"]) == \
        ("mongodb", "find", "users", "shop")


def test_insert_with_document_sequence_and_duplicate_key_error():
    p = MongoParser()
    p.feed(C, op_msg(1, {"insert": "users", "ordered": True, "$db": "shop"}, docs=[{"_id": 1}]), 1)
    reply = {"n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000 duplicate key"}], "ok": 1.0}
    (rec,) = p.feed(S, op_msg(2, reply, response_to=1), 2)
    assert rec.status == "ERROR" and rec.attributes["db.response.status_code"] == "11000"
    assert rec.status_message == "E11000 duplicate key"


def test_command_failure_ok_zero():
    p = MongoParser()
    p.feed(C, op_msg(3, {"drop": "nope", "$db": "shop"}), 1)
    (rec,) = p.feed(S, op_msg(4, {"ok": 0.0, "errmsg": "ns not found", "code": 26, "codeName": "NamespaceNotFound"},
                               response_to=3), 2)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "NamespaceNotFound"
    assert rec.attributes["db.response.status_code"] == "26"


def test_concurrent_requests_pair_by_response_to():
    p = MongoParser()
    p.feed(C, op_msg(10, {"find": "a", "$db": "d"}) + op_msg(11, {"count": "b", "$db": "d"}), 1)
    (r1,) = p.feed(S, op_msg(50, {"n": 3, "ok": 1}, response_to=11), 2)
    (r2,) = p.feed(S, op_msg(51, {"cursor": {}, "ok": 1}, response_to=10), 3)
    assert (r1.name, r2.name) == ("count b", "find a")


def test_more_to_come_needs_no_reply():
    p = MongoParser()
    (rec,) = p.feed(C, op_msg(5, {"insert": "logs", "$db": "d", "writeConcern": {"w": 0}}, flags=2), 1)
    assert rec.name == "insert logs" and rec.status == "UNSET"


def test_legacy_op_query_and_op_reply():
    p = MongoParser()
    p.feed(C, op_query(20, "admin.$cmd", {"isMaster": 1}), 1)
    (rec,) = p.feed(S, op_reply(21, 20, {"ismaster": True, "ok": 1.0}), 2)
    assert rec.name == "isMaster" and rec.attributes["db.namespace"] == "admin"
    p.feed(C, op_query(22, "shop.users", {"name": "x"}), 3)
    (rec,) = p.feed(S, op_reply(23, 22, {"$err": "bad query", "code": 2}, flags=2), 4)
    assert rec.name == "find users" and rec.status == "ERROR" and rec.status_message == "bad query"


def test_op_compressed_zlib_and_noop():
    p = MongoParser()
    p.feed(C, compressed(op_msg(30, {"aggregate": "orders", "pipeline": [], "$db": "shop"})), 1)
    (rec,) = p.feed(S, compressed(op_msg(31, {"ok": 1.0}, response_to=30), compressor=0), 2)
    assert rec.name == "aggregate orders"


def test_split_header_truncated_body_and_gap_resync():
    p = MongoParser()
    big = op_msg(40, {"insert": "blobs", "$db": "d"}, docs=[{"b": b"x" * 20000}])
    p.feed(C, big[:4], 1)  # the length alone
    p.feed(C, big[4:4096], 2, size=len(big) - 4)  # a copied prefix of the rest
    (rec,) = p.feed(S, op_msg(41, {"n": 1, "ok": 1}, response_to=40), 3)
    assert rec.name == "insert blobs" and rec.start_ns == 1
    # bytes lost across a message boundary: resync at the next chunk that starts a message
    p.feed(C, b"", 4, size=100)
    assert p.feed(C, b"\x01\x02 not a header at all", 5) == []
    p.feed(C, op_msg(42, {"ping": 1, "$db": "admin"}), 6)
    (rec,) = p.feed(S, op_msg(43, {"ok": 1}, response_to=42), 7)
    assert rec.name == "ping" and p.stats["resyncs"] == 1


def test_truncated_command_document_still_names_the_command():
    p = MongoParser()
    msg = op_msg(60, {"update": "users", "updates": [{"q": {}, "u": {"$set": {"v": "y" * 5000}}}], "$db": "d"})
    p.feed(C, msg[:48], 1, size=len(msg))
    (rec,) = p.feed(S, op_msg(61, {"ok": 1, "n": 1}, response_to=60), 2)
    assert rec.name == "update users"


def test_unanswered_request_on_close_and_stray_reply():
    p = MongoParser()
    assert p.feed(S, op_msg(70, {"ok": 1}, response_to=999), 1) == []
    p.feed(C, op_msg(71, {"find": "x", "$db": "d"}), 2)
    (rec,) = p.close(5)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "no_response"
    assert p.stats["responses_without_request"] == 1


def test_detect():
    assert detect(op_msg(1, {"hello": 1, "$db": "admin"})) == C
    assert detect(op_msg(2, {"ok": 1}, response_to=1)) == S
    assert detect(op_query(1, "admin.$cmd", {"isMaster": 1})) == C
    assert detect(op_reply(2, 1, {"ok": 1})) == S
    assert detect(compressed(op_msg(1, {"ping": 1}))) == C
    assert random_match_rate(detect) < 0.001
    assert other_protocol_matches(detect) == []


def bench_sample():
    """One find command and its cursor reply (bench/parsers.py)."""
    return [(C, op_msg(7, {"find": "users", "filter": {"_id": 3}, "$db": "shop", "lsid": {"id": b"0" * 16}})),
            (S, op_msg(8, {"cursor": {"firstBatch": [{"_id": 3, "name": "ada"}], "id": 0, "ns": "shop.users"},
                           "ok": 1.0}, response_to=7))], 1


def test_recorded_captures_and_the_false_positive():
    from capture.sources.pcap import replay
    from tests.capture.sources.pcapwriter import CAPTURES
    spans = []
    stats = replay(str(CAPTURES / "mongodb" / "ndpi-mongodb.pcap"), lambda b: spans.extend(s.to_dict() for s in b))
    # legacy OP_QUERY commands; the capture holds no replies
    assert sorted(s["name"] for s in spans) == ["getnonce", "isMaster", "isMaster", "ismaster"]
    assert {s["attributes"]["db.namespace"] for s in spans} == {"admin", "abtest"}
    assert stats["pcap.flows.MONGODB"] == 4
    fp = []
    stats = replay(str(CAPTURES / "mongodb" / "ndpi-mongo_false_positive.pcapng"), fp.extend)
    assert fp == [] and "pcap.flows.MONGODB" not in stats


def test_hostile_section_sizes_and_short_compressed_header_do_not_hang_or_raise():
    # A kind-1 section of size -1 (or 0) would never advance the section walk.
    for size in (-1, 0, 3, 4):
        body = struct.pack("<I", 0) + b"\x01" + struct.pack("<i", size) + b"docs\x00"
        msg = struct.pack("<iiii", 16 + len(body), 7, 0, 2013) + body
        p = MongoParser()
        assert p.feed(C, msg, 1) == []
        (r,) = p.feed(S, op_msg(8, {"ok": 1}, response_to=7), 2)
        assert r.status == "UNSET"
    # An OP_COMPRESSED header announcing 25+ bytes but only 21 of them captured.
    short = struct.pack("<iiii", 40, 1, 0, 2012) + b"\x00" * 5
    assert detect(short) is None


def test_awaitable_hello_unanswered_at_close_is_not_an_error():
    def msg(req_id, doc):
        body = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
        return struct.pack("<iiii", 16 + len(body), req_id, 0, 2013) + body

    p = MongoParser()
    p.feed(Side.CLIENT, msg(1, {"hello": 1, "topologyVersion": {"counter": 0}, "maxAwaitTimeMS": 10000,
                                "$db": "admin"}), 1)
    p.feed(Side.CLIENT, msg(2, {"find": "users", "$db": "shop"}), 2)
    awaited, lost = sorted(p.close(9), key=lambda r: r.start_ns)
    assert awaited.name == "hello" and awaited.status == "UNSET" and awaited.attributes["mongodb.awaited"] is True
    assert lost.status == "ERROR" and lost.attributes["error.type"] == "no_response"
