"""Live eBPF capture of HTTP/2 in cleartext: a client multiplexing parallel requests over one
connection to nginx (h2c, prior knowledge), reading 16 KiB at a time as curl does. Responses
of many streams share each read, so frame headers sit far past the first record's 4 KiB and
must still reach the parser (bpf/guardian.bpf.c emit_chunked)."""
from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events
import pytest

from support.http_servers import nginx_server
from support.live import live_capture

pytestmark = pytest.mark.ebpf

N = 12
READ = 16384


def get_all(port: int, paths: list[str]) -> dict[int, str]:
    """GET every path at once on one connection; {stream id: status}."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    statuses: dict[int, str] = {}
    ended: set[int] = set()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn.initiate_connection()
        for path in paths:
            conn.send_headers(conn.get_next_available_stream_id(),
                              [(":method", "GET"), (":path", path), (":scheme", "http"),
                               (":authority", f"127.0.0.1:{port}")], end_stream=True)
        sock.sendall(conn.data_to_send())
        time.sleep(0.2)  # let the responses pile up: each read then holds frames of many streams
        while len(ended) < len(paths):
            data = sock.recv(READ)
            assert data, "nginx closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = dict(event.headers)[":status"]
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
            sock.sendall(conn.data_to_send())
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    return statuses


def test_parallel_streams_in_big_reads_are_all_spans():
    with nginx_server(http2=True) as (port, _):
        with live_capture(port=port) as cap:
            statuses = get_all(port, [f"/big.html?i={i}" for i in range(N)])  # 3 KiB each
            assert list(statuses.values()) == ["200"] * N
    for kind in ("CLIENT", "SERVER"):
        spans = [s for s in cap.spans if s["kind"] == kind]
        assert sorted(int(s["attributes"]["url.query"][2:]) for s in spans) == list(range(N)), (kind, cap.stats)
        assert all(s["attributes"]["http.response.status_code"] == 200 for s in spans)
    lost = {k: v for k, v in cap.stats.items() if k.startswith("pipeline.http2.") and v and k.rsplit(".", 1)[1]
            in ("lost_bytes", "garbage", "resyncs", "degraded_header_blocks", "responses_without_request")}
    assert lost == {}, cap.stats
