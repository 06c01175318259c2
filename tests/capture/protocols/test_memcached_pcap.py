"""Memcached and NATS through the pcap source."""

from capture.sources.pcap import replay
from tests.capture.sources.pcapwriter import CAPTURES



def spans_of(proto, name):
    spans = []
    stats = replay(str(CAPTURES / proto / name), lambda b: spans.extend(s.to_dict() for s in b))
    return spans, stats


def test_memcached_stats():
    spans, _ = spans_of("memcached", "ndpi-memcached.cap")
    assert [(s["name"], s["attributes"]["db.response.status_code"]) for s in spans] == [("stats", "END")]


def test_nats_connect_ping_pong():
    spans, stats = spans_of("nats", "ndpi-nats.pcap")
    assert [s["name"] for s in spans] == ["connect", "connect"]
    assert stats["pipeline.nats.ping"] == 3 and stats["pipeline.nats.pong"] == 3
