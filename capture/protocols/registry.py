"""Protocol registry: protocol name -> parser class and detector, found by table lookup.

Adding a protocol: its detection function in bpf/protocols/, its id in bpf/types.h, its
parser module here, its tests. `grep -rn "REGISTRY:protocols"` finds every place.
"""
from __future__ import annotations

import importlib
from typing import Callable

from capture.protocols.base import Parser

# REGISTRY:protocols — protocol name (bpf/types.h PROTO_<NAME>) -> module in capture/protocols.
MODULES: dict[str, str] = {
    "HTTP1": "capture.protocols.http1",
    "HTTP2": "capture.protocols.http2",
    "POSTGRES": "capture.protocols.postgres",
    "MYSQL": "capture.protocols.mysql",
    "REDIS": "capture.protocols.redis",
    "MEMCACHED": "capture.protocols.memcached",
    "NATS": "capture.protocols.nats",
    "DNS": "capture.protocols.dns",
    "MONGODB": "capture.protocols.mongodb",
    "KAFKA": "capture.protocols.kafka",
    "AMQP": "capture.protocols.amqp",
    "CASSANDRA": "capture.protocols.cassandra",
    "TLS_HANDSHAKE": "capture.protocols.tls_handshake",
}

_parsers: dict[str, type[Parser]] = {}
_detectors: dict[str, Callable[[bytes], "object"]] = {}


def parser_class(protocol: str) -> type[Parser] | None:
    """The parser class for a protocol name, or None if the protocol has no parser."""
    if protocol not in _parsers:
        mod_name = MODULES.get(protocol)
        if mod_name is None:
            return None
        mod = importlib.import_module(mod_name)
        _parsers[protocol] = mod.PARSER
        _detectors[protocol] = mod.detect
    return _parsers[protocol]


def detector(protocol: str):
    """The userspace detector `detect(data) -> Side | None` of a protocol (pcap source)."""
    parser_class(protocol)
    return _detectors.get(protocol)


def protocols() -> list[str]:
    return list(MODULES)
