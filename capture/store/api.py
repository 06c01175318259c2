"""The store's narrow API: everything the tools, the CLI and the HTTP API may ask of it.

Nothing outside capture/store imports an engine (DuckDB today). A server-backed engine
for clusters (e.g. ClickHouse) implements this same class and nothing else changes.
Times are Unix nanoseconds; durations in results are milliseconds (floats).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal

from capture.span import Span


@dataclass(frozen=True, slots=True)
class TimeWindow:
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return max(self.end_ns - self.start_ns, 1) / 1e9


@dataclass(slots=True)
class SpanFilter:
    """Conjunction of conditions; None means "any"."""

    window: TimeWindow | None = None
    service: str | None = None
    name: str | None = None  # the operation (span name)
    kind: str | None = None  # "SERVER", "CLIENT", ...
    status_code: str | None = None  # "OK", "ERROR", "UNSET"
    min_duration_ns: int | None = None
    trace_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)  # equality on the value as text
    peer: str | None = None  # CLIENT/PRODUCER spans whose peer_name(attributes) equals this
    limit: int = 1000
    order: Literal["start", "duration_desc", "start_desc"] = "start"  # start_desc: newest first

    def matches(self, s: Span) -> bool:
        """The filter's rule for one span already in hand; every engine's query means exactly this."""
        if self.window and not self.window.start_ns <= s.start_time_unix_nano < self.window.end_ns:
            return False
        for want, have in ((self.service, s.service), (self.name, s.name), (self.kind, s.kind),
                           (self.status_code, s.status_code), (self.trace_id, s.trace_id)):
            if want is not None and want != have:
                return False
        if self.peer is not None and (s.kind not in PEER_KINDS or peer_name(s.attributes) != self.peer):
            return False
        if self.min_duration_ns is not None and s.duration_ns < self.min_duration_ns:
            return False
        # Resource keys (k8s.*, process.*) filter too: callers need not know which holds a key.
        return all(_text(s.attributes.get(k, s.resource.get(k))) == str(v) for k, v in self.attributes.items())


PEER_KINDS = ("CLIENT", "PRODUCER")  # the spans that have a peer (peer_name)


def _text(value: Any) -> str | None:
    """An attribute value as the store compares it (JSON text of scalars)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def peer_name(attributes: dict[str, Any]) -> str | None:
    """What a CLIENT/PRODUCER span calls when no server span is linked to it: the database,
    the broker or RPC service, else server.address[:port]. The service map names edges so."""
    for key in ("db.system", "db.system.name", "messaging.system", "rpc.service"):
        if attributes.get(key):
            return str(attributes[key])
    addr = attributes.get("server.address")
    if addr:
        port = attributes.get("server.port")
        return f"{addr}:{port}" if port else str(addr)
    return None


@dataclass(slots=True)
class RedRow:
    """Rate, errors, duration of one group (service, or service+operation) in one interval."""

    service: str
    operation: str | None
    interval_start_ns: int | None  # None when not bucketed
    count: int
    errors: int
    rate_per_s: float
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(slots=True)
class EdgeRow:
    """A service-map edge: calls from `client` to `server` with their RED."""

    client: str
    server: str
    count: int
    errors: int
    rate_per_s: float
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


class SpanStore(ABC):
    @abstractmethod
    def append(self, spans: Iterable[Span]) -> int:
        """Add a batch of spans; returns how many were stored."""

    @abstractmethod
    def spans(self, flt: SpanFilter) -> list[Span]:
        """Spans matching the filter, at most flt.limit."""

    @abstractmethod
    def trace(self, trace_id: str) -> list[Span]:
        """All spans of one trace, by start time ([] if unknown)."""

    @abstractmethod
    def red(
        self,
        window: TimeWindow,
        by: Literal["service", "operation"] = "service",
        interval_s: int | None = None,
        service: str | None = None,
    ) -> list[RedRow]:
        """RED of SERVER/CONSUMER spans per service (or per service+operation), optionally bucketed."""

    @abstractmethod
    def service_map(self, window: TimeWindow) -> list[EdgeRow]:
        """Edges client service -> server service with RED, from the calls seen in the window."""

    @abstractmethod
    def services(self, window: TimeWindow | None = None) -> list[str]:
        """Names of the services that have spans (in the window)."""

    @abstractmethod
    def time_range(self) -> TimeWindow | None:
        """Oldest span start to newest span end, or None when empty."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def relink(self, parents: list[tuple[str, str, dict[str, Any]]], traces: dict[str, str]) -> int:
        """Links found after their spans were stored (the other half came late): per span,
        (span_id, parent_span_id, attributes to add), and trace ids rewritten old -> new on
        every span. Returns how many parents were set."""

    def traces(self, flt: SpanFilter, limit: int = 20) -> list[list[Span]]:
        """Whole traces having a span that matches flt, newest first, at most `limit`.

        Composed from spans() and trace(); an engine may override it with one query."""
        seen: list[str] = []
        probe = replace(flt, limit=max(flt.limit, limit))
        for s in sorted(self.spans(probe), key=lambda s: s.start_time_unix_nano, reverse=True):
            if s.trace_id not in seen:
                seen.append(s.trace_id)
                if len(seen) >= limit:
                    break
        return [self.trace(t) for t in seen]

    def settle(self) -> None:
        """Write what an engine holds back for a larger insert once it has waited long enough
        (called while no spans arrive; reads and flush() always write it first)."""

    def flush(self) -> None:
        """Make appended spans durable (file-backed stores)."""

    def close(self) -> None:
        self.flush()
