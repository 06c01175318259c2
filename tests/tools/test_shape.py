"""Call-pattern changes (tools/shape.py) on spans without status codes, shaped as the capture
emits them: a name lookup coming and going with the resolver's cache is no change; a call an
operation no longer makes is one, and says which answer requests stopped after."""
from __future__ import annotations

import random

import pytest

from capture.span import Span
from capture.store.api import TimeWindow
from tools.sampling import Sample
from tools.shape import shape_changes

MS = 1_000_000
T0 = 1_790_000_000 * 10**9


def requests(rng: random.Random, t0: int, n: int, lookup_share: float, stop_after_lookup: float = 0.0):
    """n requests of api `POST /order`: a DNS lookup of orders (when not cached), then a call to
    orders `POST /orders`. stop_after_lookup: share that fail right after the lookup."""
    out, t = [], t0
    for i in range(n):
        trace = f"{rng.getrandbits(128):032x}"
        sp = lambda **k: Span(trace_id=trace, status_code="UNSET", **k)  # noqa: E731
        root_id = f"{i:08x}00000000"
        cur, spans = t + MS, []
        looked = rng.random() < lookup_share
        if looked:
            spans.append(sp(name="DNS A orders.local", kind="CLIENT", start_time_unix_nano=cur,
                            end_time_unix_nano=cur + MS // 5, resource={"service.name": "api"},
                            span_id=f"{i:08x}00000001", parent_span_id=root_id,
                            attributes={"dns.question.name": "orders.local", "server.address": "127.0.0.1",
                                        "server.port": 53}))
            cur += MS // 5
        if not (looked and rng.random() < stop_after_lookup):
            spans.append(sp(name="POST /orders", kind="CLIENT", start_time_unix_nano=cur,
                            end_time_unix_nano=cur + 5 * MS, resource={"service.name": "api"},
                            span_id=f"{i:08x}00000002", parent_span_id=root_id,
                            attributes={"server.address": "orders", "server.port": 8081}))
            cur += 5 * MS
        spans.append(sp(name="POST /order", kind="SERVER", start_time_unix_nano=t,
                        end_time_unix_nano=cur + MS, resource={"service.name": "api"}, span_id=root_id))
        out += spans
        t += 100 * MS
    return out


def changes(now_share: float, stop: float = 0.0):
    rng = random.Random(3)
    base = requests(rng, T0, 300, 0.9)
    cur = requests(rng, T0 + 60 * 10**9, 300, now_share, stop)
    return shape_changes(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                         Sample(TimeWindow(T0, T0 + 60 * 10**9), base))


def test_lookups_coming_and_going_with_the_cache_are_no_change():
    assert changes(now_share=0.3) == []


def test_requests_stopping_after_a_lookup_still_show():
    got = changes(now_share=0.9, stop=0.8)
    dropped = [c for c in got if c.change == "dropped"]
    assert dropped and dropped[0].what.endswith("POST /orders")
    assert not any("DNS" in c.what for c in got)


def orders(rng: random.Random, t0: int, n: int, missing: float, shorter: bool):
    """n requests of api `POST /order` calling orders `POST /orders` (5 ms of its 6); a share
    `missing` lack the call's span: lost by the capture (as long as the rest) or not made
    (shorter by the call's time)."""
    out, t = [], t0
    for i in range(n):
        trace = f"{rng.getrandbits(128):032x}"
        root_id = f"{i:08x}00000000"
        gone = rng.random() < missing
        d = 6 * MS - (5 * MS if gone and shorter else 0) + rng.randrange(MS // 5)
        if not gone:
            out.append(Span(trace_id=trace, status_code="UNSET", name="POST /orders", kind="CLIENT",
                            start_time_unix_nano=t + MS // 2, end_time_unix_nano=t + MS // 2 + 5 * MS,
                            resource={"service.name": "api"}, span_id=f"{i:08x}00000002",
                            parent_span_id=root_id,
                            attributes={"server.address": "orders", "server.port": 8081}))
        out.append(Span(trace_id=trace, status_code="UNSET", name="POST /order", kind="SERVER",
                        start_time_unix_nano=t, end_time_unix_nano=t + d,
                        resource={"service.name": "api"}, span_id=root_id))
        t += 100 * MS
    return out


@pytest.mark.parametrize("shorter", [False, True])
def test_a_call_whose_spans_were_lost_is_no_dropped_call(shorter):
    rng = random.Random(5)
    base = orders(rng, T0, 300, 0.0, shorter)
    cur = orders(rng, T0 + 60 * 10**9, 300, 0.3, shorter)
    got = shape_changes(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                        Sample(TimeWindow(T0, T0 + 60 * 10**9), base))
    dropped = [c for c in got if c.change == "dropped"]
    if shorter:  # requests really stopped before the call: they ended early
        assert dropped and dropped[0].what == "orders:8081 POST /orders", got
    else:  # as long as before: the call was made, its span lost
        assert dropped == [], got
