"""A connection as the pipeline sees it: who (pid, role), where (4-tuple), what (protocol)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capture.protocols.base import Parser

# The span attribute that carries Connection.epoch when it is not 0 (the OTLP export ships it).
EPOCH = "guardian.connection.epoch"


@dataclass(slots=True)
class Connection:
    conn_id: int
    pid: int
    protocol: str  # bpf/types.h PROTO_<NAME> without the prefix, e.g. "HTTP1"
    role: str = "UNKNOWN"  # "CLIENT" (we connected) / "SERVER" (we accepted) / "UNKNOWN"
    transport: str = "tcp"
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    resource: dict[str, Any] = field(default_factory=dict)
    source: str = "syscall"  # "syscall", "openssl", "boringssl", "go", "pcap" …
    parser: Parser | None = None
    last_tid: int = 0  # thread of the latest request bytes: links in-process calls
    request_tid: int = 0
    last_seen_ns: int = 0
    # How many times records of this connection were lost (a gap in either direction's stream,
    # or first seen mid-stream) before the span: spans of one epoch follow each other with none
    # missing between them, so request order across epochs means nothing (the hub's linker).
    epoch: int = 0
