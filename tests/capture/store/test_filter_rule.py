"""SpanFilter.matches (the filter's rule for spans in hand) selects exactly what the store's query selects."""
from __future__ import annotations

from capture.span import Span
from capture.store.api import SpanFilter, TimeWindow
from capture.store.factory import open_store

T0 = 1_700_000_000_000_000_000


def _spans() -> list[Span]:
    out = []
    for i in range(40):
        kind = ("SERVER", "CLIENT", "PRODUCER", "INTERNAL")[i % 4]
        attrs = {"http.response.status_code": 500 if i % 5 == 0 else 200, "sampled": i % 2 == 0}
        if kind == "CLIENT":
            attrs.update({"server.address": "10.0.0.9", "server.port": 5432} if i % 8 == 1 else {"db.system": "redis"})
        if kind == "PRODUCER":
            attrs["messaging.system"] = "kafka"
        out.append(Span(name=f"op{i % 3}", kind=kind, start_time_unix_nano=T0 + i * 10**9,
                        end_time_unix_nano=T0 + i * 10**9 + (i % 7) * 10**6, status_code="ERROR" if i % 5 == 0 else "OK",
                        attributes=attrs, resource={"service.name": ("web", "api")[i % 2], "k8s.pod.name": f"p{i % 3}"},
                        trace_id=f"{i % 6:032x}"))
    return out


FILTERS = [
    SpanFilter(),
    SpanFilter(window=TimeWindow(T0 + 5 * 10**9, T0 + 17 * 10**9)),
    SpanFilter(service="api", kind="CLIENT"),
    SpanFilter(name="op1", status_code="ERROR"),
    SpanFilter(trace_id=f"{3:032x}"),
    SpanFilter(peer="redis"),
    SpanFilter(peer="10.0.0.9:5432", service="api"),
    SpanFilter(peer="kafka"),
    SpanFilter(min_duration_ns=3 * 10**6),
    SpanFilter(attributes={"http.response.status_code": "500"}),
    SpanFilter(attributes={"k8s.pod.name": "p2", "sampled": "true"}),
]


def test_the_rule_in_hand_is_the_store_query():
    spans = _spans()
    store = open_store(None)
    store.append(spans)
    for flt in FILTERS:
        flt.limit = 1000
        in_store = {s.span_id for s in store.spans(flt)}
        in_hand = {s.span_id for s in spans if flt.matches(s)}
        assert in_hand == in_store, flt
    assert {s.span_id for s in spans if SpanFilter(peer="redis").matches(s)}  # the peer rule selects something
    assert {s.span_id for s in spans if SpanFilter(trace_id=f"{3:032x}").matches(s)} != {s.span_id for s in spans}
