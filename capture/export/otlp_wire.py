"""Decode an OTLP ExportTraceServiceRequest straight from the protobuf wire format into spans.

The hub's hot path: the same result as otlp_proto.decode_message (the specification, through
the protobuf runtime), without a runtime object per attribute. Attributes repeat across spans
(method, route, addresses, ports), so each KeyValue is looked up by its bytes in a bounded
cache and decoded by the protobuf runtime only on a miss. Events, links and unknown fields are
skipped by wire type. Bytes that are not a well-formed request raise DecodeError.
`decode` runs capture/export/_otlp_wire.c (the same reader in C) when setup.py built it;
`decode_py` is its specification and the fallback. The hub reads with `decode_rows` when the C
reader is there: Rows (no attribute dict; the attributes as JSON text, the connection key and
peer read once), the same spans as `decode` gives (tests compare them).

Wire layout (opentelemetry-proto trace/v1, common/v1, resource/v1), field number: type
  ExportTraceServiceRequest  1: ResourceSpans*
  ResourceSpans              1: Resource{1: KeyValue*}  2: ScopeSpans*
  ScopeSpans                 2: Span*
  Span  1 trace_id, 2 span_id, 4 parent_span_id (bytes)  5 name (string)  6 kind (enum)
        7 start, 8 end (fixed64)  9 KeyValue*  15 Status{2 message (string), 3 code (enum)}
"""
from __future__ import annotations

import struct
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

import orjson

from capture.span import Span
from capture.store.columns import encode_json
from capture.traces.crossnode import _KEYS, NAT_CLIENT, NAT_SERVER, _key

_KIND_NAME = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS_NAME = ("UNSET", "OK", "ERROR")
_CACHE_MAX = 65_536  # distinct KeyValue encodings kept; cleared when full (a new working set)
_kv_cache: dict[bytes, tuple[str, Any]] = {}
_DOUBLE = struct.Struct("<d")

# tags: (field number << 3) | wire type
_T_REQ_RS = 0x0A
_T_RS_RESOURCE, _T_RS_SCOPE_SPANS = 0x0A, 0x12
_T_RES_ATTR = 0x0A
_T_SS_SPAN = 0x12
_T_TRACE, _T_SPAN, _T_PARENT, _T_NAME = 0x0A, 0x12, 0x22, 0x2A
_T_KIND, _T_START, _T_END, _T_ATTR = 0x30, 0x39, 0x41, 0x4A
_T_STATUS = 0x7A
_T_ST_MESSAGE, _T_ST_CODE = 0x12, 0x18


_NESTED = {"array_value", "kvlist_value", "bytes_value"}


def any_value(av: AnyValue) -> Any:
    """An AnyValue as a Python value (bytes as hex text); None when no member is set."""
    fields = av.ListFields()  # one C call: the set member of the oneof and its value
    if not fields:
        return None
    desc, v = fields[0]
    if desc.name not in _NESTED:
        return v
    if desc.name == "array_value":
        return [any_value(x) for x in v.values]
    if desc.name == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.values}
    return v.hex()


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def _skip(buf: bytes, i: int, wire: int, end: int) -> int:
    if wire == 0:
        return _varint(buf, i)[1]
    if wire == 2:
        n, i = _varint(buf, i)
        i += n
    elif wire == 1:
        i += 8
    elif wire == 5:
        i += 4
    else:
        raise DecodeError(f"unsupported wire type {wire}")
    if i > end:
        raise DecodeError("field runs past its message")
    return i


def _len(buf: bytes, i: int, end: int) -> tuple[int, int]:
    """A length-delimited field's (start, end) after its tag."""
    b = buf[i]
    if b < 0x80:
        i += 1
        j = i + b
    else:
        n, i = _varint(buf, i)
        j = i + n
    if j > end:
        raise DecodeError("field runs past its message")
    return i, j


def _scalar(raw: bytes) -> tuple[str, Any] | None:
    """A KeyValue whose value is one string, bool, int or double, read by hand (the common
    case); None for anything else (the protobuf runtime reads it)."""
    if len(raw) < 2 or raw[0] != 0x0A or raw[1] >= 0x80:
        return None
    j = 2 + raw[1]
    if len(raw) < j + 2 or raw[j] != 0x12 or raw[j + 1] >= 0x80 or j + 2 + raw[j + 1] != len(raw):
        return None
    key = raw[2:j].decode()
    v = j + 2  # the AnyValue: exactly one member, nothing after it
    if v == len(raw):
        return key, None
    t = raw[v]
    if t == 0x0A:  # string_value
        if raw[v + 1] >= 0x80 or v + 2 + raw[v + 1] != len(raw):
            return None
        return key, raw[v + 2:].decode()
    if t == 0x10 or t == 0x18:  # bool_value, int_value (varint)
        n, end = _varint(raw, v + 1)
        if end != len(raw):
            return None
        if t == 0x10:
            return key, n != 0
        n &= (1 << 64) - 1  # an int64 varint: two's complement, longer ones truncated
        return key, n - (1 << 64) if n >= 1 << 63 else n
    if t == 0x21 and v + 9 == len(raw):  # double_value
        return key, _DOUBLE.unpack_from(raw, v + 1)[0]
    return None


def _keyvalue(raw: bytes) -> tuple[str, Any]:
    hit = _kv_cache.get(raw)
    if hit is None:
        hit = _scalar(raw)
        if hit is None:
            kv = KeyValue.FromString(raw)
            hit = (kv.key, any_value(kv.value))
        if len(_kv_cache) >= _CACHE_MAX:
            _kv_cache.clear()
        _kv_cache[raw] = hit
    return hit


def _attributes(buf: bytes, i: int, end: int, tag: int, out: dict[str, Any]) -> None:
    """The KeyValues of a Resource (tag _T_RES_ATTR) read into `out`."""
    while i < end:
        t = buf[i]
        if t == tag:
            a, b = _len(buf, i + 1, end)
            k, v = _keyvalue(buf[a:b])
            out[k] = v
            i = b
        else:
            t, i = _varint(buf, i)
            i = _skip(buf, i, t & 7, end)


def _status(buf: bytes, i: int, end: int, code: int, message: str) -> tuple[int, str]:
    """A Status read over the one before it (a repeated message field merges)."""
    while i < end:
        t, i = _varint(buf, i)
        if t == _T_ST_CODE:
            code, i = _varint(buf, i)
        elif t == _T_ST_MESSAGE:
            a, i = _len(buf, i, end)
            message = buf[a:i].decode()
        else:
            i = _skip(buf, i, t & 7, end)
    return code, message


def _span(buf: bytes, i: int, end: int, resource: dict[str, Any]) -> Span | None:
    trace = span = parent = b""
    name = message = ""
    kind = code = start = stop = 0
    attrs: dict[str, Any] = {}
    cache = _kv_cache
    while i < end:
        t = buf[i]
        if t == _T_ATTR:  # the most frequent field first, its length read inline
            n = buf[i + 1]
            if n < 0x80:
                a = i + 2
                i = a + n
            else:
                a, i = _len(buf, i + 1, end)
            raw = buf[a:i]
            hit = cache.get(raw)
            if hit is None:
                hit = _keyvalue(raw)
            attrs[hit[0]] = hit[1]
            continue
        if t == _T_START or t == _T_END:
            v = int.from_bytes(buf[i + 1:i + 9], "little")
            i += 9
            if t == _T_START:
                start = v
            else:
                stop = v
            continue
        if t < 0x80:
            i += 1
        else:
            t, i = _varint(buf, i)
        if t == _T_TRACE:
            a, i = _len(buf, i, end)
            trace = buf[a:i]
        elif t == _T_SPAN:
            a, i = _len(buf, i, end)
            span = buf[a:i]
        elif t == _T_PARENT:
            a, i = _len(buf, i, end)
            parent = buf[a:i]
        elif t == _T_NAME:
            a, i = _len(buf, i, end)
            name = buf[a:i].decode()
        elif t == _T_KIND:
            kind, i = _varint(buf, i)
        elif t == _T_STATUS:
            a, i = _len(buf, i, end)
            code, message = _status(buf, a, i, code, message)
        else:
            i = _skip(buf, i, t & 7, end)
    if i > end:
        raise DecodeError("field runs past its span")
    if len(trace) != 16 or len(span) != 8 or not name or parent and len(parent) != 8:
        return None
    if kind > 0x7FFFFFFF:  # an enum is an int32 on the wire: negative values come sign-extended
        kind -= 1 << 64
    if code > 0x7FFFFFFF:
        code -= 1 << 64
    return Span(name, _KIND_NAME[kind] if 0 <= kind < 6 else "INTERNAL", start, max(stop, start),
                _STATUS_NAME[code] if 0 <= code < 3 else "UNSET", attrs, resource, trace.hex(),
                span.hex(), parent.hex() or None, message)


def _fields(buf: bytes, i: int, end: int, tags: tuple[int, ...]):
    """(tag, start, end) of each length-delimited field of a message with one of `tags`;
    the other fields are skipped by wire type."""
    while i < end:
        t, i = _varint(buf, i)
        if t in tags:
            a, i = _len(buf, i, end)
            yield t, a, i
        else:
            i = _skip(buf, i, t & 7, end)


def decode(body: bytes) -> tuple[list[Span], int]:
    """The spans of a request and how many were rejected (unusable ids or no name)."""
    return decode_py(body) if _otlp_wire is None else decode_c(body)


def decode_py(body: bytes) -> tuple[list[Span], int]:
    """`decode` in Python: the specification of the C reader."""
    buf = bytes(body)
    out: list[Span] = []
    rejected = 0
    try:
        for _, rs_start, rs_end in _fields(buf, 0, len(buf), (_T_REQ_RS,)):
            # The resource may come after the scope spans on the wire: read it first.
            resource: dict[str, Any] = {}
            scopes: list[tuple[int, int]] = []
            for t, a, b in _fields(buf, rs_start, rs_end, (_T_RS_RESOURCE, _T_RS_SCOPE_SPANS)):
                if t == _T_RS_RESOURCE:
                    _attributes(buf, a, b, _T_RES_ATTR, resource)
                else:
                    scopes.append((a, b))
            for a, b in scopes:
                for _, s0, s1 in _fields(buf, a, b, (_T_SS_SPAN,)):
                    s = _span(buf, s0, s1, resource)
                    if s is None:
                        rejected += 1
                    else:
                        out.append(s)
    except (IndexError, UnicodeDecodeError) as e:
        raise DecodeError(f"truncated or malformed request: {e}") from e
    return out, rejected


def _row_entry(raw: bytes) -> tuple[str, Any, bytes, int | None]:
    """A KeyValue the C reader does not read itself: (key, value, JSON member, link slot)."""
    k, v = _keyvalue(raw)
    return k, v, encode_json({k: v})[1:-1], ROW_SLOTS.get(k)


def _attrs_json(attrs: dict[str, Any]) -> str:
    return encode_json(attrs).decode()


def decode_rows(body: bytes) -> tuple[list[Any], int]:
    """`decode` as Rows, or as Spans when the C reader is not built (the cross-node linker and
    the stores take either)."""
    if _otlp_wire is None:
        return decode_py(body)
    try:
        return _otlp_wire.decode_rows(body)
    except (IndexError, UnicodeDecodeError) as e:
        raise DecodeError(f"truncated or malformed request: {e}") from e


def row_span(r: Any) -> Span:
    """A Row as the Span `decode` gives (tests; the hub never makes one)."""
    attrs = orjson.loads(r.attrs_json)
    attrs.update(r.attributes or {})
    return Span(r.name, r.kind, r.start_time_unix_nano, r.end_time_unix_nano, r.status_code, attrs,
                r.resource, r.trace_id, r.span_id, r.parent_span_id, r.status_message)


def decode_c(body: bytes) -> tuple[list[Span], int]:
    """`decode` through capture/export/_otlp_wire.c (only when it is built)."""
    try:
        return _otlp_wire.decode(body)
    except (IndexError, UnicodeDecodeError) as e:
        raise DecodeError(f"truncated or malformed request: {e}") from e


# The attributes decode_rows keeps apart for a row's connection key and peer, in the order of
# the C reader's slots.
ROW_SLOTS = {k: i for i, k in enumerate((
    "network.transport", "client.address", "client.port", "server.address", "server.port",
    *NAT_SERVER, *NAT_CLIENT, "db.system", "db.system.name", "messaging.system", "rpc.service"))}
_row_cache: dict[bytes, tuple[str, Any, bytes, int | None]] = {}

try:
    from capture.export import _otlp_wire
except ImportError:  # no compiler at set-up: the Python reader
    _otlp_wire = None
    Row = None
else:
    _otlp_wire.setup(Span, _kv_cache, _keyvalue, DecodeError)
    _otlp_wire.setup_rows(_row_cache, _row_entry, ROW_SLOTS, _KEYS, _key, _attrs_json)
    Row = _otlp_wire.Row
