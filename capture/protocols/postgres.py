"""PostgreSQL frontend/backend protocol v3 (postgresql.org/docs/current/protocol.html), parsed passively.

    typed message:   Byte1 type | Int32 length (counts itself) | body
    untyped (first): Int32 length | Int32 code (startup 196608, SSLRequest 80877103, ...) | body

Rule 1: one span per simple Query (ends at ReadyForQuery) and per extended-protocol Execute
        (ends at CommandComplete/EmptyQuery/PortalSuspended/ErrorResponse); Execute spans
        carry the text of the statement that Parse prepared and Bind bound (named or unnamed).
Rule 2: backend messages answer frontend messages in order: a FIFO of expected answers pairs
        them; after an ErrorResponse the server skips to Sync, and so do we.
Rule 3: PasswordMessage/SASL bodies are never read. After garbage or lost bytes a direction
        resyncs at the next chunk that starts with a plausible typed message; pending work is dropped.
Rule 4: a client sends a simple Query only once the previous one's ReadyForQuery came (libpq and
        the drivers refuse otherwise; pipelines use the extended protocol). A Query written while an
        earlier one, from an earlier chunk, still waits means that one's answer was not all seen (a
        capture that missed it without a gap in the stream): it ends at the last answer message seen
        for it, or, with none seen, is dropped (`answers_missed`), never at a later query's answer.
Rule 5: an answer the capture cut (a server write larger than the copied prefix: a result set of
        more than 4 kB, its CommandComplete and ReadyForQuery in the uncopied tail) loses sync, but
        when it is the only query or Execute waiting, that one keeps its answer: it ends with the
        last answer bytes seen before the client's next message or a server chunk that starts a
        message (clients wait for an answer before they ask again; a message start may be another
        answer; pipelines have several waiting and are dropped by Rule 3), its row count unknown
        (`answers_cut`). Dropping it lost every large result; keeping it waiting ended it
        at the connection's close, as an error.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from capture.protocols.base import Parser, Pending, Record, Side
from capture.protocols.frames import FrameReader
from capture.protocols.sql import sql_summary

MAX_MESSAGE = 64 * 1024 * 1024
MAX_PENDING = 4096
MAX_STATEMENTS = 4096
MAX_QUERY = 4096
_CODES = {196608: "startup", 80877103: "ssl", 80877104: "gssenc", 80877102: "cancel"}
_FRONTEND = set(b"QPBEDCSHXpdcfF")
_BACKEND = set(b"RSKZTDCEIN123ntsAGHWdcvV")
_U32 = struct.Struct(">I")


def _plausible(data: bytes, types: set[int], pos: int = 0) -> bool:
    if len(data) - pos < 5 or data[pos] not in types:
        return False
    n = _U32.unpack_from(data, pos + 1)[0]
    return 4 <= n <= MAX_MESSAGE


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/postgres.h."""
    if len(data) >= 8:
        n, code = struct.unpack_from(">II", data)
        if code in _CODES and code != 196608 and n in (8, 16):
            return Side.CLIENT
        if code == 196608 and n == len(data) and n <= 10000:
            return Side.CLIENT
    if len(data) < 5:
        return None
    t, n = data[0], _U32.unpack_from(data, 1)[0]
    if n < 4 or n > 0xFFFFFF:
        return None
    if t in b"QP" and n >= 5:
        if n + 1 <= len(data):
            return Side.CLIENT if data[n] == 0 or t == 0x50 else None
        return Side.CLIENT if len(data) >= 6 and data[5] >= 9 else None
    if t == 0x42:  # Bind of a statement prepared before we looked, then Execute or Describe
        if n < 12 or n + 7 > len(data):
            return None
        t2, n2 = data[n + 1], _U32.unpack_from(data, n + 2)[0]
        if n2 > 0xFFFFFF:
            return None
        if t2 == 0x45:
            return Side.CLIENT if n2 >= 9 else None
        return Side.CLIENT if t2 == 0x44 and n2 >= 6 and data[n + 6] in b"PS" else None
    if t == 0x5A:
        return Side.SERVER if n == 5 and len(data) > 5 and data[5] in b"ITE" else None
    if t == 0x52:
        return Side.SERVER if len(data) >= 9 and n >= 8 and data[5:8] == b"\0\0\0" and data[8] <= 12 else None
    if t == 0x45:
        return Side.SERVER if len(data) >= 6 and data[5] in b"SV" else None
    if t == 0x31:
        return Side.SERVER if n == 4 else None
    return None


@dataclass(slots=True)
class _Unit:
    """A frontend message that expects an answer."""

    kind: str  # query, parse, bind, describe, execute, close, sync
    start_ns: int = 0
    query: str = ""
    tag: str = ""
    rows: int = 0
    error: dict | None = None
    chunk: int = 0  # the client chunk that carried it (Rule 4)
    answered_ns: int = 0  # the last answer message seen for it
    cut: bool = False  # its answer was cut by the capture (Rule 5): the rows seen are not all


def _cstr(body: bytes, pos: int) -> tuple[str, int]:
    end = body.find(b"\0", pos)
    if end < 0:
        end = len(body)
    return body[pos:end].decode("utf-8", "replace"), end + 1


def _error_fields(body: bytes) -> dict:
    fields, pos = {}, 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        value, pos = _cstr(body, pos + 1)
        fields[code] = value
    return fields


def _typed_length(types: set[int]):
    def length_of(header: bytes) -> int | None:
        if header[0] not in types:
            return None
        n = _U32.unpack_from(header, 1)[0]
        return n + 1 if 4 <= n <= MAX_MESSAGE else None
    return length_of


class PostgresParser(Parser):
    protocol = "POSTGRES"

    def __init__(self) -> None:
        super().__init__()
        self._readers = {
            Side.CLIENT: FrameReader(5, _typed_length(_FRONTEND), self.stats,
                                     starts=lambda b: detect(b) == Side.CLIENT or _plausible(b, _FRONTEND),
                                     bad_header="garbage"),
            Side.SERVER: FrameReader(5, _typed_length(_BACKEND), self.stats, bad_header="garbage"),
        }
        self._units: Pending[_Unit] = Pending(self.stats, MAX_PENDING)
        self._statements: dict[str, str] = {}
        self._portals: dict[str, str] = {}
        self._database = ""
        self._untyped = True  # the client's first messages have no type byte
        self._head = b""  # an untyped message not yet whole
        self._ssl_answer = False  # the server answers SSLRequest/GSSENCRequest with one byte
        self._out: list[Record] = []
        self._chunk = 0  # client chunks seen (Rule 4)
        self._cut: _Unit | None = None  # the query whose answer the capture cut (Rule 5)

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        if side == Side.CLIENT and self._untyped:
            held = len(self._head)
            rest = self._startup(data, size)
            if size is not None:  # the stream length still ahead of `rest`
                size = max(0, size + held - (held + len(data) - len(rest)))
            data = rest
        elif side == Side.SERVER and self._ssl_answer and data:
            self._ssl_answer = False
            if data[0] in b"NSG":
                data, size = data[1:], None if size is None else size - 1
        if not data and not size:
            return self._take()
        reader = self._readers[side]
        stats = self.stats
        losses = stats["lost_bytes"] + stats["garbage"]
        cut = self._cut
        if cut is not None and not (self._units and self._units[0] is cut):
            cut = self._cut = None  # its answer ended in sync after all
        if side == Side.CLIENT:
            self._chunk += 1
            if cut is not None:
                self._end_cut(cut)
        elif cut is not None:
            if _plausible(data, _BACKEND):
                # a chunk that starts a message may start another answer (a request the ring lost):
                # the cut one ends before it, never stretched to it
                self._end_cut(cut)
            else:
                cut.answered_ns = ts_ns  # more of its answer, cut mid-message
        for f in reader.feed(data, ts_ns, size):
            if side == Side.CLIENT:
                self._frontend(f.data[0], f.data[5:], f.start_ns)
            else:
                self._backend(f.data[0], f.data[5:], f.end_ns)
        if stats["lost_bytes"] + stats["garbage"] > losses:  # sync lost here (after a resync here too)
            self._lost_sync(side, data, size, ts_ns)
        return self._take()

    def _lost_sync(self, side: Side, data: bytes, size: int | None, ts_ns: int) -> None:
        """Rule 3: never pair across lost sync, except an answer the capture cut (Rule 5)."""
        units = self._units
        waiting = [u for u in units if u.kind in ("query", "execute")]
        if side != Side.SERVER or not data or (size or 0) <= len(data) or len(waiting) != 1:
            units.clear()
            self._cut = None
            return
        u = waiting[0]
        sync = next((x for x in units if x.kind == "sync"), None)
        units.clear()
        units.push(u)
        if sync is not None and u.kind == "execute":
            units.push(sync)  # its ReadyForQuery, should the stream resync before it
        u.answered_ns, u.cut, u.tag = ts_ns, True, ""
        self._cut = u

    def _end_cut(self, u: _Unit) -> None:
        """The client asks again: the query whose answer was cut ended with the last of it seen."""
        units = self._units
        units.popleft()
        if units and units[0].kind == "sync":
            units.popleft()
        self._cut = None
        self.stats["answers_cut"] += 1
        self._emit(u, u.answered_ns)

    def idle(self) -> bool:
        """Past the startup, nothing waiting or half read (capture/fastpath.py hands such a
        connection to the C path, which takes simple queries)."""
        return (not self._untyped and not self._head and not self._ssl_answer and not self._units
                and all(r.idle for r in self._readers.values()))

    def close(self, ts_ns: int) -> list[Record]:
        if self._cut is not None and self._units and self._units[0] is self._cut:
            self._end_cut(self._cut)
        for u in self._units.drain():
            if u.kind in ("query", "execute"):
                self.stats["requests_without_response"] += 1
                self._emit(u, ts_ns, closed=True)
        return self._take()

    def _take(self) -> list[Record]:
        out, self._out = self._out, []
        return out

    def _startup(self, data: bytes, size: int | None) -> bytes:
        """Untyped messages (they start with a zero byte: their length is small) -> the typed rest."""
        buf, pos = self._head + data if self._head else data, 0
        self._head = b""
        while len(buf) > pos and buf[pos] == 0:
            if len(buf) - pos < 8:
                self._head = buf[pos:]
                return b""
            n, code = struct.unpack_from(">II", buf, pos)
            if code not in _CODES or not 8 <= n <= 10000:
                break
            if len(buf) - pos < n:
                if size is not None and size > len(data):
                    break  # a startup packet the capture cut: left to the typed reader's resync
                self._head = buf[pos:]
                return b""
            self._untyped_message(code, buf[pos + 8 : pos + n])
            pos += n
            if _CODES[code] in ("startup", "cancel"):
                break
        else:
            if pos == len(buf) and pos:
                return b""  # SSLRequest/GSSENCRequest: the startup packet is still to come
        self._untyped = False
        return buf[pos:]

    # -- frontend ------------------------------------------------------------------------
    def _untyped_message(self, code: int, body: bytes) -> None:
        kind = _CODES[code]
        if kind in ("ssl", "gssenc"):
            self._ssl_answer = True
        elif kind == "startup":
            parts = body.split(b"\0")
            params = dict(zip(parts[0::2], parts[1::2]))
            db = params.get(b"database") or params.get(b"user") or b""
            self._database = db.decode("utf-8", "replace")

    def _frontend(self, t: int, body: bytes, ts_ns: int) -> None:
        if t == 0x51:  # Q
            units = self._units
            while units and units[0].kind == "query" and units[0].chunk != self._chunk:
                u = units.popleft()  # Rule 4: its answer was missed
                self.stats["answers_missed"] += 1
                if u.answered_ns:
                    self._emit(u, u.answered_ns)
            units.push(_Unit("query", ts_ns, _cstr(body, 0)[0], chunk=self._chunk))
        elif t == 0x50:  # P: name, query
            name, pos = _cstr(body, 0)
            query = _cstr(body, pos)[0]
            if len(self._statements) >= MAX_STATEMENTS and name not in self._statements:
                self._statements.clear()
            self._statements[name] = query
            self._units.push(_Unit("parse", ts_ns, query))
        elif t == 0x42:  # B: portal, statement
            portal, pos = _cstr(body, 0)
            self._portals[portal] = self._statements.get(_cstr(body, pos)[0], "")
            if len(self._portals) > MAX_STATEMENTS:
                self._portals.clear()
            self._units.push(_Unit("bind", ts_ns))
        elif t == 0x45:  # E: portal
            self._units.push(_Unit("execute", ts_ns, self._portals.get(_cstr(body, 0)[0], "")))
        elif t == 0x44:  # D
            self._units.push(_Unit("describe", ts_ns))
        elif t == 0x43:  # C: close statement/portal
            self._units.push(_Unit("close", ts_ns))
        elif t == 0x53:  # S
            self._units.push(_Unit("sync", ts_ns))
        elif t == 0x46:  # F: function call, answered like a query
            self._units.push(_Unit("query", ts_ns, "FUNCTION CALL"))
        # p (password/SASL), H, X, d, c, f: nothing to pair; their bodies are not read

    # -- backend -------------------------------------------------------------------------
    def _backend(self, t: int, body: bytes, ts_ns: int) -> None:
        units = self._units
        head = units[0] if units else None
        if t == 0x5A:  # Z ReadyForQuery: ends a query or a Sync
            while units:
                u = units.popleft()
                if u.kind == "query":
                    self._emit(u, ts_ns)
                    return
                if u.kind == "sync":
                    return
                if u.kind == "execute":
                    if u.cut:  # its CommandComplete was in the part the capture cut
                        self._emit(u, ts_ns)
                        continue
                    self.stats["requests_without_response"] += 1
            return
        if head is None:
            return
        if t not in b"ANS":  # not NotificationResponse, NoticeResponse, ParameterStatus: they come unasked
            head.answered_ns = ts_ns
        if t == 0x45:  # E ErrorResponse
            err = _error_fields(body)
            if head.kind == "query":
                head.error = err
                return
            # extended protocol: the failing message's batch is skipped up to Sync
            target = next((u for u in units if u.kind == "execute"), None)
            while units and units[0].kind != "sync":
                u = units.popleft()
                if target is None and u.kind == "parse":
                    target = u  # a Parse that failed with no Execute queued: still one span
                if u is target:
                    u.error = err
                    self._emit(u, ts_ns)
            return
        if t == 0x44:  # D DataRow
            if head.kind in ("query", "execute"):
                head.rows += 1
        elif t in (0x43, 0x49, 0x73):  # C CommandComplete, I EmptyQuery, s PortalSuspended
            if t == 0x43:
                head.tag = _cstr(body, 0)[0]
            if head.kind == "execute":
                self._emit(units.popleft(), ts_ns)
        elif t == 0x31 and head.kind == "parse" or t == 0x32 and head.kind == "bind" or \
                t == 0x33 and head.kind == "close":
            units.popleft()
        elif t in (0x54, 0x6E) and head.kind == "describe":  # RowDescription / NoData end a Describe
            units.popleft()

    def _emit(self, u: _Unit, ts_ns: int, closed: bool = False) -> None:
        query = u.query[:MAX_QUERY]
        op, table = sql_summary(query)
        attrs: dict = {"db.system": "postgresql"}
        if self._database:
            attrs["db.namespace"] = self._database
        if query:
            attrs["db.query.text"] = query
        if u.tag:
            op = u.tag.split(" ", 1)[0] or op
            last = u.tag.rsplit(" ", 1)[-1]
            if last.isascii() and last.isdigit() and len(last) <= 19:  # int() refuses "5³" and huge ones
                attrs["db.response.returned_rows"] = int(last)
        elif u.rows and not u.cut:
            attrs["db.response.returned_rows"] = u.rows
        if op:
            attrs["db.operation.name"] = op
        if table:
            attrs["db.collection.name"] = table
        status, message = "UNSET", ""
        if u.error is not None:
            code = u.error.get("C", "")
            status, message = "ERROR", u.error.get("M", "")[:512]
            attrs["db.response.status_code"] = code
            attrs["error.type"] = code or "ERROR"
        elif closed:
            status, message = "ERROR", "connection closed before a response"
            attrs["error.type"] = "no_response"
        name = f"{op} {table}" if op and table else (op or "postgresql")
        self._out.append(Record(name=name, start_ns=u.start_ns, end_ns=ts_ns, attributes=attrs,
                                status=status, status_message=message))


PARSER = PostgresParser
