"""The one span model: what every source produces and everything downstream consumes.

Field names and attribute keys follow OpenTelemetry (trace data model + semantic
conventions). The JSON shape of `Span.to_dict()` is a public contract: it is what
`guardian capture --json` prints, one object per line, and what the store round-trips.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

try:
    from capture import _spanjson  # json_lines() in C (setup.py builds it)
except ImportError:  # not built: each span's json_line(), same bytes
    _spanjson = None

KINDS = ("SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")
_JSON_LINE = orjson.OPT_APPEND_NEWLINE


def new_trace_id() -> str:
    return f"{random.getrandbits(128):032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def new_ids() -> tuple[str, str]:
    """A trace id and a span id from one random draw: a new span on the capture's hot path."""
    ids = random.getrandbits(192).to_bytes(24, "little").hex()
    span_id = ids[32:]
    return ids[:32], span_id if span_id != "0000000000000000" else "0000000000000001"


@dataclass(slots=True)
class Span:
    name: str
    kind: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str = "UNSET"
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    trace_id: str = field(default_factory=new_trace_id)
    span_id: str = field(default_factory=new_span_id)
    parent_span_id: str | None = None
    status_message: str = ""

    @property
    def duration_ns(self) -> int:
        return self.end_time_unix_nano - self.start_time_unix_nano

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name", "unknown"))

    def to_dict(self) -> dict[str, Any]:
        d = {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "start_time_unix_nano": self.start_time_unix_nano,
            "end_time_unix_nano": self.end_time_unix_nano,
            "status_code": self.status_code,
            "attributes": self.attributes,
            "resource": self.resource,
        }
        if self.status_message:
            d["status_message"] = self.status_message
        return d

    def to_json(self) -> str:
        return self.json_line()[:-1].decode()

    def json_line(self) -> bytes:
        """`to_json()` as UTF-8 and a newline: one line of `guardian capture --json`."""
        d = self.to_dict()
        try:
            return orjson.dumps(d, default=str, option=_JSON_LINE)
        except TypeError:  # a key that is not a string (allowing them slows every dict down)
            pass
        try:
            return orjson.dumps(d, default=str, option=_JSON_LINE | orjson.OPT_NON_STR_KEYS)
        except TypeError:  # what orjson refuses (an int beyond 64 bits): the slower stdlib
            return (json.dumps(d, separators=(",", ":"), default=str) + "\n").encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Span":
        return cls(
            name=d["name"],
            kind=d.get("kind", "INTERNAL"),
            start_time_unix_nano=int(d["start_time_unix_nano"]),
            end_time_unix_nano=int(d["end_time_unix_nano"]),
            status_code=d.get("status_code", "UNSET"),
            attributes=dict(d.get("attributes") or {}),
            resource=dict(d.get("resource") or {}),
            trace_id=d.get("trace_id") or new_trace_id(),
            span_id=d.get("span_id") or new_span_id(),
            parent_span_id=d.get("parent_span_id") or None,
            status_message=d.get("status_message", ""),
        )


def json_lines(spans: list[Span | bytes]) -> bytes:
    """Each span's json_line(), joined: lines of `guardian capture --json` for a batch. A bytes
    item is such a line already (the compiled path's, when it writes lines instead of spans)."""
    if _spanjson is not None:
        return _spanjson.lines(Span, spans)
    return b"".join([s if type(s) is bytes else s.json_line() for s in spans])


def write_json_lines(fd: int, spans: list[Span | bytes]) -> None:
    """json_lines(spans) written to the file descriptor `fd`, all of it (OSError otherwise)."""
    if _spanjson is not None:
        return _spanjson.write(fd, Span, spans)
    data = memoryview(json_lines(spans))
    while data:
        data = data[os.write(fd, data):]
