"""The hub's row reader (otlp_wire.decode_rows, in C) gives the spans decode_py gives, and each
row's connection key, NAT flag and peer are what the linker and the store compute from a Span."""
from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from capture.export import otlp_wire
from capture.export.otlp_proto import DecodeError, encode
from capture.span import Span
from capture.store.api import PEER_KINDS, peer_name
from capture.traces.crossnode import NAT_CLIENT, NAT_SERVER, client_key, server_key
from tests.capture.export.test_otlp import sample
from tests.capture.export.test_otlp_wire import T0, _varint, varied

pytestmark = pytest.mark.skipif(otlp_wire._otlp_wire is None, reason="extension not built")


def linked(n: int, seed: int = 9) -> list[Span]:
    """Spans with the attributes rows read apart: addresses as text or ints, ports as text,
    NAT mappings in part, IPv4-mapped IPv6, peers named by db/messaging/rpc, values to escape."""
    rnd = random.Random(seed)
    res = {"service.name": "web", "host.name": "n1"}
    out = []
    for i in range(n):
        a: dict = {}
        for key, choices in (("client.address", ["10.0.0.1", "::ffff:10.0.0.1", 7, "", None]),
                             ("client.port", [40000 + i % 5, "40001", "x", 0, 1.5, True]),
                             ("server.address", ["10.0.0.2", "svc\"q\\\n\x01é", ""]),
                             ("server.port", [80, "8080", 0, -1]),
                             ("network.transport", ["tcp", "udp", None]),
                             (NAT_SERVER[0], ["10.1.0.3"]), (NAT_SERVER[1], [8080, "9"]),
                             (NAT_CLIENT[0], ["10.9.0.1"]), (NAT_CLIENT[1], [5000]),
                             ("db.system", ["postgresql", "", 0]), ("messaging.system", ["kafka"]),
                             ("rpc.service", ["Greeter", False])):
            if rnd.random() < 0.7:
                v = rnd.choice(choices)
                if v is not None or rnd.random() < 0.5:
                    a[key] = v
        a["url.query"] = f"rid={i}&tab=\t\"x\"\\"
        out.append(Span(name="GET /", kind=rnd.choice(["SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL"]),
                        start_time_unix_nano=T0 + i, end_time_unix_nano=T0 + i + 5, attributes=a,
                        resource=res, parent_span_id=None if i % 4 else f"{i + 1:016x}"))
    return out


def _outcome(fn, body: bytes):
    try:
        spans, rejected = fn(body)
    except DecodeError:
        return None
    if spans and isinstance(spans[0], otlp_wire.Row):
        for r in spans:
            s = otlp_wire.row_span(r)
            want_key, want_nat = (server_key(s), False) if s.kind in ("SERVER", "CONSUMER") \
                and not s.parent_span_id else client_key(s) if s.kind in PEER_KINDS else (None, False)
            assert (r.key, r.nat) == (want_key, want_nat), s.attributes
            assert r.peer == (peer_name(s.attributes) if s.kind in PEER_KINDS else None)
            assert r.attributes is None
        spans = [otlp_wire.row_span(r) for r in spans]
    return rejected, [s.to_dict() | {"m": s.status_message} for s in spans]


def _both(body: bytes):
    want = _outcome(otlp_wire.decode_py, body)
    assert _outcome(otlp_wire.decode_rows, body) == want, body[:200]
    return want


def test_rows_are_the_spans_with_their_keys_and_peers():
    body = encode(varied(200) + sample() + linked(400))
    otlp_wire._row_cache.clear()
    got = _both(body)  # every KeyValue a miss
    assert got is not None and len(got[1]) == 602
    assert _both(body) == got  # from the cache
    rows = otlp_wire.decode_rows(body)[0]
    assert sum(r.key is not None for r in rows) >= 50 and sum(bool(r.nat) for r in rows) >= 10
    assert rows[0].resource is rows[2].resource


def test_a_key_sent_twice_keeps_the_last_value_as_a_dict_would():
    s = Span(name="x", kind="CLIENT", start_time_unix_nano=T0, end_time_unix_nano=T0 + 1,
             attributes={"server.address": "a", "server.port": 1, "k": 1})
    body = bytearray(encode([s]))
    kv = bytes([0x0A, 1]) + b"k" + bytes([0x12, 2, 0x18, 7])  # k = 7 again, after the rest
    tail = bytes([0x4A, len(kv)]) + kv
    sp = bytes(body)  # rebuild the nesting with the extra attribute at the span's end
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    req = ExportTraceServiceRequest.FromString(sp)
    span = req.resource_spans[0].scope_spans[0].spans[0].SerializeToString() + tail
    ss = bytes([0x12]) + _varint(len(span)) + span
    rs = bytes([0x12]) + _varint(len(ss)) + ss
    got = _both(bytes([0x0A]) + _varint(len(rs)) + rs)
    assert got[1][0]["attributes"]["k"] == 7
    row = otlp_wire.decode_rows(bytes([0x0A]) + _varint(len(rs)) + rs)[0][0]
    assert orjson.loads(row.attrs_json) == {"server.address": "a", "server.port": 1, "k": 7}
    assert row.peer == "a:1"


def test_rows_hostile_bytes():
    rnd = random.Random(6)
    base = encode(varied(4) + linked(8))
    kinds: Counter = Counter()
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rnd.randrange(1, 4)):
            i = rnd.randrange(len(b))
            what = rnd.random()
            if what < 0.45:
                b[i] = rnd.randrange(256)
            elif what < 0.6:
                b[i] = rnd.choice([0x80, 0xFF, 0x7F, 0x0A, 0x12, 0x18, 0x4A, 0x39, 0x7A])
            elif what < 0.8:
                del b[i:i + rnd.randrange(1, 8)]
            else:
                b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 5)))
        body = bytes(b[:rnd.randrange(len(b) + 1)] if rnd.random() < 0.2 else b)
        kinds[_both(body) is not None] += 1
    assert kinds[True] >= 200 and kinds[False] >= 800


def test_arrow_columns_filled_in_c_are_those_python_builds():
    from capture.store import columns
    from capture.traces.crossnode import CrossNodeLinker

    rows = otlp_wire.decode_rows(encode(varied(50) + sample() + linked(200)))[0]
    lk = CrossNodeLinker(window_s=1.0)
    rows = lk.add(rows) + lk.flush()
    rows[0].attributes = {"guardian.link.method": "x", "n": 1}  # attributes the hub added
    for nulls in (True, False):
        got = columns.arrow_rows(rows, nulls)
        saved, columns._otlp_wire = columns._otlp_wire, None
        try:
            want = columns.arrow_rows(rows, nulls)
        finally:
            columns._otlp_wire = saved
        assert got.equals(want) and got.num_rows == len(rows) == 252
        assert got.column("parent_span_id").null_count == (sum(r.parent_span_id is None for r in rows)
                                                           if nulls else 0)
    assert orjson.loads(got.column("attributes")[0].as_py())["n"] == 1
