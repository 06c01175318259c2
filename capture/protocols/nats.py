"""NATS client protocol (docs.nats.io/reference/reference-protocols/nats-protocol), parsed passively.

Rule 1: PUB/HPUB become PRODUCER records and MSG/HMSG CONSUMER records, one per message;
        CONNECT, SUB and UNSUB are CLIENT records. PING/PONG/INFO are counted, not spans.
Rule 2: in verbose mode (CONNECT {"verbose":true}) the server answers each client line with
        +OK or -ERR in order: those pair FIFO. Otherwise a -ERR is its own ERROR record.
Rule 3: CONNECT's pass, auth_token, sig, nkey and jwt never reach attributes; payloads are
        never kept. After garbage a direction resyncs at the next chunk starting with a verb.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from capture.protocols.base import LOST, SKIPPED, Direction, Parser, Pending, Record, Side, buffer_chunk, lose

MAX_LINE = 64 * 1024
WAIT_PAYLOAD = 64 * 1024  # a smaller payload is waited for; a larger one ends its message at once
MAX_FILL = 1024 * 1024  # lost bytes stood in by zeros (a payload the capture cut short)
MAX_PENDING = 4096
_CLIENT_START = re.compile(rb"(CONNECT \{|PUB [!-~]|HPUB [!-~]|SUB [!-~]|UNSUB |PING\r|PONG\r)")
_SERVER_START = re.compile(rb"(INFO \{|MSG [!-~]|HMSG [!-~]|\+OK\r|-ERR |PING\r|PONG\r)")
_CLIENT_VERBS = {b"CONNECT", b"PUB", b"HPUB", b"SUB", b"UNSUB", b"PING", b"PONG"}
_SERVER_VERBS = {b"INFO", b"MSG", b"HMSG", b"+OK", b"-ERR", b"PING", b"PONG"}


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/nats.h (INFO/CONNECT, or a verb line ending in CRLF)."""
    if data.startswith(b"INFO {"):
        return Side.SERVER
    if data.startswith(b"CONNECT {"):
        return Side.CLIENT
    if not data.endswith(b"\r\n"):
        return None
    if re.match(rb"(PUB|HPUB|SUB) [!-~]", data):
        return Side.CLIENT
    if re.match(rb"(MSG|HMSG) [!-~]", data):
        return Side.SERVER
    return None


class _Incomplete(Exception):
    pass


class _Garbage(Exception):
    pass


@dataclass(slots=True)
class _Op:
    verb: str
    start_ns: int
    subject: str = ""
    reply_to: str = ""
    size: int = 0
    attrs: dict = field(default_factory=dict)


def _message(buf: bytes, pos: int, verbs: set[bytes]) -> tuple[bytes, list[bytes], int]:
    """One protocol line (+ payload for PUB/HPUB/MSG/HMSG) -> (verb, args, next position)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if len(buf) - pos > MAX_LINE:
            raise _Garbage
        raise _Incomplete
    line = buf[pos:end]
    verb, _, rest = line.partition(b" ")
    verb = verb.upper()
    if verb not in verbs:
        raise _Garbage
    if verb in (b"CONNECT", b"INFO", b"-ERR"):
        return verb, [rest], end + 2
    args = rest.split()
    nxt = end + 2
    if verb in (b"PUB", b"HPUB", b"MSG", b"HMSG"):
        try:
            total = int(args[-1])
        except (IndexError, ValueError):
            raise _Garbage from None
        if total < 0:
            raise _Garbage
        nxt += total + 2  # may lie past the buffer: the caller skips the rest of a large payload by length
        if len(buf) < nxt and total < WAIT_PAYLOAD:
            raise _Incomplete(nxt)
    return verb, args, nxt


class NatsParser(Parser):
    protocol = "NATS"

    def __init__(self) -> None:
        super().__init__()
        self._dirs = {Side.CLIENT: Direction(), Side.SERVER: Direction()}
        self._verbose = False
        self._pending: Pending[_Op] = Pending(self.stats, MAX_PENDING)

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        d = self._dirs[side]
        starts = (_CLIENT_START if side == Side.CLIENT else _SERVER_START).match
        got = buffer_chunk(self.stats, d, data, ts_ns, size, starts, MAX_FILL)
        if got == SKIPPED:
            return []
        if got == LOST:
            self._lose(d, "lost_bytes")
            return []
        verbs = _CLIENT_VERBS if side == Side.CLIENT else _SERVER_VERBS
        out: list[Record] = []
        buf, pos = bytes(d.buf), 0
        d.need = 0
        while pos < len(buf):
            try:
                verb, args, end = _message(buf, pos, verbs)
            except _Incomplete as e:
                d.need = e.args[0] - pos if e.args else 0
                break
            except _Garbage:
                self._lose(d, "garbage")
                return out
            pos = end
            if pos > len(buf):
                d.skip, pos = pos - len(buf), len(buf)
            rec = self._client(verb, args, d.start_ns, ts_ns) if side == Side.CLIENT else \
                self._server(verb, args, d.start_ns, ts_ns)
            if rec is not None:
                out.append(rec)
            d.start_ns = ts_ns
        del d.buf[:pos]
        return out

    def close(self, ts_ns: int) -> list[Record]:
        out = [_record(op, ts_ns) for op in self._pending]
        self._pending.clear()
        return out

    def _lose(self, d: Direction, reason: str) -> None:
        lose(self.stats, d, self._pending, reason)

    def _client(self, verb: bytes, args: list[bytes], start_ns: int, ts_ns: int) -> Record | None:
        if verb in (b"PING", b"PONG"):
            self.stats[verb.decode().lower()] += 1
            return None
        op = _Op(verb.decode(), start_ns)
        if verb == b"CONNECT":
            op.attrs = _connect_attrs(args[0])
            self._verbose = op.attrs.pop("_verbose", False)
        elif verb in (b"PUB", b"HPUB"):
            n = 2 if verb == b"HPUB" else 1  # HPUB: subject [reply] hdr_len total_len
            op.subject = args[0].decode("utf-8", "replace")
            op.reply_to = args[1].decode("utf-8", "replace") if len(args) > n + 1 else ""
            op.size = int(args[-1])
        elif verb == b"SUB":
            op.subject = args[0].decode("utf-8", "replace") if args else ""
            if len(args) == 3:
                op.attrs["messaging.consumer.group.name"] = args[1].decode("utf-8", "replace")
        elif verb == b"UNSUB":
            op.attrs["nats.sid"] = args[0].decode("latin-1") if args else ""
        if not self._verbose:
            return _record(op, ts_ns)
        self._pending.push(op)
        return None

    def _server(self, verb: bytes, args: list[bytes], start_ns: int, ts_ns: int) -> Record | None:
        if verb in (b"MSG", b"HMSG"):
            n = 2 if verb == b"HMSG" else 1  # MSG subject sid [reply] len
            op = _Op(verb.decode(), start_ns, subject=args[0].decode("utf-8", "replace"), size=int(args[-1]))
            if len(args) > n + 2:
                op.reply_to = args[2].decode("utf-8", "replace")
            return _record(op, ts_ns)
        if verb in (b"+OK", b"-ERR"):
            err = args[0].decode("utf-8", "replace").strip().strip("'") if verb == b"-ERR" else ""
            if self._pending:
                return _record(self._pending.popleft(), ts_ns, err if verb == b"-ERR" else None)
            if verb == b"-ERR":
                return _record(_Op("ERR", start_ns), ts_ns, err)
            return None
        self.stats[verb.decode().lower()] += 1  # INFO, PING, PONG
        return None


_SECRET_FIELDS = {"pass", "auth_token", "sig", "nkey", "jwt"}


def _connect_attrs(raw: bytes) -> dict:
    try:
        opts = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(opts, dict):
        return {}
    attrs: dict = {"_verbose": bool(opts.get("verbose"))}
    for key in ("name", "lang", "version"):
        if isinstance(opts.get(key), str) and key not in _SECRET_FIELDS:
            attrs[f"nats.client.{key}"] = opts[key]
    return attrs


_KINDS = {"PUB": ("PRODUCER", "send", "publish"), "HPUB": ("PRODUCER", "send", "publish"),
          "MSG": ("CONSUMER", "receive", "receive"), "HMSG": ("CONSUMER", "receive", "receive"),
          "SUB": (None, "receive", "subscribe"), "UNSUB": (None, None, "unsubscribe"),
          "CONNECT": (None, None, "connect"), "ERR": (None, None, "error")}


def _record(op: _Op, end_ns: int, error: str | None = None) -> Record:
    kind, op_type, op_name = _KINDS[op.verb]
    attrs = {"messaging.system": "nats", "messaging.operation.name": op_name, **op.attrs}
    if op_type:
        attrs["messaging.operation.type"] = op_type
    if op.subject:
        attrs["messaging.destination.name"] = op.subject
    if op.verb in ("PUB", "HPUB", "MSG", "HMSG"):
        attrs["messaging.message.body.size"] = op.size
    if op.reply_to:
        attrs["messaging.nats.reply_to"] = op.reply_to
    status, message = "UNSET", ""
    if error is not None:
        status, message = "ERROR", error[:256]
        attrs["error.type"] = error[:64] or "ERR"
    name = f"{op_name} {op.subject}" if op.subject else op_name
    return Record(name=name, start_ns=op.start_ns, end_ns=end_ns, attributes=attrs, status=status,
                  status_message=message, kind=kind)


PARSER = NatsParser
