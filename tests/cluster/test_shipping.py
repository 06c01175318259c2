"""Agent -> hub over real OTLP (gRPC and HTTP/protobuf): spans arrive intact in the hub's store;
a hub that is down or rejecting loses nothing (on-disk queue, retries) and never blocks submit;
malformed OTLP gets the OTLP error status and is counted."""
from __future__ import annotations

import gzip
import socket
import time

import grpc
import httpx
import pytest
from google.rpc import code_pb2, status_pb2

from capture.export.otlp_proto import decode, encode
from capture.export.shipper import GRPC_METHOD, Shipper, make_transport
from capture.span import Span
from capture.store.factory import open_store
from guardian.hub.hub import Hub, HubMetrics
from tests.capture.export.test_otlp import sample

MS = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spans(n: int, t0: int = 1_700_000_000_000_000_000) -> list[Span]:
    res = {"service.name": "api", "host.name": "node-a", "process.pid": 7}
    return [Span(name=f"GET /item/{i % 13}", kind="SERVER", start_time_unix_nano=t0 + i * MS,
                 end_time_unix_nano=t0 + i * MS + 500_000, status_code="ERROR" if i % 9 == 0 else "OK",
                 attributes={"http.response.status_code": 500 if i % 9 == 0 else 200, "n": i,
                             "ratio": 0.5, "ok": True, "tags": ["a", "b"]},
                 resource=res) for i in range(n)]


def wait_for(cond, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def endpoint(hub: Hub, protocol: str) -> str:
    return f"127.0.0.1:{hub.grpc.port}" if protocol == "grpc" else f"http://127.0.0.1:{hub.http.port}"


def test_encode_decode_round_trip():
    sent = sample() + spans(3)
    got, rejected = decode(encode(sent))
    assert rejected == 0
    assert [s.to_dict() for s in got] == [s.to_dict() for s in sent]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("store_url", [None, "chdb://"])
def test_spans_reach_the_hub_store(protocol, store_url, tmp_path):
    store = open_store(store_url)
    hub = Hub(store, "127.0.0.1", 0, 0).start()
    try:
        sent = spans(5000) + sample()
        root = sent[-2]
        ship = Shipper(make_transport(endpoint(hub, protocol), protocol), str(tmp_path / "q"),
                       batch_spans=1000, flush_s=0.1)
        for i in range(0, len(sent), 700):
            ship.submit(sent[i:i + 700])
        ship.close(timeout_s=20)
        assert ship.exported == len(sent) and ship.dropped == 0 and ship.queued() == 0
        assert hub.ingest.drain(20)
        assert store.count() == len(sent)
        [back] = [s for s in store.trace(root.trace_id) if s.span_id == root.span_id]
        assert back.to_dict() == root.to_dict()
        assert not list((tmp_path / "q").glob("*.otlp"))  # sent batches leave the disk
    finally:
        hub.stop()
        store.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_hub_down_then_up_loses_nothing_and_submit_never_blocks(protocol, tmp_path):
    port = free_port()
    ep = f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"
    ship = Shipper(make_transport(ep, protocol, timeout_s=2), str(tmp_path / "q"), batch_spans=2000,
                   flush_s=0.2, backoff_s=(0.05, 0.5), max_intake_spans=20_000)
    sent = spans(40_000)
    slowest = 0.0
    for i in range(0, len(sent), 1000):  # 40k spans into a closed port
        t = time.perf_counter()
        ship.submit(sent[i:i + 1000])
        slowest = max(slowest, time.perf_counter() - t)
        time.sleep(0.01)
    assert slowest < 0.05  # the capture side never waits on the network
    assert wait_for(lambda: ship.spool.spans == 40_000)
    assert ship.exported == 0 and ship.failed > 0 and ship.dropped == 0
    assert ship._intake_spans == 0  # memory holds nothing: the backlog is on disk
    store = open_store(None)
    hub = Hub(store, "127.0.0.1", port if protocol == "grpc" else None,
              port if protocol == "http" else None).start()
    try:
        assert wait_for(lambda: ship.exported == 40_000, 30)
        assert hub.ingest.drain(20) and store.count() == 40_000
        assert len({s.span_id for s in store.spans(_all())}) == 40_000
    finally:
        ship.close(5)
        hub.stop()
        store.close()


def _all():
    from capture.store.api import SpanFilter

    return SpanFilter(limit=100_000)


def test_spool_survives_an_agent_restart(tmp_path):
    port = free_port()
    ship = Shipper(make_transport(f"http://127.0.0.1:{port}", "http", timeout_s=1), str(tmp_path / "q"),
                   flush_s=0.05, backoff_s=(0.05, 0.2))
    ship.submit(spans(300))
    assert wait_for(lambda: ship.spool.spans == 300)
    ship.close(timeout_s=0.5)
    assert len(list((tmp_path / "q").glob("*.otlp"))) == 1
    store = open_store(None)
    hub = Hub(store, "127.0.0.1", None, port).start()
    try:
        again = Shipper(make_transport(f"http://127.0.0.1:{port}", "http"), str(tmp_path / "q"))
        assert wait_for(lambda: again.exported == 300)
        again.close()
        assert hub.ingest.drain(10) and store.count() == 300
    finally:
        hub.stop()
        store.close()


class _Rejecting:
    """A transport in front of a hub that answers every batch with HTTP 400 until told not to."""

    def __init__(self, real):
        self.real, self.reject, self.timeout_s = real, True, 1.0

    def send(self, body):
        from capture.export.shipper import Outcome

        return Outcome("rejected", "HTTP 400") if self.reject else self.real.send(body)

    def close(self):
        self.real.close()


def test_rejected_batches_stay_queued_and_metrics_say_so(tmp_path):
    store = open_store(None)
    hub = Hub(store, "127.0.0.1", None, 0).start()
    t = _Rejecting(make_transport(f"http://127.0.0.1:{hub.http.port}", "http"))
    ship = Shipper(t, str(tmp_path / "q"), flush_s=0.05, backoff_s=(0.05, 0.2))
    try:
        ship.submit(spans(500))
        assert wait_for(lambda: ship.rejected >= 500)
        assert ship.rejecting and ship.queued() == 500 and ship.exported == 0
        assert ship.gauges()["guardian_agent_export_rejecting"][1] == 1
        assert ship.counters()["guardian_agent_export_rejected_spans"][1] >= 500
        t.reject = False
        assert wait_for(lambda: ship.exported == 500)
        assert not ship.rejecting and ship.queued() == 0
    finally:
        ship.close()
        hub.stop()
        store.close()


def test_malformed_otlp_gets_the_error_status_and_is_counted():
    store = open_store(None)
    hub = Hub(store, "127.0.0.1", 0, 0).start()
    try:
        url = f"http://127.0.0.1:{hub.http.port}/v1/traces"
        h = {"Content-Type": "application/x-protobuf"}
        r = httpx.post(url, content=b"\xff\xff\xff garbage", headers=h)
        assert r.status_code == 400
        assert status_pb2.Status.FromString(r.content).code == code_pb2.INVALID_ARGUMENT
        r = httpx.post(url, content=b"\x1f\x8b not gzip", headers={**h, "Content-Encoding": "gzip"})
        assert r.status_code == 400
        assert httpx.post(url, content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
        # Spans with bad ids are refused inside an accepted request (partial success).
        good = spans(2)
        body = encode(good)
        bad = encode([Span(name="x", kind="SERVER", start_time_unix_nano=1, end_time_unix_nano=2,
                           trace_id="00" * 4, span_id="11" * 8)])
        r = httpx.post(url, content=gzip.compress(body + bad), headers={**h, "Content-Encoding": "gzip"})
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        assert r.status_code == 200
        assert ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans == 1
        with grpc.insecure_channel(f"127.0.0.1:{hub.grpc.port}") as ch:
            call = ch.unary_unary(GRPC_METHOD, request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
            with pytest.raises(grpc.RpcError) as e:
                call(b"\xff\xff\xff garbage", timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert hub.ingest.malformed == 4 and hub.ingest.rejected == 1
        assert hub.ingest.drain(10) and store.count() == 2
        names = {m.name: m.samples[0].value for m in HubMetrics(hub).collect()}
        assert names["guardian_hub_malformed_requests"] == 4
        assert names["guardian_hub_spans_rejected"] == 1
    finally:
        hub.stop()
        store.close()
