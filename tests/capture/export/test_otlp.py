"""OTLP export through the SDK exporters to real receivers (gRPC and HTTP) that decode it."""
from __future__ import annotations

import socket

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from capture.config import ExportConfig
from capture.export.otlp import from_config
from capture.span import Span
from tests.capture.export.receivers import GrpcReceiver, HttpReceiver

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def sample() -> list[Span]:
    root = Span(name="GET /checkout", kind="SERVER", start_time_unix_nano=T0, end_time_unix_nano=T0 + 30 * MS,
                status_code="ERROR", status_message="HTTP 503",
                attributes={"http.request.method": "GET", "http.response.status_code": 503,
                            "url.path": "/checkout", "thread.id": 77},
                resource={"service.name": "frontend", "process.pid": 42, "k8s.pod.name": "fe-1"})
    child = Span(name="SELECT", kind="CLIENT", start_time_unix_nano=T0 + MS, end_time_unix_nano=T0 + 9 * MS,
                 trace_id=root.trace_id, parent_span_id=root.span_id, status_code="OK",
                 attributes={"db.system": "postgresql", "db.query.text": "SELECT 1"},
                 resource={"service.name": "frontend", "process.pid": 42, "k8s.pod.name": "fe-1"})
    return [root, child]


def check_spans(got, spans: list[Span]) -> None:
    received = {sp.span_id.hex(): (res, sp) for res, sp in got.spans()}
    assert set(received) == {s.span_id for s in spans}
    for s in spans:
        res, sp = received[s.span_id]
        assert sp.trace_id.hex() == s.trace_id and sp.name == s.name
        assert (sp.parent_span_id.hex() or None) == s.parent_span_id
        assert sp.start_time_unix_nano == s.start_time_unix_nano and sp.end_time_unix_nano == s.end_time_unix_nano
        assert trace_pb2.Span.SpanKind.Name(sp.kind) == "SPAN_KIND_" + s.kind
        assert res["service.name"].string_value == "frontend" and res["process.pid"].int_value == 42
        attrs = {kv.key: kv.value for kv in sp.attributes}
        if s.kind == "SERVER":
            assert attrs["http.response.status_code"].int_value == 503
            assert sp.status.code == trace_pb2.Status.STATUS_CODE_ERROR and sp.status.message == "HTTP 503"
        else:
            assert attrs["db.query.text"].string_value == "SELECT 1"


def red_points(got) -> dict:
    names = got.metric_names()
    assert "guardian.requests" in names and "guardian.request.duration" in names
    counts = {}
    for m in names["guardian.requests"]:
        for p in m.sum.data_points:
            attrs = {kv.key: kv.value.string_value for kv in p.attributes}
            counts[(attrs["service.name"], attrs["span.name"], attrs["status_code"])] = p.as_int
    hist = [p for m in names["guardian.request.duration"] for p in m.histogram.data_points]
    assert hist and hist[0].count == 1 and hist[0].sum == pytest.approx(0.030)
    return counts


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_and_red_metrics_reach_a_real_receiver(protocol):
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    with receiver:
        endpoint = (f"127.0.0.1:{receiver.port}" if protocol == "grpc"
                    else f"http://127.0.0.1:{receiver.port}")
        sink = from_config(ExportConfig(otlp_endpoint=endpoint, otlp_protocol=protocol,
                                        otlp_headers={"x-tenant": "shop"}, metrics_interval_s=60))
        spans = sample()
        sink.submit(spans)
        sink.close()  # sends the queue, flushes the metrics
        assert receiver.got.event.is_set()
        check_spans(receiver.got, spans)
        assert receiver.got.headers[0]["x-tenant"] == "shop"
        assert red_points(receiver.got) == {("frontend", "GET /checkout", "ERROR"): 1}
        assert sink.exported == 2 and sink.failed == 0 and sink.dropped == 0


def test_unreachable_endpoint_counts_failures_without_raising():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = from_config(ExportConfig(otlp_endpoint=f"http://127.0.0.1:{port}", otlp_protocol="http",
                                    metrics=False, timeout_s=1))
    sink.submit(sample())
    sink.close()
    assert sink.exported == 0 and sink.failed == 2


def test_no_endpoint_no_sink():
    assert from_config(ExportConfig()) is None


def test_a_collector_that_does_not_answer_holds_at_most_max_spans():
    """Batches wait for a stuck collector bounded in spans (each is a Python object), the rest dropped, counted."""
    with socket.socket() as s:  # listens, never answers: every export waits for its timeout
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        sink = from_config(ExportConfig(otlp_endpoint=f"http://127.0.0.1:{s.getsockname()[1]}",
                                        otlp_protocol="http", metrics=False, timeout_s=1))
        sink.max_spans = 5
        for _ in range(5):
            sink.submit(sample())  # 2 spans each
        assert (sink.queued_spans, sink.dropped) == (4, 6)
        sink.close()
    assert sink.queued_spans == 0 and sink.failed == 4
