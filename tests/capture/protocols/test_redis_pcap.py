"""Redis through the pcap source: RESP3 pub/sub, a capture starting with a reply, plain commands."""

from capture.sources.pcap import replay
from tests.capture.sources.pcapwriter import CAPTURES



def spans_of(name):
    spans = []
    stats = replay(str(CAPTURES / "redis" / name), lambda b: spans.extend(s.to_dict() for s in b))
    return spans, stats


def test_resp3_pubsub():
    spans, _ = spans_of("zeek-pubsub-resp3.pcap")
    consumers = [(s["attributes"]["db.operation.name"], s["attributes"]["messaging.destination.name"])
                 for s in spans if s["kind"] == "CONSUMER"]
    assert consumers == [("MESSAGE", "Foo"), ("PMESSAGE", "Foo"), ("PMESSAGE", "Foobar")]
    ops = [s["name"] for s in spans if s["kind"] == "CLIENT"]
    assert ops.count("PUBLISH") == 2 and "SUBSCRIBE" in ops and "PSUBSCRIBE" in ops
    assert all(s["attributes"]["db.query.text"] == "HELLO ?" for s in spans if s["name"] == "HELLO")


def test_commands_and_mid_stream_start():
    spans, _ = spans_of("ndpi-resp.pcap")
    assert [s["name"] for s in spans] == ["COMMAND", "PING", "SET", "GET"]
    spans, stats = spans_of("zeek-start-with-server.pcapng")
    assert [s["name"] for s in spans] == ["SET"] and stats["pipeline.redis.responses_without_request"] == 1


def test_inline_pipelines_the_detector_skips_make_no_false_pairs():
    # inline (non-RESP) commands are not detected: the replies alone must not invent spans
    for name in ("zeek-excessive-pipelining.pcap", "zeek-pipeline-quotes.pcap", "zeek-pipelining-example.pcap"):
        spans, _ = spans_of(name)
        assert spans == [], name
