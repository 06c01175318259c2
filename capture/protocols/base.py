"""The interface every protocol parser implements, and the records they produce.

Rule 1: parsers are sans-IO. Bytes go in with the side that sent them and a timestamp;
        records (a request paired with its response) come out. No sockets, no BPF.
Rule 2: a parser is a passive observer. It may join a connection mid-stream, see a
        truncated copy of a message (`size` > len(data): the missing bytes follow `data`
        in the stream) or garbage. It never raises on bad input: it counts the problem in
        `stats`, resynchronises where the protocol allows, and goes on.
Rule 3: one parser instance per connection; pairing (FIFO, correlation id, stream id)
        happens inside it, so pipelined and concurrent requests each get one record.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar


class Side(enum.IntEnum):
    """Who sent the bytes. CLIENT bytes are requests, SERVER bytes responses."""

    CLIENT = 0
    SERVER = 1


@dataclass(slots=True)
class Record:
    """One exchange: a request and its response (or a lone message), ready to become a span."""

    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "UNSET"  # "OK", "ERROR" or "UNSET" (OpenTelemetry span status)
    status_message: str = ""
    kind: str | None = None  # PRODUCER/CONSUMER etc.; None: from the connection's role


class Parser(ABC):
    """Base class of a per-connection protocol parser.

    `protocol` is the name of the protocol's id in bpf/types.h without its PROTO_ prefix.
    """

    protocol: ClassVar[str]

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    @abstractmethod
    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        """Consume one chunk of the stream sent by `side`; return the exchanges it completed.

        `size` is the chunk's real length in the stream when only a prefix was copied.
        """

    def close(self, ts_ns: int) -> list[Record]:
        """The connection ended: return requests still waiting for a response."""
        return []


SKIPPED, LOST, BUFFERED = range(3)


def buffer_chunk(stats: Counter, d, data: bytes, ts_ns: int, size: int | None,
                 starts: Callable[[bytes], bool], max_fill: int) -> int:
    """The common first step of parsers that buffer a direction's bytes (Rule 2).

    `d` has `resync`, `buf` and `start_ns`. While resynchronising, chunks are SKIPPED until
    one `starts(data)` a message. The chunk is then appended (noting when a message began),
    and up to `max_fill` bytes the capture did not copy are stood in by zeros, which keeps
    length-prefixed framing; more than that is LOST and the caller resyncs.
    """
    if d.resync:
        if not starts(data):
            stats["resync_skipped_chunks"] += 1
            return SKIPPED
        d.resync, d.buf = False, bytearray()
        stats["resyncs"] += 1
    if not d.buf:
        d.start_ns = ts_ns
    d.buf += data
    missing = (size or 0) - len(data)
    if missing > 0:
        if missing > max_fill:
            return LOST
        d.buf += bytes(missing)
    return BUFFERED


def detect_side_from_first_bytes(is_request: bool | None) -> Side | None:
    """Map a detector's verdict (request / response / unknown) to the side that sent it."""
    if is_request is None:
        return None
    return Side.CLIENT if is_request else Side.SERVER
