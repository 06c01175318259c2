"""MySQL / MariaDB client/server protocol (dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html),
parsed passively.

    packet: Int<3> payload length (LE) | Int<1> sequence id | payload

Rule 1: one span per command (COM_QUERY, COM_STMT_PREPARE/EXECUTE, ping, ...), paired FIFO
        with its response: OK, ERR (code + SQLSTATE) or a result set read to its end.
Rule 2: COM_STMT_EXECUTE spans carry the text their COM_STMT_PREPARE sent (by statement id).
Rule 3: the handshake's auth data and later auth-switch packets are never read.
Rule 4: a response starts with sequence id 1: after garbage or a gap, server packets are
        skipped until one does; client bytes resync at a command packet (sequence 0), or at a
        chunk that is a sequence-0 header alone (a server that reads headers apart).
Rule 5: at the server's end (Parser.at_server), a command read in a later chunk while an earlier one
        waits means that one's answer was not all seen (a capture that missed it without a gap in
        the stream): a server reads the next command only once it has answered the last (pipelined
        commands it has already read come in the same chunk). The earlier one ends at the last answer
        packet seen for it, or, with none seen, is dropped (`answers_missed`); never at a later
        command's answer. At the client's end nothing is assumed: connectors may pipeline commands
        in separate writes before reading any answer (MariaDB Connector/J batches, Vert.x, R2DBC),
        and those keep their FIFO pairing.
"""
from __future__ import annotations

from dataclasses import dataclass

from capture.protocols.base import Parser, Pending, Record, Side
from capture.protocols.frames import FrameReader
from capture.protocols.sql import sql_summary

MAX_PENDING = 1024
MAX_STATEMENTS = 4096
MAX_QUERY = 4096
COMMANDS = {0x01: "QUIT", 0x02: "INIT_DB", 0x03: "QUERY", 0x04: "FIELD_LIST", 0x0e: "PING", 0x11: "CHANGE_USER",
            0x16: "STMT_PREPARE", 0x17: "STMT_EXECUTE", 0x18: "STMT_SEND_LONG_DATA", 0x19: "STMT_CLOSE",
            0x1a: "STMT_RESET", 0x1f: "RESET_CONNECTION", 0x09: "STATISTICS", 0x0d: "DEBUG",
            0x1b: "SET_OPTION", 0x1c: "STMT_FETCH"}
_NO_REPLY = {0x01, 0x18, 0x19}
_TEXT_COMMANDS = {0x03, 0x16}
_SERVER_MORE_RESULTS = 0x0008
# Server-side framing states.
IDLE, MORE, DEFS, COLUMNS, ROWS_START, ROWS, FIELDS = range(7)


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/mysql.h."""
    if len(data) < 5:
        return None
    n, seq, cmd = data[0] | data[1] << 8 | data[2] << 16, data[3], data[4]
    if n == 0:
        return None
    if seq == 0 and cmd == 0x0A and 40 <= n <= 512 and len(data) >= 7 and 0x31 <= data[5] <= 0x39 and \
            (data[6] == 0x2E or 0x30 <= data[6] <= 0x39):
        return Side.SERVER
    if seq == 0 and n + 4 == len(data):
        if cmd in _TEXT_COMMANDS and n >= 2:
            return Side.CLIENT if data[5] >= 9 else None
        if (cmd == 0x17 and n >= 10) or (cmd in (0x0E, 0x01) and n == 1):
            return Side.CLIENT
    if seq >= 1 and cmd == 0xFF and len(data) >= 13 and n >= 9 and data[7] == 0x23:
        return Side.SERVER
    return None


def _packet_length(header: bytes) -> int:
    return 4 + (header[0] | header[1] << 8 | header[2] << 16)


def _error(p: bytes) -> tuple[int, str, str]:
    """ERR packet: 0xff | code (2) | ['#' SQLSTATE (5)] | message."""
    code = int.from_bytes(p[1:3], "little")
    if p[3:4] == b"#":
        return code, p[4:9].decode("latin-1"), p[9:].decode("utf-8", "replace")
    return code, "", p[3:].decode("utf-8", "replace")


def _lenenc(p: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(p):
        return 0, pos
    c = p[pos]
    if c < 0xFB:
        return c, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(c, 0)
    return int.from_bytes(p[pos + 1 : pos + 1 + width], "little"), pos + 1 + width


@dataclass(slots=True)
class _Command:
    code: int
    start_ns: int
    query: str = ""
    stmt_id: int = -1
    rows: int = 0
    affected: int | None = None
    error: tuple[int, str, str] | None = None
    chunk: int = 0  # the client chunk it came in (Rule 5)


class MysqlParser(Parser):
    protocol = "MYSQL"

    def __init__(self) -> None:
        super().__init__()
        # a command packet, or its header alone (MariaDB reads a packet's header, then its payload)
        command = lambda b: b[3] == 0 and (b[4] in COMMANDS if len(b) >= 5 else len(b) == 4 and b[:3] != b"\0\0\0")  # noqa: E731
        self._readers = {Side.CLIENT: FrameReader(4, _packet_length, self.stats, starts=command),
                         Side.SERVER: FrameReader(4, _packet_length, self.stats)}
        self._pending: Pending[_Command] = Pending(self.stats, MAX_PENDING)
        self._statements: dict[int, str] = {}
        self._system = "mysql"
        self._database = ""
        self._handshake = False  # between the greeting and the server's first OK/ERR
        self._query_attributes = False
        self._state = IDLE
        self._left = 0  # column/param definitions still to read
        self._out: list[Record] = []
        self._chunk = 0  # client chunks seen (Rule 5)
        self._answered_ns = 0  # the last answer packet seen for the command at the head (Rule 5)

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        reader = self._readers[side]
        synced = reader.synced
        if side == Side.CLIENT:
            self._chunk += 1
        for f in reader.feed(data, ts_ns, size):
            if side == Side.CLIENT:
                self._client(f.data[3], f.data[4:], f.start_ns, f.end_ns)
            else:
                self._server(f.data[3], f.data[4:], f.end_ns)
        if synced and not reader.synced:
            if side == Side.SERVER and self._state != IDLE and size is not None and size > len(data):
                # A server writes a whole response at once: the uncopied tail of this write is the
                # rest of the response in progress, so it ends here rather than being dropped.
                self.stats["responses_ended_uncopied"] += 1
                self._done(ts_ns)
            self._lose()
        return self._take()

    def idle(self) -> bool:
        """Past the handshake, nothing waiting or half read (capture/fastpath.py hands such a
        connection to the C path, which takes COM_QUERY and COM_PING)."""
        return (not self._handshake and self._state == IDLE and not self._pending
                and all(r.idle for r in self._readers.values()))

    def close(self, ts_ns: int) -> list[Record]:
        for cmd in self._pending.drain():
            self.stats["requests_without_response"] += 1
            self._emit(cmd, ts_ns, closed=True)
        return self._take()

    def _take(self) -> list[Record]:
        out, self._out = self._out, []
        return out

    def _lose(self) -> None:
        """A reader lost sync (Rule 4): nothing waiting is paired across the gap."""
        self._pending.clear()
        self._state, self._answered_ns = IDLE, 0

    # -- client --------------------------------------------------------------------------
    def _client(self, seq: int, p: bytes, start_ns: int, ts_ns: int) -> None:
        if self._handshake or seq != 0:
            if seq == 1 and len(p) >= 32 and not self._pending:
                self._handshake_response(p)
            return  # auth packets: never read
        if not p or p[0] not in COMMANDS:
            self.stats["unknown_command"] += 1
            return
        cmd = _Command(p[0], start_ns)
        if cmd.code in _TEXT_COMMANDS:
            start = 1
            if cmd.code == 0x03 and self._query_attributes:  # parameter_count, parameter_set_count
                count, start = _lenenc(p, 1)
                _, start = _lenenc(p, start)
                if count:  # typed attribute values precede the text: not worth decoding
                    self.stats["query_attributes_skipped"] += 1
                    start = len(p)
            cmd.query = p[start : start + MAX_QUERY].decode("utf-8", "replace")
        elif cmd.code == 0x02:
            self._database = p[1:].decode("utf-8", "replace")
        elif cmd.code in (0x17, 0x19, 0x1a, 0x18) and len(p) >= 5:
            cmd.stmt_id = int.from_bytes(p[1:5], "little")
            cmd.query = self._statements.get(cmd.stmt_id, "")
            if cmd.code == 0x19:
                self._statements.pop(cmd.stmt_id, None)
        if cmd.code in _NO_REPLY:
            if cmd.code == 0x19:
                self._emit(cmd, ts_ns)
            return
        if self.at_server:
            self._missed()
            cmd.chunk = self._chunk
        self._pending.push(cmd)

    def _missed(self) -> None:
        """Rule 5: commands of earlier chunks still waiting had their answers missed."""
        pending = self._pending
        while pending and pending.first().chunk != self._chunk:
            cmd = pending.popleft()
            self.stats["answers_missed"] += 1
            if self._answered_ns:
                self._emit(cmd, self._answered_ns)
            self._state, self._left, self._answered_ns = IDLE, 0, 0

    def _handshake_response(self, p: bytes) -> None:
        """HandshakeResponse41: caps(4) max(4) charset(1) filler(23) user\\0 auth ... [db\\0]."""
        caps = int.from_bytes(p[0:4], "little")
        self._handshake = True
        self._query_attributes = bool(caps & 0x8000000)  # CLIENT_QUERY_ATTRIBUTES
        if not caps & 0x8:  # CLIENT_CONNECT_WITH_DB
            return
        pos = p.find(b"\0", 32) + 1
        if pos <= 0:
            return
        if caps & 0x200000:  # CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            n, pos = _lenenc(p, pos)
        elif caps & 0x8000:  # CLIENT_SECURE_CONNECTION
            n, pos = p[pos], pos + 1
        else:
            n = p.find(b"\0", pos) - pos + 1
        end = p.find(b"\0", pos + n)
        self._database = p[pos + n : end if end >= 0 else len(p)].decode("utf-8", "replace")

    # -- server --------------------------------------------------------------------------
    def _server(self, seq: int, p: bytes, ts_ns: int) -> None:
        if not p:
            return
        if seq == 0 and p[0] == 0x0A:  # greeting
            version = p[1 : p.find(b"\0", 1)]
            self._system = "mariadb" if b"MariaDB" in version else "mysql"
            self._handshake, self._state = True, IDLE
            return
        if self._handshake:
            if p[0] in (0x00, 0xFF) and seq >= 2:
                self._handshake = False  # auth finished (OK or ERR); 0x01/0xfe are auth steps
            return
        head = self._pending.first()
        if self._state == IDLE or self._state == MORE:
            # a response starts at sequence 1 (Rule 4); a trailing EOF of a prepare does not
            if head is None or (seq != 1 and self._state == IDLE):
                self.stats["responses_without_request"] += head is None
                return
            self._answered_ns = ts_ns
            self._first(head, p, ts_ns)
            return
        self._answered_ns = ts_ns
        if self._state == DEFS:  # prepare: parameter then column definitions, EOFs between
            if p[0] == 0xFE and len(p) < 9:
                return
            self._left -= 1
            if self._left <= 0:
                self._done(ts_ns)
        elif self._state == FIELDS:  # COM_FIELD_LIST: column definitions up to an EOF
            if p[0] == 0xFF or (p[0] == 0xFE and len(p) < 9):
                if p[0] == 0xFF and head is not None:
                    head.error = _error(p)
                self._done(ts_ns)
        elif self._state == COLUMNS:
            self._left -= 1
            if self._left <= 0:
                self._state = ROWS_START
        elif self._state == ROWS_START and p[0] == 0xFE and len(p) == 5:
            self._state = ROWS  # EOF after the column definitions (no CLIENT_DEPRECATE_EOF)
        else:
            self._state = ROWS
            self._rows(head, p, ts_ns)

    def _first(self, cmd: _Command, p: bytes, ts_ns: int) -> None:
        if p[0] == 0xFF:
            cmd.error = _error(p)
            self._done(ts_ns)
        elif cmd.code == 0x04:
            self._state = FIELDS
            self._server(2, p, ts_ns)  # this packet is the first definition (or the EOF)
        elif p[0] == 0x00 and cmd.code == 0x16 and len(p) >= 12:  # COM_STMT_PREPARE_OK
            stmt_id = int.from_bytes(p[1:5], "little")
            if len(self._statements) >= MAX_STATEMENTS:
                self._statements.clear()
            self._statements[stmt_id] = cmd.query
            cmd.stmt_id = stmt_id
            self._left = int.from_bytes(p[5:7], "little") + int.from_bytes(p[7:9], "little")
            if self._left:
                self._state = DEFS
            else:
                self._done(ts_ns)
        elif p[0] in (0x00, 0xFE):  # OK
            cmd.affected, pos = _lenenc(p, 1)
            _, pos = _lenenc(p, pos)
            if int.from_bytes(p[pos : pos + 2], "little") & _SERVER_MORE_RESULTS:
                self._state = MORE
            else:
                self._done(ts_ns)
        elif p[0] == 0xFB:  # LOCAL INFILE request: the client sends a file, then an OK follows
            self.stats["local_infile"] += 1
        else:  # result set: column count, then that many column definitions
            self._left, _ = _lenenc(p, 0)
            self._state = COLUMNS if self._left else ROWS

    def _rows(self, cmd: _Command | None, p: bytes, ts_ns: int) -> None:
        if p[0] == 0xFF:
            if cmd is not None:
                cmd.error = _error(p)
            self._done(ts_ns)
        elif p[0] == 0xFE and len(p) < 0xFFFFFF:  # EOF (5 bytes) or OK ending the rows
            if len(p) == 5:
                status = int.from_bytes(p[3:5], "little")
            else:
                _, pos = _lenenc(p, 1)
                _, pos = _lenenc(p, pos)
                status = int.from_bytes(p[pos : pos + 2], "little")
            if status & _SERVER_MORE_RESULTS:
                self._state = MORE  # the next result set starts with its own column count
            else:
                self._done(ts_ns)
        elif cmd is not None:
            cmd.rows += 1

    def _done(self, ts_ns: int) -> None:
        self._state, self._left, self._answered_ns = IDLE, 0, 0
        if self._pending:
            self._emit(self._pending.popleft(), ts_ns)

    def _emit(self, cmd: _Command, ts_ns: int, closed: bool = False) -> None:
        attrs: dict = {"db.system": self._system}
        if self._database:
            attrs["db.namespace"] = self._database
        op, table = sql_summary(cmd.query) if cmd.query else ("", "")
        if cmd.query:
            attrs["db.query.text"] = cmd.query
        if op:
            attrs["db.operation.name"] = op
        if table:
            attrs["db.collection.name"] = table
        if cmd.rows:
            attrs["db.response.returned_rows"] = cmd.rows
        elif cmd.affected:
            attrs["db.response.returned_rows"] = cmd.affected
        attrs["mysql.command"] = COMMANDS.get(cmd.code, hex(cmd.code))
        status, message = "UNSET", ""
        if cmd.error is not None:
            code, sqlstate, msg = cmd.error
            status, message = "ERROR", msg[:512]
            attrs["db.response.status_code"] = str(code)
            attrs["error.type"] = str(code)
            if sqlstate:
                attrs["db.mysql.sqlstate"] = sqlstate
        elif closed:
            status, message = "ERROR", "connection closed before a response"
            attrs["error.type"] = "no_response"
        label = op or COMMANDS.get(cmd.code, "mysql")
        if cmd.code == 0x16:
            label = f"PREPARE {op}".strip()
        name = f"{label} {table}" if table else label
        self._out.append(Record(name=name, start_ns=cmd.start_ns, end_ns=ts_ns, attributes=attrs,
                                status=status, status_message=message))


PARSER = MysqlParser
