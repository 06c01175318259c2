"""Our spans to and from OTLP protobuf (ExportTraceServiceRequest), without the SDK in between.

The agent's shipper spools these bytes to disk and sends them as they are; the hub decodes
them back to spans with `decode` (read from the wire format, capture.export.otlp_wire;
`decode_message` is the same through the protobuf runtime). Both are strict about what they
cannot store (ids of the wrong size, a missing name) and count those spans as rejected instead
of raising; bytes that are not a request at all raise DecodeError.
"""
from __future__ import annotations

from typing import Any, Iterable

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from capture.export.otlp_wire import any_value, decode
from capture.span import Span

__all__ = ["DecodeError", "encode", "decode", "decode_message"]
SCOPE_NAME, SCOPE_VERSION = "guardian.capture", "0.1.0"
_KIND = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_KIND_NAME = {v: k for k, v in _KIND.items()} | {0: "INTERNAL"}
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
_STATUS_NAME = {v: k for k, v in _STATUS.items()}
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _set(av: AnyValue, v: Any) -> None:
    if isinstance(v, str):
        av.string_value = v
    elif isinstance(v, bool):
        av.bool_value = v
    elif isinstance(v, int) and _INT64[0] <= v <= _INT64[1]:
        av.int_value = v
    elif isinstance(v, float):
        av.double_value = v
    elif isinstance(v, (list, tuple)):
        arr = av.array_value
        for x in v:
            _set(arr.values.add(), x)
    elif isinstance(v, dict):
        kvl = av.kvlist_value
        for k, x in v.items():
            _set(kvl.values.add(key=str(k)).value, x)
    elif isinstance(v, (bytes, bytearray)):
        av.bytes_value = bytes(v)
    else:
        av.string_value = str(v)


def _attrs(target, d: dict[str, Any]) -> None:
    for k, v in d.items():
        if v is not None:
            _set(target.add(key=str(k)).value, v)


def encode(spans: Iterable[Span]) -> bytes:
    """One ExportTraceServiceRequest, spans grouped by resource."""
    req = ExportTraceServiceRequest()
    groups: dict[int, Any] = {}
    for s in spans:
        ss = groups.get(id(s.resource))
        if ss is None:
            rs = req.resource_spans.add()
            _attrs(rs.resource.attributes, s.resource)
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = SCOPE_NAME, SCOPE_VERSION
            groups[id(s.resource)] = ss
        p = ss.spans.add(trace_id=bytes.fromhex(s.trace_id), span_id=bytes.fromhex(s.span_id),
                         name=s.name, kind=_KIND.get(s.kind, 1),
                         start_time_unix_nano=s.start_time_unix_nano,
                         end_time_unix_nano=s.end_time_unix_nano)
        if s.parent_span_id:
            p.parent_span_id = bytes.fromhex(s.parent_span_id)
        _attrs(p.attributes, s.attributes)
        p.status.code = _STATUS.get(s.status_code, 0)
        if s.status_message:
            p.status.message = s.status_message
    return req.SerializeToString()


def _dict(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def decode_message(body: bytes) -> tuple[list[Span], int]:
    """`decode` through the protobuf runtime: its specification (tests compare the two)."""
    req = ExportTraceServiceRequest.FromString(body)
    out: list[Span] = []
    rejected = 0
    for rs in req.resource_spans:
        resource = _dict(rs.resource.attributes)
        for ss in rs.scope_spans:
            for p in ss.spans:
                if len(p.trace_id) != 16 or len(p.span_id) != 8 or not p.name \
                        or p.parent_span_id and len(p.parent_span_id) != 8:
                    rejected += 1
                    continue
                out.append(Span(name=p.name, kind=_KIND_NAME.get(p.kind, "INTERNAL"),
                                start_time_unix_nano=p.start_time_unix_nano,
                                end_time_unix_nano=max(p.end_time_unix_nano, p.start_time_unix_nano),
                                status_code=_STATUS_NAME.get(p.status.code, "UNSET"),
                                status_message=p.status.message,
                                attributes=_dict(p.attributes), resource=resource,
                                trace_id=p.trace_id.hex(), span_id=p.span_id.hex(),
                                parent_span_id=p.parent_span_id.hex() or None))
    return out, rejected

