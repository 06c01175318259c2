"""The agent's /metrics: parser problems per protocol (lost, garbled, overflow, unpaired), from the
counters real parsers keep on real bytes (a crafted pcap replayed through the pcap source)."""
from __future__ import annotations

from prometheus_client import generate_latest

from capture.config import AgentConfig
from capture.protocols import problems
from capture.sources.pcap import replay
from capture.store.factory import open_store
from guardian.agent_daemon import Agent
from tests.capture.sources.pcapwriter import PcapWriter


class _StatsSource:
    def __init__(self, stats: dict[str, int]) -> None:
        self._stats = stats

    def stats(self) -> dict[str, int]:
        return self._stats


def _memcached_pcap(path):
    w = PcapWriter(path, server=("10.0.0.2", 11211))
    w.handshake()
    w.tcp(w.client, b"get k\r\n")
    w.tcp(w.server, b"VALUE k 0 2\r\nhi\r\nEND\r\n")
    w.tcp(w.client, b"get a\r\nget b\r\n")
    w.tcp(w.server, b"\x00\x01garbage that is no reply\r\n")  # garbled: both waiting gets are dropped
    w.tcp(w.client, b"get c\r\n")  # never answered
    w.fin()
    return w.write()


def test_problems_per_protocol_reach_metrics(tmp_path):
    spans: list = []
    stats = replay(str(_memcached_pcap(tmp_path / "mc.pcap")), spans.extend)
    assert stats["pipeline.memcached.garbage"] == 1
    agent = Agent(AgentConfig(), open_store(None), _StatsSource(stats))
    text = generate_latest(agent.registry).decode()
    assert 'guardian_parser_problems_total{problem="garbled",protocol="memcached"} 1.0' in text
    unpaired = stats.get("pipeline.memcached.requests_without_response", 0) + \
        stats.get("pipeline.memcached.responses_without_request", 0)
    assert unpaired >= 1
    assert f'guardian_parser_problems_total{{problem="unpaired",protocol="memcached"}} {float(unpaired)}' in text
    # every protocol and kind exists from the start, at zero when nothing happened
    assert 'guardian_parser_problems_total{problem="overflow",protocol="kafka"} 0.0' in text
    assert 'guardian_parser_problems_total{problem="lost",protocol="memcached"} 0.0' in text


def test_counters_are_classified_and_open_and_closed_connections_add_up():
    assert problems.kind("lost_bytes") == "lost" and problems.kind("bad_frame") == "garbled"
    assert problems.kind("pending_overflow") == "overflow" and problems.kind("resyncs") is None
    got = problems.totals({"pipeline.redis.lost_bytes": 2, "parser.redis.lost_bytes": 3,
                           "parser.http2.hpack_table_capped": 1, "parser.dns.resyncs": 9, "kernel.truncated": 5})
    assert got[("redis", "lost")] == 5 and got[("http2", "overflow")] == 1
    assert got[("dns", "lost")] == 0 and set(k for _, k in got) == set(problems.PROBLEMS)
