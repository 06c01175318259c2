"""Spans as rows in C (capture/_rows.c) give the Rows capture.rows.row_of (the specification) gives:
every field, on recorded traffic and on spans with every kind of odd attribute."""
from __future__ import annotations

import random

import pytest

from capture import rows
from capture.span import Span
from capture.traces.linker import TRACEPARENT
from tests.capture.traces.test_link_c import recorded_spans

FIELDS = ("name", "kind", "start_time_unix_nano", "end_time_unix_nano", "status_code", "status_message",
          "attributes", "resource", "trace_id", "span_id", "parent_span_id", "attrs_json", "key", "nat", "peer")


def test_the_extension_is_built():
    assert rows._rows is not None, "capture._rows is not built: python setup.py build_ext --inplace"


def fields(r) -> tuple:
    return tuple(getattr(r, f) for f in FIELDS)


def same(spans: list) -> list:
    want = [rows.row_of(s) for s in spans]
    got = rows._rows.rows(spans)
    assert [type(r) for r in got] == [rows.Row] * len(spans)
    assert [fields(r) for r in got] == [fields(r) for r in want]
    return got


@pytest.mark.parametrize("name", ["nginx_hey_pair", "redis_bench_pair"])
def test_recorded_traffic_gives_the_same_rows(name):
    spans = recorded_spans(name)
    got = same(spans)
    assert len(got) >= 1400 and all(r.key[0] is not None for r in got)
    assert {r.peer for r in got if r.kind == "CLIENT"} - {None}


ODD = [0, 1, -1, 2**63 - 1, 2**64, -2**70, 1.5, True, False, None, "", "x", "é€😀", "\ud800", "a\"\\\n\x01",
       [1, "a", None], (2, 3), {"k": [1, {"z": 2}]}, {1: "int key"}, b"bytes", object]


def test_odd_attributes_give_the_same_rows():
    rnd = random.Random(5)
    spans = []
    for k in range(3000):
        a: dict = {}
        for key in ("client.address", "client.port", "server.address", "server.port", "network.transport",
                    "thread.id", "go.goroutine.id", TRACEPARENT, "db.system", "db.system.name",
                    "messaging.system", "rpc.service", "http.request.method"):
            roll = rnd.random()
            if roll < 0.35:
                continue
            if key.endswith(".port") and roll < 0.95:
                a[key] = rnd.choice([80, 5432, "8080", 0, True])
            elif key.endswith(".address") and roll < 0.95:
                a[key] = rnd.choice(["10.0.0.1", "::1", "10.0.0.2", "", 7])
            else:
                a[key] = rnd.choice(ODD[:-2]) if key.endswith(".port") else rnd.choice(ODD[:-1])
        if rnd.random() < 0.05:
            a[rnd.choice([1, None, (1, 2), b"k", 2.5])] = "odd key"
        spans.append(Span(f"op{k % 7}", rnd.choice(["CLIENT", "SERVER", "PRODUCER", "CONSUMER", "INTERNAL"]),
                          k, k + rnd.randrange(3), rnd.choice(["OK", "ERROR", "UNSET"]), a,
                          {"process.pid": k % 5}, status_message=rnd.choice(["", "boom", None])))
    keys = [s for s in spans if "client.port" in s.attributes]
    ok = []
    for s in spans:  # what orjson, int() or str() refuses (ints past 64 bits, lone surrogates) raises on both alike
        try:
            rows.row_of(s)
            ok.append(s)
        except (TypeError, ValueError):
            with pytest.raises((TypeError, ValueError)):
                rows._rows.rows([s])
    got = same(ok)
    assert 900 < len(ok) < len(spans) and len(keys) > 1000
    assert sum(r.key[0] is not None for r in got) > 100 and sum(r.peer is not None for r in got) > 100
