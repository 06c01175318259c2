"""HTTP/1.0 and 1.1 (RFC 9112), parsed passively from both directions of a connection.

Hand-written framing because a passive observer needs what endpoint parsers don't give:
joining mid-stream, skipping bytes the capture did not copy (`size` > len(data)),
knowing a response to HEAD has no body, and resynchronising after garbage or loss.

Rule 1: requests are paired with responses in FIFO order (pipelining keeps order).
Rule 2: after lost or unparseable bytes a direction resyncs at the next chunk that starts
        like a message, and pending requests are dropped so nothing is mispaired.
Rule 3: bounded memory: a head or chunk line larger than MAX_HEAD is dropped and counted;
        requests waiting for their answer hold their first line and kept headers only, at most
        MAX_PENDING of them and MAX_PENDING_BYTES together (the oldest go first, counted).
"""
from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass, field

from capture.protocols import http1_head
from capture.protocols.base import Parser, Pending, Record, Side

try:
    from capture._http1 import scan as _scan  # http1_head.scan in C (setup.py builds it)
except ImportError:
    _scan = http1_head.scan

MAX_HEAD = 64 * 1024
MAX_PENDING = 1024
MAX_PENDING_BYTES = 64 * 1024
CACHED_LINE = 512  # start lines longer than this are parsed again rather than cached
METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT")
_REQUEST_START = re.compile(rb"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|TRACE|CONNECT) [/*h\w]")
_RESPONSE_START = re.compile(rb"HTTP/1\.[01] [1-5]\d\d[ \r]")
# Path segments that are ids, so that span names group: /users/42 -> /users/{id}
# (numbers, uuids/hashes, and codes carrying a run of 3+ digits such as SKU-000123 or INV2024)
_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-fA-F-]{16,}|[0-9a-fA-F]{8,}\d[0-9a-fA-F]*|[\w.-]*\d{3,}[\w.-]*)$")

# Framing states of one direction.
HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILERS, UNTIL_CLOSE, RESYNC, UPGRADED = range(9)
# What _body_length() says when the body's length is not a number of bytes.
CHUNKED, BY_CLOSE, BAD_LENGTH = -1, -2, -3
_BODILESS = frozenset((101, 204, 304))  # statuses whose responses never have a body
_CLIENT = Side.CLIENT


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/http1.h: which side sent this first chunk."""
    if _REQUEST_START.match(data):
        return Side.CLIENT
    if _RESPONSE_START.match(data):
        return Side.SERVER
    return None


def _could_start(data: bytes, side: Side) -> bool:
    """A chunk too short to detect that is still the beginning of a start line ("GE")."""
    if len(data) >= 16:
        return False
    tokens = [m + b" " for m in METHODS] if side == Side.CLIENT else [b"HTTP/1."]
    return any(t.startswith(data) or data.startswith(t) for t in tokens)


def route_of(path: str) -> str:
    """Low-cardinality form of a path for span names (cached: services repeat their paths;
    a long one is not kept, so the cache's memory stays small whatever clients send)."""
    return _route_of(path) if len(path) <= CACHED_LINE else _route_of.__wrapped__(path)


# the caches below keep what repeats; a request line with an id or a query in it never does, so
# unique lines fill them to their bound, and a larger bound is a rise in the agent's RSS that lasts
# for minutes (`python -m bench.soak` with log.memory_trace_frames: docs/benchmarks.md)
ROUTES_CACHED = 2048
LINES_CACHED = 1024


@lru_cache(maxsize=ROUTES_CACHED)
def _route_of(path: str) -> str:
    parts = path.split("/")
    return "/".join("{id}" if p and _ID_SEGMENT.match(p) else p for p in parts)


def cache_stats() -> dict[str, int]:
    """Entries and evictions of this module's caches (their misses past the bound: never cleared)."""
    out = {}
    for name, fn in (("route", _route_of), ("status_line", _status_of), ("request_line", _request_line)):
        info = fn.cache_info()
        out[f"{name}.entries"] = info.currsize
        out[f"{name}.evicted"] = max(0, info.misses - info.currsize)
    return out


def _body_length(status: int | None, req: "_Message | None", chunked: bool, content_length: int) -> int:
    """RFC 9112 §6.3: length of a message's body from its framing headers (as scanned by
    http1_head.scan), or CHUNKED, BY_CLOSE (a response without a length) or BAD_LENGTH.
    `status` is None for a request; `req` is the request a response answers (the response
    to HEAD has no body)."""
    if status is not None and (status in _BODILESS or (req is not None and req.first_line.startswith(b"HEAD "))):
        return 0
    if chunked:
        return CHUNKED
    if content_length != http1_head.NO_LENGTH:
        return content_length  # a length, or BAD_LENGTH (the same value in both modules)
    return 0 if status is None else BY_CLOSE


@lru_cache(maxsize=256)
def _status_of(line: bytes) -> tuple[int, str]:
    """Status code (0: none readable) and reason phrase of a status line (cached: servers
    repeat theirs)."""
    parts = line.split(b" ", 2)
    code = int(parts[1]) if len(parts) > 1 and len(parts[1]) == 3 and parts[1].isdigit() else 0
    return code, (parts[2].decode("latin-1") if len(parts) > 2 else "")


@lru_cache(maxsize=LINES_CACHED)
def _request_line(line: bytes) -> tuple[str, dict]:
    """Span name and attributes of a request line (cached: clients repeat their requests; the
    dict is shared, copy it)."""
    method, _, rest = line.partition(b" ")
    target, _, version = rest.rpartition(b" ") if b" HTTP/" in rest else (rest, b"", b"")
    path, _, query = target.decode("latin-1").partition("?")
    m = method.decode("latin-1")
    attrs = {
        "http.request.method": m,
        "url.path": path,
        "network.protocol.name": "http",
        "network.protocol.version": version[5:].decode("latin-1") or "1.1",
    }
    if query:
        attrs["url.query"] = query
    return (f"{m} {route_of(path)}" if path.startswith("/") else m), attrs


@dataclass(slots=True)
class _Message:
    """What a message leaves once its head is parsed: never the head itself, so a request
    waiting for its answer holds its first line and the kept headers only."""
    start_ns: int
    first_line: bytes = b""
    host: str | None = None  # the request headers kept as attributes (http1_head.KEPT)
    user_agent: str | None = None
    traceparent: str | None = None
    end_ns: int = 0


def _weight(m: _Message) -> int:
    """Bytes a waiting request holds, roughly: its object and what it kept of the head."""
    return _MESSAGE_BYTES + len(m.first_line) + len(m.host or "") + len(m.user_agent or "") + len(m.traceparent or "")


_MESSAGE_BYTES = 200  # a _Message and its strings' headers, about


@dataclass(slots=True)
class _Direction:
    side: Side
    state: int = HEAD
    buf: bytearray = field(default_factory=bytearray)
    remaining: int = 0
    msg: _Message | None = None


class Http1Parser(Parser):
    protocol = "HTTP1"

    def __init__(self) -> None:
        super().__init__()
        self._dirs = {Side.CLIENT: _Direction(Side.CLIENT), Side.SERVER: _Direction(Side.SERVER)}
        self._pending: Pending[_Message] = Pending(self.stats, MAX_PENDING, MAX_PENDING_BYTES)
        self._records: list[Record] = []

    # -- input ---------------------------------------------------------------------------
    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        d = self._dirs[side]
        if d.state == HEAD and not d.buf:
            out = self._whole(d, data, ts_ns, size or len(data))
            if out is not None:
                return out
        if d.state == UPGRADED:
            return []
        if d.state == RESYNC:
            if detect(data) != side:
                self.stats["resync_skipped_chunks"] += 1
                return []
            d.state, d.buf = HEAD, bytearray()
            self.stats["resyncs"] += 1
        if data:
            self._consume(d, data, ts_ns)
        missing = (size or 0) - len(data)
        if missing > 0:
            self._skip(d, missing, ts_ns)
        out, self._records = self._records, []
        return out

    def exchange(self, request: bytes, req_ts: int, req_size: int, response: bytes, resp_ts: int,
                 resp_size: int) -> list[Record]:
        """One whole request and one whole response, nothing waiting: their record straight away
        (what _whole() gives for the two chunks in turn, without the queue in between)."""
        if self.idle():
            head = _scan(request)
            if head is not None:
                end, first, request_ok, _st, chunked, content_length, host, agent, parent = head
                length = -1 if chunked else (content_length if content_length != http1_head.NO_LENGTH else 0)
                if request_ok and length >= 0 and end + 4 + length == req_size:
                    reply = _scan(response)
                    if reply is not None and reply[3] >= 200:
                        req = _Message(req_ts, first, host, agent, parent, req_ts)
                        length = _body_length(reply[3], req, reply[4], reply[5])
                        if length >= 0 and reply[0] + 4 + length == resp_size:
                            return [self._record(req, reply[1], resp_ts)]
        return super().exchange(request, req_ts, req_size, response, resp_ts, resp_size)

    def idle(self) -> bool:
        """Nothing buffered, framed or waiting: the next exchange starts from a clean state
        (the condition of exchange()'s shortcut, which capture/_fastpath.c takes in C)."""
        c, s = self._dirs[Side.CLIENT], self._dirs[Side.SERVER]
        return c.state == HEAD and s.state == HEAD and not c.buf and not s.buf and not self._pending

    def close(self, ts_ns: int) -> list[Record]:
        d = self._dirs[Side.SERVER]
        if d.state == UNTIL_CLOSE and d.msg is not None:
            self._complete(d, ts_ns)
        for req in self._pending:
            self.stats["requests_without_response"] += 1
            self._records.append(self._record(req, None, ts_ns))
        self._pending.clear()
        out, self._records = self._records, []
        return out

    # -- framing -------------------------------------------------------------------------
    def _whole(self, d: _Direction, data: bytes, ts_ns: int, size: int) -> list[Record] | None:
        """Fast path for the common chunk: exactly one message whose head is all there and
        whose body length is known. Its records, or None: leave it to the general framing."""
        head = _scan(data)
        if head is None:
            return None
        end, first, request_ok, status, chunked, content_length, host, agent, parent = head
        pending = self._pending
        if d.side == _CLIENT:
            if not request_ok:
                return None
            # _body_length() of a request, inline: this runs for every request
            length = CHUNKED if chunked else (content_length if content_length != http1_head.NO_LENGTH else 0)
        else:
            if status < 200:
                return None  # not a status line the fast path takes, interim or upgrade: general framing
            length = _body_length(status, pending.first(), chunked, content_length)
        if length < 0 or end + 4 + length != size:
            return None  # pipelined, more or less than one message, chunked, until close
        if d.side == _CLIENT:
            size = _MESSAGE_BYTES + len(first)  # _weight(), inline: this runs for every request
            if host is not None:
                size += len(host)
            if agent is not None:
                size += len(agent)
            if parent is not None:
                size += len(parent)
            pending.push(_Message(ts_ns, first, host, agent, parent, ts_ns), size)
            return []
        if not pending:
            self.stats["responses_without_request"] += 1
            return []
        return [self._record(pending.popleft(), first, ts_ns)]

    def _consume(self, d: _Direction, data: bytes, ts_ns: int) -> None:
        pos, n = 0, len(data)
        while pos < n and d.state not in (RESYNC, UPGRADED):
            if d.state == HEAD:
                pos = self._head(d, data, pos, ts_ns)
            elif d.state in (BODY, CHUNK_DATA):
                take = min(d.remaining, n - pos)
                d.remaining -= take
                pos += take
                if d.remaining == 0:
                    if d.state == BODY:
                        self._complete(d, ts_ns)
                    else:
                        d.state = CHUNK_CRLF
            elif d.state == UNTIL_CLOSE:
                return
            else:  # CHUNK_SIZE, CHUNK_CRLF, TRAILERS: line-oriented
                pos = self._chunk_line(d, data, pos, ts_ns)

    def _skip(self, d: _Direction, missing: int, ts_ns: int) -> None:
        """Bytes the capture did not copy: fine inside a body of known length."""
        if d.state in (BODY, CHUNK_DATA) and missing <= d.remaining:
            d.remaining -= missing
            if d.remaining == 0:
                if d.state == BODY:
                    self._complete(d, ts_ns)
                else:
                    d.state = CHUNK_CRLF
        elif d.state not in (UNTIL_CLOSE, UPGRADED):
            self._lose(d, "lost_bytes")

    def _lose(self, d: _Direction, reason: str) -> None:
        self.stats[reason] += 1
        d.state, d.buf, d.msg, d.remaining = RESYNC, bytearray(), None, 0
        self._pending.clear()  # Rule 2: never pair across a gap

    def _head(self, d: _Direction, data: bytes, pos: int, ts_ns: int) -> int:
        if not d.buf:
            if detect(data[pos:pos + 16]) != d.side and not _could_start(data[pos:pos + 16], d.side):
                self._lose(d, "garbage")
                return len(data)
            d.msg = _Message(start_ns=ts_ns)
            end = data.find(b"\r\n\r\n", pos)
            if end >= 0:  # fast path: the whole head is in this chunk, no copy to a buffer
                if not self._parse_head(d, _scan(data, pos, end)):
                    self._lose(d, "bad_head")
                    return len(data)
                return end + 4
        scan_from = max(len(d.buf) - 3, 0)
        d.buf += data[pos:]
        end = d.buf.find(b"\r\n\r\n", scan_from)
        if end < 0:
            if len(d.buf) > MAX_HEAD:
                self._lose(d, "head_too_large")
            return len(data)
        head = bytes(d.buf[:end])
        consumed = end + 4 - (len(d.buf) - (len(data) - pos))
        d.buf = bytearray()
        if not self._parse_head(d, _scan(head, 0, len(head))):
            self._lose(d, "bad_head")
            return len(data)
        return pos + consumed

    def _parse_head(self, d: _Direction, head: tuple) -> bool:
        """Take the head `head` (http1_head.scan's answer) of the message d.msg starts."""
        msg = d.msg
        assert msg is not None
        _end, msg.first_line, _request_ok, _status, chunked, content_length, *kept = head
        if d.side == Side.CLIENT:
            msg.host, msg.user_agent, msg.traceparent = kept
        parts = msg.first_line.split(b" ", 2)
        if len(parts) < 2:
            return False
        if d.side == Side.CLIENT:
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                return False
            status = None
        else:
            if len(parts[1]) != 3 or not parts[1].isdigit():
                return False
            status = int(parts[1])
            if 100 <= status < 200 and status != 101:
                d.msg = None  # interim (100 Continue): the final response follows
                d.state = HEAD
                return True
            if status == 101:
                self._complete(d, msg.start_ns)
                d.state = UPGRADED  # another protocol follows (websocket, h2c)
                self._dirs[Side.CLIENT].state = UPGRADED
                return True
        length = _body_length(status, self._pending.first(), chunked, content_length)
        if length == BAD_LENGTH:
            return False
        if length == CHUNKED:
            d.state = CHUNK_SIZE
        elif length == BY_CLOSE:
            d.state = UNTIL_CLOSE  # RFC 9112 §6.3: the body ends when the connection closes
        else:
            d.state, d.remaining = BODY, length
            if length == 0:
                self._complete(d, msg.start_ns)
        return True

    def _chunk_line(self, d: _Direction, data: bytes, pos: int, ts_ns: int) -> int:
        if d.buf:  # a line begun in an earlier chunk
            scan_from = len(d.buf) - 1
            d.buf += data[pos:]
            nl = d.buf.find(b"\r\n", scan_from)
            if nl >= 0:
                line = bytes(d.buf[:nl])
                new_pos = len(data) - (len(d.buf) - (nl + 2))
                d.buf = bytearray()
        else:  # found in place: copying the rest of the chunk for every line costs O(n^2)
            nl = data.find(b"\r\n", pos)
            if nl >= 0:
                line, new_pos = data[pos:nl], nl + 2
            else:
                d.buf += data[pos:]
        if nl < 0:
            if len(d.buf) > MAX_HEAD:
                self._lose(d, "bad_chunk")
            return len(data)
        if d.state == CHUNK_CRLF:
            if line:
                self._lose(d, "bad_chunk")
                return len(data)
            d.state = CHUNK_SIZE
        elif d.state == CHUNK_SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                self._lose(d, "bad_chunk")
                return len(data)
            d.state, d.remaining = (TRAILERS, 0) if size == 0 else (CHUNK_DATA, size)
        elif not line:  # TRAILERS end with an empty line
            self._complete(d, ts_ns)
        return new_pos

    # -- pairing -------------------------------------------------------------------------
    def _complete(self, d: _Direction, ts_ns: int) -> None:
        msg = d.msg
        d.state, d.msg, d.remaining = HEAD, None, 0
        if d.buf:
            d.buf = bytearray()
        if msg is None:
            return
        msg.end_ns = ts_ns
        if d.side == Side.CLIENT:
            self._pending.push(msg, _weight(msg))
        elif self._pending:
            self._records.append(self._record(self._pending.popleft(), msg.first_line, ts_ns))
        else:
            self.stats["responses_without_request"] += 1

    def _record(self, req: _Message, status_line: bytes | None, end_ns: int) -> Record:
        """The exchange of `req` and the response starting with `status_line` (None: none came)."""
        line = req.first_line
        name, line_attrs = _request_line(line) if len(line) <= CACHED_LINE else _request_line.__wrapped__(line)
        attrs = line_attrs.copy()
        if req.host is not None:
            attrs["http.request.header.host"] = req.host
        if req.user_agent is not None:
            attrs["user_agent.original"] = req.user_agent
        if req.traceparent is not None:
            attrs["http.request.header.traceparent"] = req.traceparent
        status, message = "UNSET", ""
        if status_line is not None:
            code, reason = (_status_of if len(status_line) <= CACHED_LINE else _status_of.__wrapped__)(status_line)
            if code:
                attrs["http.response.status_code"] = code
            if code >= 500:
                status, message = "ERROR", reason
                attrs["error.type"] = str(code)
        else:
            status, message = "ERROR", "connection closed before a response"
            attrs["error.type"] = "no_response"
        return Record(name=name, start_ns=req.start_ns, end_ns=end_ns, attributes=attrs,
                      status=status, status_message=message)

PARSER = Http1Parser
