"""Redis RESP2 and RESP3 (redis.io/docs/latest/develop/reference/protocol-spec), parsed passively.

Rule 1: every command is its own span, replies pair in FIFO order (pipelines keep order).
Rule 2: pub/sub: (P|S)SUBSCRIBE gets one confirmation per channel; pushed messages
        ("message"/"pmessage"/"smessage" arrays, RESP3 `>` pushes) become CONSUMER records.
Rule 3: AUTH and HELLO ... AUTH arguments never reach attributes; values are never kept.
Rule 4: after garbage or lost bytes a direction resyncs at the next chunk that starts like
        a message, and pending commands are dropped so nothing is mispaired. Bytes the capture
        did not copy are skipped by length inside a bulk string; anywhere else they lose sync.
Rule 5: parsing is incremental (RespReader): consumed bytes leave the buffer at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from capture.protocols.base import Direction, Parser, Pending, Record, Side, lose

MAX_PENDING = 4096
MAX_LINE = 64 * 1024  # a type line or inline command longer than this is garbage
KEEP = 4096  # bytes of a bulk string kept (more than db.query.text or a status message shows)
MAX_ITEMS = 1024  # items of an aggregate kept (the rest are read and dropped)
MAX_DEPTH = 64  # nesting of aggregates
MAX_QUERY = 1024  # characters of a command line kept in db.query.text
_REQUEST_START = re.compile(rb"\*\d{1,2}\r\n\$\d")
_REPLY_START = re.compile(rb"[+\-:$*%~>_,#!=(|]")
_SUBSCRIBE = {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"}
_PUSHED = {b"message", b"pmessage", b"smessage"}
_UNSUBSCRIBED = {b"unsubscribe", b"punsubscribe", b"sunsubscribe"}
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


def _int(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _Garbage from None


_BULK = frozenset(b"$!=")  # bulk string, blob error, verbatim string
_AGGREGATE = frozenset(b"*~>%|")  # array, set, push, map, attribute
_MORE = object()  # RespReader.next: need more bytes


class RespReader:
    """Reads RESP values from one direction as its bytes arrive (Rule 5).

    State between chunks is the stack of aggregates being filled and the bulk string being
    read, so every byte is looked at once: a large reply costs what its length does, however it
    is chunked. Bulk strings keep their first KEEP bytes; aggregates their first MAX_ITEMS items.
    """

    __slots__ = ("stack", "bulk", "bulk_size", "bulk_left", "bulk_type")

    def __init__(self) -> None:
        self.stack: list[list] = []  # [type, items still to read, items]
        self.bulk: bytearray | None = None  # the bulk string being read, None when none is
        self.bulk_size = self.bulk_left = self.bulk_type = 0

    @property
    def idle(self) -> bool:
        return not self.stack and self.bulk is None

    def skip(self, n: int) -> bool:
        """`n` bytes the capture did not copy: True if they fall inside the bulk being read."""
        if self.bulk is None or n > self.bulk_left:
            return False
        self.bulk_left -= n
        return True

    def next(self, buf: bytearray, pos: int, inline: bool):
        """(value or _MORE, next position); raises _Garbage. `inline`: a client's line command."""
        while True:
            if self.bulk is not None:
                take = min(self.bulk_left, len(buf) - pos)
                room = min(self.bulk_size, KEEP) - len(self.bulk)
                if room > 0:
                    self.bulk += buf[pos : pos + min(take, room)]
                if take == self.bulk_left and take >= 2 and buf[pos + take - 2 : pos + take] != b"\r\n":
                    raise _Garbage
                pos += take
                self.bulk_left -= take
                if self.bulk_left:
                    return _MORE, pos
                raw, self.bulk = bytes(self.bulk), None
                value = Error(raw.decode("utf-8", "replace")) if self.bulk_type == 0x21 else raw
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_LINE:
                        raise _Garbage
                    return _MORE, pos
                t, line = buf[pos], bytes(buf[pos + 1 : end])
                if inline and not self.stack and t != 0x2A:
                    args, _ = parse_inline(bytes(buf[pos : end + 2]), 0)
                    return args, end + 2
                pos = end + 2
                if t in _BULK:
                    n = _int(line)
                    if n < 0:
                        value = None
                    elif pos + n + 2 <= len(buf):  # the common case: the whole string is here
                        if buf[pos + n : pos + n + 2] != b"\r\n":
                            raise _Garbage
                        raw = bytes(buf[pos : pos + min(n, KEEP)])
                        pos += n + 2
                        value = Error(raw.decode("utf-8", "replace")) if t == 0x21 else raw
                    else:
                        self.bulk, self.bulk_size, self.bulk_left, self.bulk_type = bytearray(), n, n + 2, t
                        continue
                elif t in _AGGREGATE:
                    n = _int(line)
                    if n > 1_000_000 or len(self.stack) >= MAX_DEPTH:
                        raise _Garbage
                    if n > 0:
                        self.stack.append([t, n * 2 if t in (0x25, 0x7C) else n, []])
                        continue
                    if t == 0x7C:
                        continue  # an empty attribute annotates nothing
                    value = None if n < 0 else (Push([]) if t == 0x3E else [])
                elif t == 0x2B:  # + simple string
                    value = line
                elif t == 0x2D:  # - error
                    value = Error(line.decode("utf-8", "replace"))
                elif t in (0x3A, 0x28):  # : integer, ( big number
                    value = _int(line)
                elif t in (0x5F, 0x2C, 0x23):  # _ null, , double, # boolean
                    value = line
                else:
                    raise _Garbage
            # a whole value: it fills its aggregate, which may complete its own parent
            while self.stack:
                top = self.stack[-1]
                if len(top[2]) < MAX_ITEMS:
                    top[2].append(value)
                top[1] -= 1
                if top[1]:
                    break
                self.stack.pop()
                if top[0] == 0x7C:
                    break  # an attribute annotates the reply that follows it: not a value itself
                value = Push(top[2]) if top[0] == 0x3E else top[2]
            else:
                return value, pos


def parse_value(buf: bytes, pos: int):
    """One whole RESP value at `pos` -> (value, next position); raises _Incomplete or _Garbage."""
    value, end = RespReader().next(bytearray(buf), pos, False)
    if value is _MORE:
        raise _Incomplete
    return value, end


def _line(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    return buf[pos:end], end + 2


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


class RedisParser(Parser):
    protocol = "REDIS"

    def __init__(self) -> None:
        super().__init__()
        self._dirs = {Side.CLIENT: Direction(), Side.SERVER: Direction()}
        self._readers = {Side.CLIENT: RespReader(), Side.SERVER: RespReader()}
        self._pending: Pending[_Command] = Pending(self.stats, MAX_PENDING)
        self._subscribed = False

    def idle(self) -> bool:
        """Nothing buffered, read halfway or waiting, not subscribed: the state every connection
        is in between exchanges (capture/fastpath.py hands such a connection to the C path)."""
        return (not self._pending and not self._subscribed
                and all(not d.buf and not d.resync for d in self._dirs.values())
                and all(r.idle for r in self._readers.values()))

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        d, r = self._dirs[side], self._readers[side]
        if d.resync:
            if not (detect(data) == side or (side == Side.SERVER and _REPLY_START.match(data))):
                self.stats["resync_skipped_chunks"] += 1
                return []
            d.resync, d.buf = False, bytearray()
            self._readers[side] = r = RespReader()
            self.stats["resyncs"] += 1
        if not d.buf and r.idle:
            d.start_ns = ts_ns
        d.buf += data
        out: list[Record] = []
        if not self._parse(side, d, r, ts_ns, out):
            return out
        missing = (size or 0) - len(data)
        if missing > 0:
            if d.buf or not r.skip(missing):
                self._lose(d, "lost_bytes")
            else:
                self._parse(side, d, r, ts_ns, out)  # the skip may have ended a bulk string
        return out

    def _parse(self, side: Side, d: Direction, r: RespReader, ts_ns: int, out: list[Record]) -> bool:
        """Take every whole value out of `d.buf`; False when the direction lost sync."""
        buf, pos = d.buf, 0
        client = side == Side.CLIENT
        while True:
            try:
                value, pos = r.next(buf, pos, client)
            except (_Garbage, _Incomplete):
                self._lose(d, "garbage")
                return False
            if value is _MORE:
                break
            if client:
                self._request(value, d.start_ns)
            else:
                rec = self._reply(value, d.start_ns, ts_ns)
                if rec is not None:
                    out.append(rec)
            d.start_ns = ts_ns
        del buf[:pos]
        return True

    def close(self, ts_ns: int) -> list[Record]:
        out = []
        for cmd in self._pending.drain():
            if not cmd.answered:
                self.stats["requests_without_response"] += 1
                out.append(_record(cmd, _CLOSED, ts_ns))
        return out

    def _lose(self, d: Direction, reason: str) -> None:
        lose(self.stats, d, self._pending, reason)  # Rule 4

    def _request(self, value, ts_ns: int) -> None:
        if not isinstance(value, list) or not value or not all(isinstance(a, bytes) for a in value):
            self.stats["bad_command"] += 1
            return
        cmd = _Command(value, ts_ns)
        name = value[0].upper()
        if name in (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE"):
            cmd.expect = max(len(value) - 1, 1)
            self._subscribed = True
        elif name in (b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"SUNSUBSCRIBE"):
            cmd.expect = max(len(value) - 1, 1)  # without arguments: one per channel, counted below
        self._pending.push(cmd)

    def _reply(self, value, start_ns: int, ts_ns: int) -> Record | None:
        items = value.items if isinstance(value, Push) else value
        kind = items[0].lower() if isinstance(items, list) and items and isinstance(items[0], bytes) else b""
        if kind in _PUSHED and (self._subscribed or isinstance(value, Push)):
            return _message(items, start_ns, ts_ns)
        if kind in _UNSUBSCRIBED and len(items) >= 3:
            if items[2] == 0:  # the count of channels still subscribed
                self._subscribed = False
            head = self._pending[0].args[0].upper() if self._pending else b""
            if head.decode("latin-1", "replace") not in _SUBSCRIBE:
                return None  # a further confirmation of an UNSUBSCRIBE already answered
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
