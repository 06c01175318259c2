"""Kafka parser, bytes only: correlation-id pairing, Produce/Fetch/Metadata bodies, flexible headers,
acks=0, errors, split and truncated messages, garbage; plus the recorded capture."""
import struct

import pytest

from capture.protocols.base import Side
from capture.protocols.kafka import KafkaParser, detect
from capture.sources.pcap import replay
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate
from tests.capture.sources.pcapwriter import CAPTURES

C, S = Side.CLIENT, Side.SERVER


def s16(s):
    return struct.pack(">h", -1) if s is None else struct.pack(">h", len(s)) + s.encode()


def req(key, ver, corr, body, client="guardian-test", flex=False):
    msg = struct.pack(">hhi", key, ver, corr) + s16(client) + (b"\0" if flex else b"") + body
    return struct.pack(">i", len(msg)) + msg


def resp(corr, body, flex=False):
    msg = struct.pack(">i", corr) + (b"\0" if flex else b"") + body
    return struct.pack(">i", len(msg)) + msg


def batch(n_records=2, payload=b"r" * 20):
    tail = struct.pack(">ibihiqqqhii", 0, 2, 0, 0, n_records - 1, 0, 0, -1, -1, -1, n_records) + payload
    return struct.pack(">qi", 0, len(tail)) + tail


def produce_req(corr, topic="orders", acks=1, records=None):
    records = batch() if records is None else records
    body = s16(None) + struct.pack(">hi", acks, 1000) + struct.pack(">i", 1) + s16(topic) + struct.pack(">i", 1) \
        + struct.pack(">i", 0) + struct.pack(">i", len(records)) + records
    return req(0, 3, corr, body)


def produce_resp(corr, topic="orders", error=0):
    body = struct.pack(">i", 1) + s16(topic) + struct.pack(">i", 1) + struct.pack(">ihqq", 0, error, 42, -1) \
        + struct.pack(">i", 0)
    return resp(corr, body)


def metadata_req(corr, topic):
    return req(3, 1, corr, struct.pack(">i", 1) + s16(topic))


def metadata_resp(corr, topic, error=0):
    brokers = struct.pack(">i", 1) + struct.pack(">i", 1) + s16("127.0.0.1") + struct.pack(">i", 9092) + s16(None)
    topics = struct.pack(">i", 1) + struct.pack(">h", error) + s16(topic) + b"\0" + struct.pack(">i", 0)
    return resp(corr, brokers + struct.pack(">i", 1) + topics)


def fetch_req(corr, topic):
    body = struct.pack(">iiiib", -1, 500, 1, 1 << 20, 0) + struct.pack(">i", 1) + s16(topic) \
        + struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, 1 << 20)
    return req(1, 4, corr, body)


def fetch_resp(corr, topic, records, error=0):
    part = struct.pack(">ihqq", 0, error, 10, 10) + struct.pack(">i", -1) + struct.pack(">i", len(records)) + records
    return resp(corr, struct.pack(">i", 0) + struct.pack(">i", 1) + s16(topic) + struct.pack(">i", 1) + part)


def test_produce_pairs_by_correlation_id():
    p = KafkaParser()
    p.feed(C, produce_req(7), 100)
    (rec,) = p.feed(S, produce_resp(7), 400)
    a = rec.attributes
    assert rec.name == "Produce orders" and (rec.start_ns, rec.end_ns) == (100, 400) and rec.status == "UNSET"
    assert (a["messaging.system"], a["messaging.operation.type"], a["messaging.destination.name"],
            a["messaging.destination.partition.id"], a["messaging.batch.message_count"],
            a["messaging.client.id"]) == ("kafka", "publish", "orders", "0", 2, "guardian-test")


def test_produce_error_code():
    p = KafkaParser()
    p.feed(C, produce_req(1, topic="missing"), 1)
    (rec,) = p.feed(S, produce_resp(1, topic="missing", error=3), 2)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "UNKNOWN_TOPIC_OR_PARTITION"
    assert rec.attributes["kafka.error_code"] == 3


def test_acks_zero_needs_no_response():
    p = KafkaParser()
    (rec,) = p.feed(C, produce_req(5, acks=0), 1)
    assert rec.name == "Produce orders" and rec.status == "UNSET"
    assert p.close(2) == []


def test_pipelined_requests_answered_out_of_order():
    p = KafkaParser()
    p.feed(C, metadata_req(10, "a") + fetch_req(11, "b"), 1)
    (r1,) = p.feed(S, fetch_resp(11, "b", batch(3)), 2)
    (r2,) = p.feed(S, metadata_resp(10, "a", error=5), 3)
    assert (r1.name, r1.attributes["messaging.operation.type"], r1.attributes["messaging.batch.message_count"]) == \
        ("Fetch b", "receive", 3)
    assert (r2.name, r2.status, r2.attributes["error.type"]) == ("Metadata a", "ERROR", "LEADER_NOT_AVAILABLE")


def test_flexible_api_versions_v3_and_its_v0_response_header():
    p = KafkaParser()
    body = b"\x08kafkapy\x063.0.0\x00"  # compact strings + tagged fields
    p.feed(C, req(18, 3, 2, body, client="kafka-python", flex=True), 1)
    (rec,) = p.feed(S, resp(2, struct.pack(">h", 35) + b"\x01\x00\x00\x00\x00\x00"), 2)
    assert rec.name == "ApiVersions" and rec.attributes["error.type"] == "UNSUPPORTED_VERSION"
    assert rec.attributes["kafka.api.version"] == 3


def test_length_written_alone_and_truncated_body():
    p = KafkaParser()
    big = produce_req(3, records=batch(1, b"z" * 50000))
    p.feed(C, big[:4], 1)
    p.feed(C, big[4:4100], 2, size=len(big) - 4)
    (rec,) = p.feed(S, produce_resp(3), 3)
    assert rec.name == "Produce orders" and rec.start_ns == 1 and rec.attributes["messaging.batch.message_count"] == 1


def test_garbage_lost_bytes_and_resync():
    p = KafkaParser()
    assert p.feed(S, produce_resp(99), 1) == []  # answer to a request sent before we started
    p.feed(C, b"", 2, size=300)  # lost: resync on the next request
    assert p.feed(C, b"\xff\xff\xff\xff garbage", 3) == []
    p.feed(C, metadata_req(4, "t"), 4)
    (rec,) = p.feed(S, metadata_resp(4, "t"), 5)
    assert rec.name == "Metadata t" and p.stats["responses_without_request"] == 1


def test_unanswered_on_close():
    p = KafkaParser()
    p.feed(C, metadata_req(4, "t"), 4)
    (rec,) = p.close(5)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "no_response"


def test_detect():
    assert detect(produce_req(1)) == C
    assert detect(req(18, 3, 2, b"\x00", client="x", flex=True)) == C
    # a response is size + correlation id: with a large id it is not claimed (with a small one it
    # can look like a request; the kernel decides on a connection's first message, a request)
    assert detect(produce_resp(0x12345678)) is None
    assert random_match_rate(detect) < 0.001
    assert other_protocol_matches(detect) == []


def test_recorded_capture():
    spans = []
    replay(str(CAPTURES / "kafka" / "ndpi-kafka.pcapng"), lambda b: spans.extend(s.to_dict() for s in b))
    names = [s["name"] for s in spans]
    assert names.count("Produce LB_MAIN_LOG_INPUT") == 2 and "Produce sampleTopic" in names
    assert "Metadata sampleTopic" in names and "InitProducerId" in names
    produce = [s for s in spans if s["name"] == "Produce sampleTopic"][0]["attributes"]
    assert (produce["kafka.api.version"], produce["messaging.client.id"], produce["server.port"]) == \
        (9, "console-producer", 9092)
    assert all(s["status_code"] == "UNSET" for s in spans if s["attributes"].get("error.type") != "no_response")


def bench_sample():
    """One Produce of a two-record batch and its response (bench/parsers.py)."""
    return [(C, produce_req(1)), (S, produce_resp(1))], 1
