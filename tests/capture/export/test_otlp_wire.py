"""The hub's wire-format OTLP decoder gives what the protobuf runtime gives (decode_message, its
specification) on every request the runtime accepts, and DecodeError, never another exception,
on bytes that are not a request."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from capture.export import otlp_wire
from capture.export.otlp_proto import DecodeError, decode, decode_message, encode
from capture.span import Span
from tests.capture.export.test_otlp import sample

T0 = 1_700_000_000_000_000_000


def varied(n: int, seed: int = 3) -> list[Span]:
    """Every value type OTLP carries, long strings and keys, negative and huge ints, unicode."""
    rnd = random.Random(seed)
    res = [{"service.name": "api", "host.name": "node-a", "process.pid": 7},
           {"service.name": "wörker-" + "x" * 200, "k8s.pod.name": "p", "n": -3}]
    out = []
    for i in range(n):
        attrs = {"http.request.method": rnd.choice(["GET", "POST", "DELETE"]), "i": i,
                 "neg": -rnd.randrange(1 << 62), "big": (1 << 63) - 1, "small": -(1 << 63),
                 "ratio": rnd.random(), "ok": bool(i % 2), "zero": 0, "empty": "",
                 "url.query": f"rid={i}&q=" + "é" * rnd.randrange(0, 90),
                 "k" * rnd.randrange(1, 300): "v", "tags": ["a", 1, 2.5, True],
                 "nested": {"x": 1, "y": ["z"]}, "blob": b"\x00\xff", "huge": 1 << 70}
        out.append(Span(name=f"op {i % 5} ☃", kind=rnd.choice(["SERVER", "CLIENT", "INTERNAL",
                                                             "PRODUCER", "CONSUMER"]),
                        start_time_unix_nano=T0 + i, end_time_unix_nano=T0 + i + rnd.randrange(-5, 10**9),
                        status_code=rnd.choice(["OK", "ERROR", "UNSET"]),
                        status_message="boom" * rnd.randrange(0, 3), attributes=attrs,
                        resource=res[i % 2],
                        parent_span_id=None if i % 3 else f"{rnd.getrandbits(64):016x}"))
    return out


def same(body: bytes) -> None:
    try:
        want = decode_message(body)
    except DecodeError:
        with pytest.raises(DecodeError):
            otlp_wire.decode(body)
        return
    got = otlp_wire.decode(body)
    assert got[1] == want[1]
    assert [s.to_dict() | {"m": s.status_message} for s in got[0]] == \
           [s.to_dict() | {"m": s.status_message} for s in want[0]]


def test_same_spans_as_the_protobuf_runtime():
    body = encode(varied(300) + sample())
    otlp_wire._kv_cache.clear()
    same(body)  # every KeyValue a cache miss
    same(body)  # and again from the cache
    spans, rejected = decode(body)
    assert rejected == 0 and len(spans) == 302 and spans[0].attributes["huge"] == str(1 << 70)


def test_rejected_spans_unknown_fields_and_field_order():
    req = ExportTraceServiceRequest.FromString(encode(varied(4)))
    sp = req.resource_spans[0].scope_spans[0].spans
    sp[0].trace_id = b"short"
    sp[1].name = ""
    sp[1].events.add(name="e", time_unix_nano=5)  # skipped like any field we do not keep
    sp[1].links.add(trace_id=b"t" * 16, span_id=b"s" * 8)
    sp[1].flags = 0x301
    sp[1].kind = -4  # an enum out of range, sign-extended on the wire
    sp[1].status.code = 99
    req.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.21.0"
    body = req.SerializeToString()
    same(body)
    assert decode(body)[1] == 2
    # Resource after its spans, a Status sent in two parts, a span field repeated: proto merges.
    rs = req.resource_spans[0].SerializeToString()  # a resource shorter than 128 bytes
    resource, rest = rs[:2 + rs[1]], rs[2 + rs[1]:]
    assert resource[0] == 0x0A
    swapped = bytes([0x0A]) + _varint(len(rs)) + rest + resource
    same(swapped)
    span = req.resource_spans[1].scope_spans[0].spans[0].SerializeToString()
    split = span + b"\x7a\x02\x18\x02" + b"\x7a\x04\x12\x02hi" + b"\x2a\x01Z"
    s2 = bytes([0x12]) + _varint(len(split)) + split
    ss = bytes([0x12]) + _varint(len(s2)) + s2
    same(bytes([0x0A]) + _varint(len(ss)) + ss)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_mutated_requests_decode_alike_or_raise_decode_error():
    rnd = random.Random(11)
    base = encode(varied(6) + sample())
    outcomes: Counter = Counter()
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rnd.randrange(1, 4)):
            what = rnd.random()
            i = rnd.randrange(len(b))
            if what < 0.5:
                b[i] = rnd.randrange(256)
            elif what < 0.75:
                del b[i:i + rnd.randrange(1, 8)]
            else:
                b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 5)))
        body = bytes(b[:rnd.randrange(len(b) + 1)] if rnd.random() < 0.2 else b)
        try:
            want = decode_message(body)
        except DecodeError:
            want = None
        try:
            got = otlp_wire.decode(body)
        except DecodeError:
            got = None
        # We may take bytes the runtime refuses (bad UTF-8 in a field we skip), never the reverse.
        outcomes[(want is not None, got is not None)] += 1
        if want is not None:
            assert got is not None and got[1] == want[1]
            assert [s.to_dict() for s in got[0]] == [s.to_dict() for s in want[0]]
    assert outcomes[(True, True)] >= 100 and outcomes[(False, False)] >= 1000  # both kinds tried


# The C reader (capture/export/_otlp_wire.c, built by setup.py) against decode_py, its
# specification: the same spans, the same rejections, DecodeError on the same bytes.

def test_the_extension_is_built():
    assert otlp_wire._otlp_wire is not None, \
        "capture.export._otlp_wire is not built: python setup.py build_ext --inplace"


needs_c = pytest.mark.skipif(otlp_wire._otlp_wire is None, reason="extension not built (see above)")


def _outcome(fn, body: bytes):
    try:
        spans, rejected = fn(body)
    except DecodeError:
        return None
    return rejected, [s.to_dict() | {"m": s.status_message} for s in spans]


def _both(body: bytes) -> tuple:
    py, c = _outcome(otlp_wire.decode_py, body), _outcome(otlp_wire.decode_c, body)
    assert c == py, body[:200]
    return py


@needs_c
def test_c_reader_gives_the_python_readers_spans():
    body = encode(varied(300) + sample())
    otlp_wire._kv_cache.clear()
    got = _both(body)
    assert got is not None and len(got[1]) == 302
    assert _both(body) == got  # from the cache
    spans = otlp_wire.decode(body)[0]
    assert spans[0].resource is spans[2].resource  # one dict per resource, as in Python


@needs_c
def test_c_reader_hostile_bytes():
    rnd = random.Random(5)
    base = encode(varied(6) + sample())
    kinds: Counter = Counter()
    for _ in range(4000):
        b = bytearray(base)
        for _ in range(rnd.randrange(1, 4)):
            i = rnd.randrange(len(b))
            what = rnd.random()
            if what < 0.4:
                b[i] = rnd.randrange(256)
            elif what < 0.55:
                b[i] = rnd.choice([0x80, 0xFF, 0x7F, 0x0A, 0x12, 0x4A, 0x39, 0x7A])
            elif what < 0.7:
                del b[i:i + rnd.randrange(1, 8)]
            elif what < 0.85:  # long and over-long varints: enums and lengths past 64 bits
                b[i:i] = bytes([0xFF] * rnd.randrange(1, 11)) + bytes([rnd.randrange(128)])
            else:
                b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 5)))
        body = bytes(b[:rnd.randrange(len(b) + 1)] if rnd.random() < 0.2 else b)
        kinds[_both(body) is not None] += 1
    # Fields as sent by hand: an enum and a status code ten bytes long, a tag written long.
    span = bytes([0x0A, 16]) + b"t" * 16 + bytes([0x12, 8]) + b"s" * 8 + b"\x2a\x01n"
    for tail in (b"\x30" + b"\xff" * 9 + b"\x01", b"\x30" + b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x02",
                 b"\x7a\x0b\x18" + b"\x81" + b"\x80" * 8 + b"\x02", b"\xca\x00\x00", b"\x39" + b"\x01" * 8):
        s = span + tail
        ss = bytes([0x12]) + _varint(len(s)) + s
        rs = bytes([0x12]) + _varint(len(ss)) + ss
        assert _both(bytes([0x0A]) + _varint(len(rs)) + rs) is not None
    assert kinds[True] >= 300 and kinds[False] >= 1000
