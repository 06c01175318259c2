"""Live eBPF capture against the pcap of the same traffic: tcpdump records while `guardian capture`
runs, the clients of the truth recordings do their work, and the live CLIENT spans must equal the
spans the pcap source makes of the tcpdump file, connection by connection (count, operations, status).
The pcap side is itself compared with tshark in the other truth tests.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from capture.sources.pcap import replay
from support.live import live_capture
from support.servers import memcached_instance, redis_instance
from tests.captures.truth import clients
from tests.captures.truth.record import redis_work, tcpdump

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]


def _ops(spans: list[dict]) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for s in spans:
        a = s["attributes"]
        out[str(a.get("client.port"))][(s["kind"], s["name"], s["status_code"])] += 1
    return dict(out)


def _live_and_pcap(tmp_path, server, work, attempts: int = 3):
    """The work done once under both recorders; again (a fresh server and capture) when tcpdump,
    the oracle, lost packets on a busy host: its recording must be whole to compare with."""
    pcap = tmp_path / "same.pcap"
    for attempt in range(attempts):
        try:
            with server() as srv:
                with live_capture(port=srv["port"], extra=("--no-tls",)) as cap:
                    with tcpdump(pcap, srv["port"]):
                        work(srv)
            break
        except RuntimeError as e:
            if "tcpdump lost packets" not in str(e) or attempt == attempts - 1:
                raise
    recorded: list = []
    replay(str(pcap), recorded.extend)
    # on loopback the capture sees both ends: the pcap's spans are the client processes' (the SYN sender)
    live = [s for s in cap.spans if s["resource"].get("process.pid") != srv["pid"]]
    return live, [s.to_dict() for s in recorded], cap


def test_live_memcached_equals_its_pcap(tmp_path):
    live, recorded, cap = _live_and_pcap(tmp_path, memcached_instance, lambda srv: clients.memcached_work(srv["port"]))
    assert len(recorded) == 16  # 10 text + 6 binary exchanges (the unknown command is not one)
    assert _ops(live) == _ops(recorded), cap.stats


def test_live_redis_equals_its_pcap(tmp_path):
    live, recorded, cap = _live_and_pcap(tmp_path, redis_instance,
                                         lambda srv: redis_work(srv["port"], srv["password"]))
    assert len(recorded) > 150  # redis-py's work and redis-benchmark's pipelines

    def total(spans):
        return sum(_ops(spans).values(), Counter())

    # count and operations over every client connection; not connection by connection: the live
    # capture can give a short-lived connection's spans the 4-tuple of the next connection its
    # process opens on the same fd (redis-benchmark's CONFIG GET connection; docs/protocol-truth.md)
    assert total(live) == total(recorded), cap.stats
