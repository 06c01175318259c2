"""Importers: the Collector file exporter's OTLP JSON lines, and CSV with a column mapping."""
from __future__ import annotations

import io
import os

import pytest
from google.protobuf import json_format

from capture.importers.csv_traces import parse_mapping, read_csv, to_ns
from capture.importers.load import detect_format, read_spans
from capture.importers.otlp_json import read_otlp_json
from capture.span import Span
from capture.store.api import TimeWindow
from capture.store.factory import open_store

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
CSV_MAP = ["trace_id=TraceID,span_id=SpanID,parent_id=ParentID,service=Svc,operation=Endpoint",
           "start=Timestamp", "duration=DurationMs", "status=HttpStatus"]


def test_collector_file_format():
    spans = list(read_spans(os.path.join(FIX, "collector.jsonl")))
    assert [s.span_id for s in spans] == ["eee19b7ec3c1b174", "0a1b2c3d4e5f6071", "1111222233334444"]
    root, client, server = spans
    assert root.trace_id == "5b8efff798038103d269b633813fc60c" and root.parent_span_id is None
    assert (root.kind, client.kind, server.kind) == ("SERVER", "CLIENT", "SERVER")
    assert root.status_code == "ERROR" and root.status_message == "bad gateway"
    assert client.status_code == "ERROR" and server.parent_span_id == client.span_id
    assert root.attributes == {"http.request.method": "GET", "http.response.status_code": 502,
                               "retry": True, "weights": [0.5, 1.5]}
    assert root.resource == {"service.name": "frontend", "k8s.pod.name": "frontend-6c9d-x1"}
    assert root.duration_ns == 120_000_000 and server.service == "payments"


def test_sdk_encoded_request_with_base64_ids_round_trips():
    """A request encoded by the SDK's own OTLP encoder, as protobuf's JSON mapping writes it."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from capture.export.otlp import to_readable

    original = Span(name="SELECT", kind="CLIENT", start_time_unix_nano=5, end_time_unix_nano=9,
                    attributes={"db.system": "postgresql", "rows": 3},
                    resource={"service.name": "orders"}, parent_span_id="00f067aa0ba902b7")
    line = json_format.MessageToJson(encode_spans([to_readable(original)]), indent=None)
    [back] = read_otlp_json(io.StringIO(line))
    assert back.to_dict() == original.to_dict()


def test_bad_json_line_is_reported_with_its_number():
    with pytest.raises(ValueError, match="line 2"):
        list(read_otlp_json(io.StringIO('{"resourceSpans": []}\n{oops\n')))


def test_csv_with_mapping_and_inferred_kinds():
    got = list(read_spans(os.path.join(FIX, "spans.csv"), mapping=parse_mapping(CSV_MAP)))
    assert len(got) == 5
    gw, orders, cart, gw2, orders2 = got
    assert gw.start_time_unix_nano == to_ns("2024-05-01T10:00:00Z") == 1714557600 * 10**9
    assert orders.start_time_unix_nano - gw.start_time_unix_nano == 10_000_000
    assert orders.duration_ns == 100_000_000
    assert orders.parent_span_id == gw.span_id and orders.trace_id == gw.trace_id != gw2.trace_id
    assert (gw.kind, orders.kind, cart.kind) == ("SERVER", "SERVER", "INTERNAL")
    assert (gw2.status_code, orders2.status_code, gw.status_code) == ("ERROR", "ERROR", "OK")
    assert orders.attributes == {"region": "eu"} and orders.service == "orders"
    assert len(gw.trace_id) == 32 and len(gw.span_id) == 16


def test_csv_errors_are_clear():
    with pytest.raises(ValueError, match="no column 'Svc'"):
        read_csv(io.StringIO("trace_id,span_id,Svc2\n"), {"service": "Svc"})
    with pytest.raises(ValueError, match="bad mapping"):
        parse_mapping(["colour=red"])
    assert to_ns("1700000000") == 1700000000 * 10**9 and to_ns("1700000000123") == 1700000000123 * 10**6


def test_detect_format(tmp_path):
    p = tmp_path / "dump"
    p.write_text('{"resourceSpans": []}\n')
    assert detect_format(str(p)) == "otlp-json"
    assert detect_format(os.path.join(FIX, "spans.csv")) == "csv"


def test_imported_traces_answer_store_queries():
    store = open_store()
    store.append(read_spans(os.path.join(FIX, "spans.csv"), mapping=parse_mapping(CSV_MAP)))
    win = TimeWindow(to_ns("2024-05-01T10:00:00Z"), to_ns("2024-05-01T10:00:05Z"))
    red = {r.service: r for r in store.red(win)}
    assert red["orders"].count == 2 and red["orders"].errors == 1
    assert [(e.client, e.server, e.count) for e in store.service_map(win)] == [("gateway", "orders", 2)]
    first = next(iter(read_spans(os.path.join(FIX, "spans.csv"), mapping=parse_mapping(CSV_MAP))))
    assert [s.name for s in store.trace(first.trace_id)] == ["GET /orders", "GET /orders", "load_cart"]


def test_bad_csv_row_names_the_row():
    text = "trace_id,span_id,service,operation,start,duration\nt,a,s,op,1700000000,12\nt,b,s,op,soon,3\n"
    with pytest.raises(ValueError, match="row 3"):
        read_csv(io.StringIO(text))
