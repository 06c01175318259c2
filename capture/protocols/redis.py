"""Redis RESP2 and RESP3 (redis.io/docs/latest/develop/reference/protocol-spec), parsed passively.

Rule 1: every command is its own span, replies pair in FIFO order (pipelines keep order).
Rule 2: pub/sub: (P|S)SUBSCRIBE gets one confirmation per channel; pushed messages
        ("message"/"pmessage"/"smessage" arrays, RESP3 `>` pushes) become CONSUMER records.
Rule 3: AUTH and HELLO ... AUTH arguments never reach attributes; values are never kept.
Rule 4: after garbage or lost bytes a direction resyncs at the next chunk that starts like
        a message, and pending commands are dropped so nothing is mispaired.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from capture.protocols.base import LOST, Parser, Record, SKIPPED, Side, buffer_chunk

MAX_PENDING = 4096
MAX_BUFFER = 4 * 1024 * 1024  # a message larger than this is skipped by resync
MAX_FILL = 16 * 1024 * 1024  # bytes the capture did not copy that we stand in zeros for
MAX_QUERY = 1024  # characters of a command line kept in db.query.text
_REQUEST_START = re.compile(rb"\*\d{1,2}\r\n\$\d")
_REPLY_START = re.compile(rb"[+\-:$*%~>_,#!=(|]")
_SUBSCRIBE = {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"}
_PUSHED = {b"message", b"pmessage", b"smessage"}
_SECRET_COMMANDS = {"AUTH", "HELLO", "MIGRATE", "CONFIG"}
_TWO_WORD = {"CONFIG", "CLIENT", "CLUSTER", "COMMAND", "MEMORY", "OBJECT", "SCRIPT", "XGROUP", "XINFO",
             "FUNCTION", "ACL", "SLOWLOG", "LATENCY", "MODULE", "PUBSUB"}


class _Incomplete(Exception):
    """Need more bytes."""


class _Garbage(Exception):
    """Not RESP."""


class Error(str):
    """A RESP error reply (simple `-` or blob `!`)."""


_CLOSED = object()  # the connection closed before the command's reply (a nil reply is None)


@dataclass(slots=True)
class Push:
    """A RESP3 out-of-band push (`>`)."""

    items: list


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/redis.h."""
    if _REQUEST_START.match(data):
        return Side.CLIENT
    if len(data) >= 4 and data.endswith(b"\r\n") and re.match(rb"(\+[A-Z]|-[A-Z]{2}|[:$][-\d]\d)", data):
        return Side.SERVER
    return None


def _line(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if len(buf) - pos > 64 * 1024:
            raise _Garbage
        raise _Incomplete
    return buf[pos:end], end + 2


def _int(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _Garbage from None


def parse_value(buf: bytes, pos: int):
    """One RESP value at `pos` -> (value, next position); raises _Incomplete or _Garbage."""
    if pos >= len(buf):
        raise _Incomplete
    t = buf[pos]
    line, pos = _line(buf, pos + 1)
    if t in (0x24, 0x21, 0x3d):  # $ bulk, ! blob error, = verbatim
        n = _int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise _Incomplete
        if buf[pos + n : pos + n + 2] not in (b"\r\n", b"\0\0"):  # zeros: bytes the capture lost
            raise _Garbage
        v = buf[pos : pos + n]
        return (Error(v.decode("utf-8", "replace")) if t == 0x21 else v), pos + n + 2
    if t in (0x2a, 0x7e, 0x3e, 0x25, 0x7c):  # * array, ~ set, > push, % map, | attribute
        n = _int(line)
        if n < 0:
            return None, pos
        if n > 1_000_000:
            raise _Garbage
        items = []
        for _ in range(n * 2 if t in (0x25, 0x7c) else n):
            v, pos = parse_value(buf, pos)
            items.append(v)
        if t == 0x7c:  # an attribute annotates the reply that follows it
            return parse_value(buf, pos)
        return (Push(items) if t == 0x3e else items), pos
    if t == 0x2b:  # + simple string
        return line, pos
    if t == 0x2d:  # - error
        return Error(line.decode("utf-8", "replace")), pos
    if t in (0x3a, 0x28):  # : integer, ( big number
        return _int(line), pos
    if t in (0x5f, 0x2c, 0x23):  # _ null, , double, # boolean
        return line, pos
    raise _Garbage


def parse_inline(buf: bytes, pos: int) -> tuple[list[bytes], int]:
    """An inline command ("SET k "a b"\r\n"), split like redis' sdssplitargs; bad quotes split on spaces."""
    line, end = _line(buf, pos)
    line = line.rstrip(b"\r")
    if not line or line[0] < 0x20 or not line[:1].isalpha():
        raise _Garbage
    return _split_args(line) or [line], end


def _split_args(line: bytes) -> list[bytes]:
    args: list[bytes] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in b" \t":
            i += 1
        if i >= n:
            break
        quote = line[i] if line[i] in b"\"'" else 0
        cur = bytearray()
        i += 1 if quote else 0
        while i < n:
            c = line[i]
            if quote and c == 0x5C and i + 1 < n:  # backslash escape inside quotes
                cur.append(line[i + 1])
                i += 2
                continue
            if (quote and c == quote) or (not quote and c in b" \t"):
                i += 1
                break
            cur.append(c)
            i += 1
        else:
            if quote:  # unbalanced quotes: the server refuses it; keep the words
                return line.split()
        args.append(bytes(cur))
    return args


@dataclass(slots=True)
class _Command:
    args: list[bytes]
    start_ns: int
    expect: int = 1  # replies this command gets (SUBSCRIBE a b: two)
    answered: bool = False


@dataclass(slots=True)
class _Direction:
    buf: bytearray = field(default_factory=bytearray)
    resync: bool = False
    start_ns: int = 0


class RedisParser(Parser):
    protocol = "REDIS"

    def __init__(self) -> None:
        super().__init__()
        self._dirs = {Side.CLIENT: _Direction(), Side.SERVER: _Direction()}
        self._pending: deque[_Command] = deque()
        self._subscribed = False

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        d = self._dirs[side]
        starts = lambda b: (detect(b) == side  # noqa: E731
                            or (side == Side.SERVER and bool(_REPLY_START.match(b))))
        got = buffer_chunk(self.stats, d, data, ts_ns, size, starts, MAX_FILL)
        if got == SKIPPED:
            return []
        if got == LOST:
            return self._lose(d, "lost_bytes")
        out: list[Record] = []
        buf, pos = bytes(d.buf), 0
        while pos < len(buf):
            try:
                if side == Side.CLIENT and buf[pos] != 0x2A:  # not '*': an inline command line
                    value, end = parse_inline(buf, pos)
                else:
                    value, end = parse_value(buf, pos)
            except _Incomplete:
                if len(buf) - pos > MAX_BUFFER:
                    return out + self._lose(d, "message_too_large")
                break
            except (_Garbage, RecursionError):
                return out + self._lose(d, "garbage")
            if side == Side.CLIENT:
                self._request(value, d.start_ns)
            else:
                rec = self._reply(value, d.start_ns, ts_ns)
                if rec is not None:
                    out.append(rec)
            pos = end
            d.start_ns = ts_ns
        del d.buf[:pos]
        return out

    def close(self, ts_ns: int) -> list[Record]:
        out = []
        for cmd in self._pending:
            if not cmd.answered:
                self.stats["requests_without_response"] += 1
                out.append(_record(cmd, _CLOSED, ts_ns))
        self._pending.clear()
        return out

    def _lose(self, d: _Direction, reason: str) -> list[Record]:
        self.stats[reason] += 1
        d.resync, d.buf = True, bytearray()
        self._pending.clear()  # Rule 4
        return []

    def _request(self, value, ts_ns: int) -> None:
        if not isinstance(value, list) or not value or not all(isinstance(a, bytes) for a in value):
            self.stats["bad_command"] += 1
            return
        cmd = _Command(value, ts_ns)
        name = value[0].upper()
        if name in (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE"):
            cmd.expect = max(len(value) - 1, 1)
            self._subscribed = True
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.stats["pending_overflow"] += 1
        self._pending.append(cmd)

    def _reply(self, value, start_ns: int, ts_ns: int) -> Record | None:
        items = value.items if isinstance(value, Push) else value
        kind = items[0].lower() if isinstance(items, list) and items and isinstance(items[0], bytes) else b""
        if kind in _PUSHED and (self._subscribed or isinstance(value, Push)):
            return _message(items, start_ns, ts_ns)
        if isinstance(value, Push) and not (self._pending and self._pending[0].args[0].upper().decode(
                "latin-1", "replace") in _SUBSCRIBE):
            self.stats["pushes"] += 1  # e.g. client tracking invalidations
            return None
        if not self._pending:
            self.stats["responses_without_request"] += 1
            return None
        cmd = self._pending[0]
        cmd.expect -= 1
        if cmd.expect <= 0:
            self._pending.popleft()
        if cmd.answered:
            return None
        cmd.answered = True
        if kind in (b"unsubscribe", b"punsubscribe", b"sunsubscribe") and isinstance(items, list) and \
                len(items) >= 3 and items[2] == 0:
            self._subscribed = False
        return _record(cmd, value, ts_ns)


def _operation(args: list[bytes]) -> str:
    name = args[0].decode("latin-1", "replace").upper()
    if name in _TWO_WORD and len(args) > 1:
        return f"{name} {args[1].decode('latin-1', 'replace').upper()}"
    return name


def _query_text(args: list[bytes]) -> str:
    name = args[0].decode("latin-1", "replace").upper()
    if name in _SECRET_COMMANDS:
        return _operation(args) + (" ?" * (len(args) - (2 if name in _TWO_WORD and len(args) > 1 else 1)))
    text = " ".join(a.decode("utf-8", "replace") for a in args)
    return text[:MAX_QUERY]


def _record(cmd: _Command, reply, end_ns: int) -> Record:
    op = _operation(cmd.args)
    attrs: dict = {"db.system": "redis", "db.operation.name": op, "db.query.text": _query_text(cmd.args)}
    status, message = "UNSET", ""
    if reply is _CLOSED:
        status, message = "ERROR", "connection closed before a reply"
        attrs["error.type"] = "no_response"
    elif isinstance(reply, Error):
        prefix = reply.split(" ", 1)[0]
        status, message = "ERROR", str(reply)[:256]
        attrs["error.type"] = prefix
        attrs["db.response.status_code"] = prefix
    elif op in ("PUBLISH", "SPUBLISH") and len(cmd.args) > 1:
        attrs["messaging.system"] = "redis"
        attrs["messaging.destination.name"] = cmd.args[1].decode("utf-8", "replace")
        attrs["messaging.operation.type"] = "send"
    return Record(name=op, start_ns=cmd.start_ns, end_ns=end_ns, attributes=attrs, status=status,
                  status_message=message)


def _message(items: list, start_ns: int, end_ns: int) -> Record:
    channel = items[2] if items[0].lower() == b"pmessage" and len(items) > 2 else (items[1] if len(items) > 1 else b"")
    chan = channel.decode("utf-8", "replace") if isinstance(channel, bytes) else ""
    attrs = {"db.system": "redis", "messaging.system": "redis", "messaging.destination.name": chan,
             "messaging.operation.type": "receive", "db.operation.name": items[0].decode("latin-1").upper()}
    return Record(name=f"receive {chan}", start_ns=start_ns, end_ns=end_ns, attributes=attrs,
                  kind="CONSUMER")


PARSER = RedisParser
