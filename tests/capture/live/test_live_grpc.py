"""Live eBPF capture of gRPC over plaintext HTTP/2: a grpcio client and a grpcio server (C core).

C-core writes with sendmsg and many iovecs (frame headers, HPACK blocks and message slices apart, big
DATA slices in between): every HEADERS frame must reach the parser (bpf/guardian.bpf.c, iov_record)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from support.live import live_capture

pytestmark = pytest.mark.ebpf


@pytest.fixture(scope="module")
def traffic(grpc_server):
    port = grpc_server["port"]
    with live_capture(port=port, extra=("--no-tls",)) as cap:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            say = channel.unary_unary("/guardian.Echo/Say")
            fail = channel.unary_unary("/guardian.Echo/Fail")
            for i in range(10):
                assert say(b"hi-%d" % i, timeout=10) == b"echo:hi-%d" % i
            with ThreadPoolExecutor(8) as pool:  # concurrent calls share the connection: stream ids pair them
                assert all(pool.map(lambda i: say(b"x" * (i * 3000), timeout=10), range(8)))
            with pytest.raises(grpc.RpcError) as err:
                fail(b"?", timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    return cap


def test_every_call_is_one_client_span(traffic):
    mine = [s for s in traffic.spans if s["kind"] == "CLIENT" and s["resource"].get("process.pid") == os.getpid()]
    names = sorted(s["name"] for s in mine)
    assert names == ["guardian.Echo/Fail"] + ["guardian.Echo/Say"] * 18, traffic.stats
    for s in mine:
        a = s["attributes"]
        assert a["rpc.system"] == "grpc" and a["rpc.service"] == "guardian.Echo"
        assert a["network.protocol.version"] == "2" and a["http.request.method"] == "POST"
    fail = next(s for s in mine if s["name"] == "guardian.Echo/Fail")
    assert fail["status_code"] == "ERROR" and fail["attributes"]["rpc.grpc.status_code"] == 5
    assert fail["status_message"] == "no such thing"
    assert all(s["attributes"]["rpc.grpc.status_code"] == 0 and s["status_code"] == "UNSET"
               for s in mine if s["name"] == "guardian.Echo/Say")


def test_server_side_spans(traffic, grpc_server):
    server = [s for s in traffic.spans if s["kind"] == "SERVER"
              and s["resource"].get("process.pid") == grpc_server["pid"]]
    assert sorted(s["attributes"]["rpc.method"] for s in server) == ["Fail"] + ["Say"] * 18


def test_no_frame_is_lost(traffic):
    """Big DATA slices go up as uncopied length inside their frame: no resync, no HPACK damage."""
    lost = {k: v for k, v in traffic.stats.items() if k.startswith("pipeline.http2.") and v and k.rsplit(".", 1)[1]
            in ("lost_bytes", "garbage", "resyncs", "degraded_header_blocks", "responses_without_request")}
    assert lost == {}, traffic.stats
