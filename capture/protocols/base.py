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
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generic, Hashable, Iterator, TypeVar

T = TypeVar("T")


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
    # the capture sits at the server's end of the connection (its role; Pipeline.new_parser sets it):
    # there a request is read only once the previous one is answered, by a server that takes them
    # one at a time, which some parsers rely on (mysql.py Rule 5)
    at_server: bool = False

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

    def exchange(self, request: bytes, req_ts: int, req_size: int, response: bytes, resp_ts: int,
                 resp_size: int) -> list[Record]:
        """A request chunk and the response chunk that followed it (paired in the kernel): what
        feeding the two in turn returns. Parsers may take a shorter way for the common case."""
        return self.feed(Side.CLIENT, request, req_ts, req_size) + self.feed(Side.SERVER, response, resp_ts, resp_size)


class Pending(Generic[T]):
    """Requests waiting for their answer, in arrival order, optionally found by a key
    (correlation id, stream id). At `limit` the oldest is dropped and counted as `pending_overflow`.

    With `max_bytes`, queued items (FIFO) also hold at most that many bytes together (each
    pushed with its size): past it the oldest go, counted as `pending_overflow_bytes`. What one
    unanswered connection can hold is then bounded by size, not only by count."""

    __slots__ = ("_items", "_keyed", "limit", "stats", "max_bytes", "_sizes", "bytes")

    def __init__(self, stats: Counter[str], limit: int = 4096, max_bytes: int = 0) -> None:
        self._items: deque[T] = deque()
        self._keyed: dict[Hashable, T] = {}
        self.limit, self.stats, self.max_bytes = limit, stats, max_bytes
        self._sizes: deque[int] = deque()  # each queued item's size, when bounded in bytes
        self.bytes = 0

    def push(self, item: T, size: int = 0) -> None:
        """Queue `item` (holding about `size` bytes) at the back (FIFO pairing)."""
        if len(self._items) >= self.limit:
            self.popleft()
            self.stats["pending_overflow"] += 1
        self._items.append(item)
        if self.max_bytes:
            self._sizes.append(size)
            self.bytes += size
            while self.bytes > self.max_bytes and len(self._items) > 1:
                self.popleft()
                self.stats["pending_overflow_bytes"] += 1

    def put(self, key: Hashable, item: T) -> None:
        """Keep `item` under `key` (pairing by id); a key reused before its answer replaces the old one."""
        if key not in self._keyed and len(self._keyed) >= self.limit:
            self._keyed.pop(next(iter(self._keyed)))
            self.stats["pending_overflow"] += 1
        self._keyed[key] = item

    def get(self, key: Hashable) -> T | None:
        """The item kept under `key`, left in place (and in its age order)."""
        return self._keyed.get(key)

    def oldest(self) -> tuple[Hashable, T] | None:
        """The keyed item kept longest and its key, not removed; None when none is kept."""
        for key, item in self._keyed.items():
            return key, item
        return None

    def take(self, key: Hashable) -> T | None:
        """The item kept under `key`, removed; None when nothing waits under it."""
        return self._keyed.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keyed

    def first(self) -> T | None:
        return self._items[0] if self._items else None

    def popleft(self) -> T:
        if self._sizes:
            self.bytes -= self._sizes.popleft()
        return self._items.popleft()

    def drain(self) -> list[T]:
        """Everything still waiting (queued then keyed), removed: what a close or a resync drops."""
        out = list(self._items) + list(self._keyed.values())
        self.clear()
        return out

    def clear(self) -> None:
        self._items.clear()
        self._keyed.clear()
        self._sizes.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items) + len(self._keyed)

    def __bool__(self) -> bool:
        return bool(self._items) or bool(self._keyed)

    def __iter__(self) -> Iterator[T]:
        yield from self._items
        yield from self._keyed.values()

    def __getitem__(self, i: int) -> T:
        return self._items[i]


@dataclass(slots=True)
class Direction:
    """One direction of a buffered stream: bytes not yet parsed and how to go on after a gap.

    `need`: the buffer cannot be parsed further before it holds this many bytes (parsers set it
    when a message's length is known, so a large message is not re-parsed on every chunk).
    `skip`: bytes of the stream still to discard (the tail of a message kept as a prefix).
    """

    buf: bytearray = field(default_factory=bytearray)
    resync: bool = False
    start_ns: int = 0
    need: int = 0
    skip: int = 0


SKIPPED, LOST, BUFFERED = range(3)
WAIT = SKIPPED  # nothing new to parse yet
MAX_FILL = 64 * 1024  # lost bytes stood in by zeros inside a line-framed message, at most


def buffer_chunk(stats: Counter, d: Direction, data: bytes, ts_ns: int, size: int | None,
                 starts: Callable[[bytes], bool], max_fill: int = MAX_FILL) -> int:
    """The common first step of parsers that buffer a direction's bytes (Rule 2).

    Bytes still owed to `d.skip` are dropped first, copied or not. While resynchronising,
    chunks are SKIPPED until one `starts(data)` a message. The chunk is then appended (noting
    when a message began); up to `max_fill` bytes the capture did not copy are stood in by
    zeros (a line-framed parser cannot skip by length), more is LOST and the caller resyncs.
    WAIT: the buffer is still shorter than `d.need`.
    """
    missing = max(0, (size or 0) - len(data))
    if d.skip:
        n = min(d.skip, len(data))
        d.skip -= n
        data = data[n:]
        n = min(d.skip, missing)
        d.skip -= n
        missing -= n
        if not data and not missing:
            return WAIT
    if d.resync:
        if not starts(data):
            stats["resync_skipped_chunks"] += 1
            return SKIPPED
        d.resync, d.buf, d.need = False, bytearray(), 0
        stats["resyncs"] += 1
    if not d.buf:
        d.start_ns = ts_ns
    d.buf += data
    if missing:
        if missing > max_fill:
            return LOST
        d.buf += bytes(missing)
    if len(d.buf) < d.need:
        return WAIT
    return BUFFERED


def lose(stats: Counter, d: Direction, pending: "Pending | None", reason: str) -> None:
    """The one meaning of lost sync (Rule 2): count `reason`, drop the direction's bytes and wait
    for a chunk that starts a message, and drop waiting requests so nothing is mispaired."""
    stats[reason] += 1
    d.resync, d.buf, d.need, d.skip = True, bytearray(), 0, 0
    if pending is not None:
        pending.clear()


def detect_side_from_first_bytes(is_request: bool | None) -> Side | None:
    """Map a detector's verdict (request / response / unknown) to the side that sent it."""
    if is_request is None:
        return None
    return Side.CLIENT if is_request else Side.SERVER


class FramedParser(Parser):
    """A parser of length-prefixed frames (frames.FrameReader on each side) pairing by id.

    A subclass sets `header_len` and `frame_length(header) -> total length or None`, and writes
    `_request(frame, out)`, `_response(frame, out)` and `_record(request, response, end_ns)`;
    requests waiting for an answer live in `self._pending` (keyed by correlation id).
    """

    header_len: ClassVar[int | Callable[[int], int]]
    max_pending: ClassVar[int] = 1024

    def __init__(self) -> None:
        super().__init__()
        from capture.protocols.frames import FrameReader

        self._readers = {side: FrameReader(self.header_len, self.frame_length, self.stats) for side in Side}
        self._pending: Pending = Pending(self.stats, self.max_pending)

    @staticmethod
    @abstractmethod
    def frame_length(header: bytes) -> int | None:
        """Total length of the frame this header starts, or None when it is not a valid header."""

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        out: list[Record] = []
        handle = self._request if side == Side.CLIENT else self._response
        for f in self._readers[side].feed(data, ts_ns, size):
            handle(f, out)
        return out

    def close(self, ts_ns: int) -> list[Record]:
        out = [self._record(r, None, ts_ns) for r in self._pending.drain()]
        self.stats["requests_without_response"] += len(out)
        return out

    def _lose(self, side: Side, reason: str) -> None:
        """Lost sync on `side` (Rule 2): its reader waits for a valid header; pending requests stay
        paired by id, so an answer that still arrives finds its request."""
        self._readers[side].lose(reason)

    @abstractmethod
    def _request(self, f, out: list[Record]) -> None: ...

    @abstractmethod
    def _response(self, f, out: list[Record]) -> None: ...

    @abstractmethod
    def _record(self, request, response, end_ns: int, **kw) -> Record: ...
