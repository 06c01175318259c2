"""Memcached text and binary protocols (github.com/memcached/memcached/blob/master/doc/protocol.txt,
protocol_binary.xml), parsed passively. get/set/delete/... each become one span; gets say hit/miss.

Rule 1: text replies pair in FIFO order; `noreply` commands complete without a reply.
Rule 2: binary replies pair by opaque; quiet gets (GETQ/GETKQ) that get no reply before a
        later reply were misses.
Rule 3: after garbage or lost bytes a direction resyncs at the next chunk that starts like
        a message and pending commands are dropped. Values are never kept.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from capture.protocols.base import LOST, SKIPPED, Direction, Parser, Pending, Record, Side, buffer_chunk, lose

MAX_PENDING = 4096
MAX_LINE = 8192
WAIT_PAYLOAD = 64 * 1024  # a smaller payload is waited for; a larger one ends its message at once
MAX_FILL = 1024 * 1024  # lost bytes stood in by zeros (a payload the capture cut short)
MAX_MESSAGE = 256  # bytes of a binary error's text kept
MAX_BODY = 64 * 1024 * 1024  # a larger binary body is garbage (skipping it would blind the parser)
_STORAGE = {b"set", b"add", b"replace", b"append", b"prepend", b"cas"}
_RETRIEVAL = {b"get", b"gets", b"gat", b"gats"}
_COMMANDS = _STORAGE | _RETRIEVAL | {b"delete", b"incr", b"decr", b"touch", b"stats", b"version",
                                     b"flush_all", b"verbosity", b"quit", b"mn", b"mg", b"ms", b"md", b"ma"}
_ERRORS = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")
_TEXT_REQUEST = re.compile(rb"((gets?|gats?|set|add|replace|append|prepend|cas|delete|incr|decr|touch) [!-~]|"
                           rb"stats[ \r]|version)")
_TEXT_REPLY = re.compile(rb"(VALUE |STAT |VERSION|STOR|END\r|NOT_|DELE)")
# Binary header: magic, opcode, key length, extras length, data type, vbucket|status, body, opaque, cas
_HEADER = struct.Struct(">BBHBBHIIQ")
_OPCODES = {0x00: "get", 0x01: "set", 0x02: "add", 0x03: "replace", 0x04: "delete", 0x05: "incr",
            0x06: "decr", 0x07: "quit", 0x08: "flush", 0x09: "getq", 0x0a: "noop", 0x0b: "version",
            0x0c: "getk", 0x0d: "getkq", 0x0e: "append", 0x0f: "prepend", 0x10: "stat", 0x11: "setq",
            0x12: "addq", 0x13: "replaceq", 0x14: "deleteq", 0x15: "incrq", 0x16: "decrq", 0x1c: "touch",
            0x1d: "gat", 0x1e: "gatq"}
_QUIET_GETS = {0x09, 0x0d, 0x1e}
_BINARY_STATUS = {0: "ok", 1: "key_not_found", 2: "key_exists", 3: "value_too_large", 4: "invalid_arguments",
                  5: "item_not_stored", 6: "non_numeric", 0x81: "unknown_command", 0x82: "out_of_memory"}
_NOT_ERRORS = {0, 1, 2, 5}  # misses and CAS conflicts are answers, not failures


class _Incomplete(Exception):
    pass


class _Garbage(Exception):
    pass


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/memcached.h."""
    if len(data) >= 24 and data[0] in (0x80, 0x81):
        magic, op, keylen, extlen, dtype, vb, body, _, _ = _HEADER.unpack_from(data)
        if op <= 0x48 and dtype == 0 and extlen <= 20 and keylen <= 250 and keylen + extlen <= body <= 1 << 20:
            if magic == 0x81:
                return Side.SERVER
            return Side.CLIENT if vb >> 8 == 0 else None
        return None
    if not data.endswith(b"\r\n"):
        return None
    if _TEXT_REQUEST.match(data):
        return Side.CLIENT
    if _TEXT_REPLY.match(data):
        return Side.SERVER
    return None


@dataclass(slots=True)
class _Request:
    op: str
    keys: list[str]
    start_ns: int
    noreply: bool = False
    opaque: int = -1  # binary only
    quiet: bool = False


@dataclass(slots=True)
class _Reply:
    status: str  # first word (text) or status name (binary)
    values: int = 0
    error: bool = False
    message: str = ""
    opaque: int = -1


def _line(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if len(buf) - pos > MAX_LINE:
            raise _Garbage
        raise _Incomplete(len(buf) + 1)
    return buf[pos:end], end + 2


def _need(buf: bytes, end: int) -> None:
    if len(buf) < end:
        raise _Incomplete(end)  # the buffer cannot be parsed further before it is this long


def _text_request(buf: bytes, pos: int, ts_ns: int) -> tuple[_Request, int]:
    line, pos = _line(buf, pos)
    words = line.split()
    if not words or words[0] not in _COMMANDS:
        raise _Garbage
    cmd = words[0]
    if cmd in _STORAGE or cmd == b"ms":
        idx = 2 if cmd == b"ms" else 4
        try:
            n = int(words[idx])
        except (IndexError, ValueError):
            raise _Garbage from None
        if n < 0:
            raise _Garbage
        pos += n + 2  # may lie past the buffer: the caller skips the rest of a large value by length
        if len(buf) < pos and n < WAIT_PAYLOAD:
            raise _Incomplete(pos)
    keys = words[2:] if cmd in (b"gat", b"gats") else words[1:] if cmd in _RETRIEVAL else words[1:2]
    noreply = words[-1] == b"noreply"
    return _Request(cmd.decode(), [k.decode("utf-8", "replace") for k in keys if k != b"noreply"], ts_ns,
                    noreply), pos


def _text_reply(buf: bytes, pos: int, values: int | None) -> tuple[_Reply | None, int, int | None]:
    """One reply line -> (reply or None inside a multi-line reply, next position, values so far).

    `values` is None outside a multi-line (VALUE/STAT ... END) reply: such a reply is read a
    line per call, so a long one is not re-read from its start as its bytes arrive.
    """
    if values is not None and buf[pos : pos + 1] == b"\0":  # the rest was lost (zero-filled): END with it
        return _Reply("END", values=values), len(buf), None
    line, end = _line(buf, pos)
    word = line.split(b" ", 1)[0]
    if values is not None or word in (b"VALUE", b"STAT", b"END"):
        values = values or 0
        if word == b"END":
            return _Reply("END", values=values), end, None
        if word == b"STAT":
            return None, end, values
        if word != b"VALUE":
            raise _Garbage
        try:
            n = int(line.split()[3])
        except (IndexError, ValueError):
            raise _Garbage from None
        if n < 0:
            raise _Garbage
        _need(buf, end + n + 2)
        return None, end + n + 2, values + 1
    if word == b"VA":  # meta get with a value: "VA <size> <flags>*" then the data block
        try:
            n = int(line.split()[1])
        except (IndexError, ValueError):
            raise _Garbage from None
        if n < 0:
            raise _Garbage
        if len(buf) < end + n + 2 and n < WAIT_PAYLOAD:
            raise _Incomplete(end + n + 2)
        return _Reply("VA", values=1), end + n + 2, None  # may lie past the buffer: skipped by length
    if not word or not (word.isupper() or word.isdigit() or word.startswith((b"HD", b"EN", b"NF", b"MN"))):
        raise _Garbage
    err = word in _ERRORS
    return _Reply(word.decode("latin-1"), error=err, message=line.decode("utf-8", "replace") if err else ""), end, None


def _binary(buf: bytes, pos: int, ts_ns: int):
    """One binary message at `pos`. Only its header, extras, key and an error's first bytes are read:
    a body of WAIT_PAYLOAD or more ends the message at once and its end may lie past the buffer (the
    caller skips the rest by length), so a large value is never held whole."""
    _need(buf, pos + 24)
    magic, op, keylen, extlen, _, vb, body, opaque, _ = _HEADER.unpack_from(buf, pos)
    if magic not in (0x80, 0x81) or keylen + extlen > body or body > MAX_BODY:
        raise _Garbage
    end = pos + 24 + body
    head = pos + 24 + extlen + keylen
    error = magic == 0x81 and vb not in _NOT_ERRORS
    _need(buf, end if body < WAIT_PAYLOAD else head + (MAX_MESSAGE if error else 0))
    key = buf[pos + 24 + extlen : head].decode("utf-8", "replace")
    if magic == 0x80:
        name = _OPCODES.get(op, f"0x{op:02x}")
        return _Request(name, [key] if key else [], ts_ns, opaque=opaque, quiet=op in _QUIET_GETS), end
    status = _BINARY_STATUS.get(vb, f"0x{vb:04x}")
    values = 1 if vb == 0 and op in (0x00, 0x09, 0x0c, 0x0d, 0x1d, 0x1e) else 0
    msg = buf[head : min(end, head + MAX_MESSAGE)].decode("utf-8", "replace") if error else ""
    return _Reply(status, values=values, error=error, message=msg, opaque=opaque), end


class MemcachedParser(Parser):
    protocol = "MEMCACHED"

    def __init__(self) -> None:
        super().__init__()
        self._dirs = {Side.CLIENT: Direction(), Side.SERVER: Direction()}
        self._pending: Pending[_Request] = Pending(self.stats, MAX_PENDING)
        self._values: int | None = None  # values of the multi-line reply being read
        self.binary = False  # a binary message was seen (capture/fastpath.py leaves such connections here)

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        d = self._dirs[side]
        starts = lambda b: detect(b) == side
        got = buffer_chunk(self.stats, d, data, ts_ns, size, starts, MAX_FILL)
        if got == SKIPPED:
            return []
        if got == LOST:
            self._lose(d, "lost_bytes")
            return []
        out: list[Record] = []
        buf, pos = bytes(d.buf), 0
        d.need = 0
        while pos < len(buf):
            try:
                if buf[pos] in (0x80, 0x81):
                    self.binary = True
                    msg, end = _binary(buf, pos, d.start_ns)
                elif side == Side.SERVER and self._values is not None:
                    msg, end, self._values = _text_reply(buf, pos, self._values)
                elif not (0x61 <= buf[pos] <= 0x7A if side == Side.CLIENT else 0x30 <= buf[pos] <= 0x5A):
                    raise _Garbage  # text lines start with a lowercase verb / an uppercase word or digit
                elif side == Side.CLIENT:
                    msg, end = _text_request(buf, pos, d.start_ns)
                else:
                    msg, end, self._values = _text_reply(buf, pos, None)
            except _Incomplete as e:
                d.need = e.args[0] - pos
                break
            except _Garbage:
                self._lose(d, "garbage")
                return out
            pos = end
            if pos > len(buf):
                d.skip, pos = pos - len(buf), len(buf)
            d.start_ns = ts_ns
            if msg is None:
                continue
            if isinstance(msg, _Request):
                out.extend(self._request(msg, ts_ns))
            else:
                out.extend(self._reply(msg, ts_ns))
        del d.buf[:pos]
        return out

    def idle(self) -> bool:
        """Nothing buffered, owed, waiting or half read (capture/fastpath.py hands such a
        connection to the C path)."""
        return not self._pending and self._values is None and all(
            not d.buf and not d.resync and not d.need and not d.skip for d in self._dirs.values())

    def close(self, ts_ns: int) -> list[Record]:
        out = []
        for req in self._pending:
            if req.quiet:
                out.append(_record(req, _Reply("key_not_found"), ts_ns))
            else:
                self.stats["requests_without_response"] += 1
                out.append(_record(req, None, ts_ns))
        self._pending.clear()
        return out

    def _lose(self, d: Direction, reason: str) -> None:
        lose(self.stats, d, self._pending, reason)
        self._values = None

    def _request(self, req: _Request, ts_ns: int) -> list[Record]:
        if req.noreply:
            return [_record(req, _Reply("noreply"), ts_ns)]
        if req.op == "quit":
            return []
        self._pending.push(req)
        return []

    def _reply(self, reply: _Reply, ts_ns: int) -> list[Record]:
        out = []
        if reply.opaque >= 0:  # binary: pair by opaque; quiet gets skipped over were misses
            while self._pending and self._pending[0].opaque != reply.opaque:
                req = self._pending.popleft()
                if req.quiet:
                    out.append(_record(req, _Reply("key_not_found"), ts_ns))
                else:
                    self.stats["requests_without_response"] += 1
        if not self._pending:
            self.stats["responses_without_request"] += 1
            return out
        out.append(_record(self._pending.popleft(), reply, ts_ns))
        return out


def _retrieves(op: str) -> bool:
    """Whether a command's reply carries values (its span says hit or miss and how many)."""
    return op.startswith(("get", "gat", "mg")) or op in ("getq", "getk", "getkq")


def _record(req: _Request, reply: _Reply | None, end_ns: int) -> Record:
    attrs: dict = {"db.system": "memcached", "db.operation.name": req.op}
    if req.keys:
        attrs["db.query.text"] = f"{req.op} {' '.join(req.keys)}"[:1024]
    status, message = "UNSET", ""
    if reply is None:
        status, message = "ERROR", "connection closed before a reply"
        attrs["error.type"] = "no_response"
    else:
        attrs["db.response.status_code"] = reply.status
        if _retrieves(req.op):
            attrs["memcached.hit"] = reply.values > 0 or reply.status == "VA"
            attrs["db.response.returned_rows"] = reply.values
        if reply.error:
            status, message = "ERROR", reply.message or reply.status
            attrs["error.type"] = reply.status
    return Record(name=req.op, start_ns=req.start_ns, end_ns=end_ns, attributes=attrs, status=status,
                  status_message=message)


PARSER = MemcachedParser
