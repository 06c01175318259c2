"""Cassandra CQL native protocol v1-v5 (github.com/apache/cassandra doc/native_protocol_v*.spec).

    v1/v2 header: version(1) flags(1) stream(int8)  opcode(1) length(int32)   (8 bytes)
    v3-v5 header: version(1) flags(1) stream(int16) opcode(1) length(int32)   (9 bytes)
    version: 0x0N request, 0x8N response; responses pair with requests by stream id.

QUERY/PREPARE/BATCH carry the statement; EXECUTE carries a prepared id, mapped back to its text
from the PREPARE seen on this connection. Compressed bodies (flag 0x01) are paired by header only.
v5 wraps frames in segments once READY is sent (native_protocol_v5.spec §2): they are unwrapped
and the frames inside parsed as before; lz4-compressed segments are skipped and counted.
Attributes: db.system "cassandra", db.operation.name (statement verb, or the opcode), db.collection.name,
db.namespace (from "ks.table" or USE), db.query.text, cassandra.consistency.level; on ERROR
db.response.status_code = the error code in hex ("0x2200") and error.type = its name (Invalid …).
"""
from __future__ import annotations

import re
import struct

from capture.protocols.base import FramedParser, Record, Side
from capture.protocols.frames import Frame, FrameReader

SEGMENT_HEADER, SEGMENT_TRAILER = 6, 4  # uncompressed v5 segment: 3 bytes + CRC24; CRC32 after

MAX_BODY = 16 * 1024 * 1024  # native_transport_max_frame_size's default
MAX_PENDING = 32768  # stream ids per connection
MAX_QUERY_TEXT = 2048
REQUESTS = {1: "STARTUP", 4: "CREDENTIALS", 5: "OPTIONS", 7: "QUERY", 9: "PREPARE", 10: "EXECUTE",
            11: "REGISTER", 13: "BATCH", 15: "AUTH_RESPONSE"}
RESPONSES = {0: "ERROR", 2: "READY", 3: "AUTHENTICATE", 6: "SUPPORTED", 8: "RESULT", 12: "EVENT",
             14: "AUTH_CHALLENGE", 16: "AUTH_SUCCESS"}
QUERY, PREPARE, EXECUTE, BATCH, ERROR, RESULT, EVENT = 7, 9, 10, 13, 0, 8, 12
ERRORS = {0x0000: "Server_error", 0x000A: "Protocol_error", 0x0100: "Bad_credentials", 0x1000: "Unavailable",
          0x1001: "Overloaded", 0x1002: "Is_bootstrapping", 0x1003: "Truncate_error", 0x1100: "Write_timeout",
          0x1200: "Read_timeout", 0x1300: "Read_failure", 0x1400: "Function_failure", 0x1500: "Write_failure",
          0x1600: "CDC_write_failure", 0x1700: "CAS_write_unknown", 0x2000: "Syntax_error",
          0x2100: "Unauthorized", 0x2200: "Invalid", 0x2300: "Config_error", 0x2400: "Already_exists",
          0x2500: "Unprepared"}
CONSISTENCY = ("any", "one", "two", "three", "quorum", "all", "local_quorum", "each_quorum", "serial",
               "local_serial", "local_one")
FLAG_COMPRESSED, FLAG_TRACING, FLAG_CUSTOM_PAYLOAD, FLAG_WARNING = 0x01, 0x02, 0x04, 0x08
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|TRUNCATE|TABLE(?:\s+IF\s+(?:NOT\s+)?EXISTS)?)\s+([\w.\"]+)", re.I)


def _hlen(first: int) -> int:
    return 8 if (first & 0x7F) <= 2 else 9


def _header(b: bytes) -> tuple[int, int, int, int, int, bool] | None:
    """(version, flags, stream, opcode, body length, is_response) of a valid frame header."""
    if len(b) < 8:
        return None
    version, response = b[0] & 0x7F, bool(b[0] & 0x80)
    if not 1 <= version <= 5:
        return None
    if version <= 2:
        flags, stream, opcode, length = struct.unpack_from(">BbBi", b, 1)
        max_flags = 0x03
    else:
        if len(b) < 9:
            return None
        flags, stream, opcode, length = struct.unpack_from(">BhBi", b, 1)
        max_flags = 0x1F
    if flags > max_flags or not 0 <= length < MAX_BODY:
        return None
    if opcode not in (RESPONSES if response else REQUESTS) or (not response and stream < 0):
        return None
    if opcode == 4 and version > 2:
        return None  # CREDENTIALS exists in v1/v2 only
    return version, flags, stream, opcode, length, response


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/cassandra.h."""
    h = _header(data[:9])
    if h is None:
        return None
    return Side.SERVER if h[5] else Side.CLIENT


def _length(header: bytes) -> int | None:
    h = _header(header)
    return None if h is None else len(header) + h[4]


class _Body:
    """[short]/[int]-prefixed CQL notation over a body; raises IndexError/struct.error when short."""

    __slots__ = ("b", "pos")

    def __init__(self, b: bytes, pos: int = 0) -> None:
        self.b, self.pos = b, pos

    def _unpack(self, fmt: str):
        v = struct.unpack_from(fmt, self.b, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def short(self) -> int:
        return self._unpack(">H")

    def int(self) -> int:
        return self._unpack(">i")

    def string(self) -> str:
        n = self.short()
        s = self.b[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", "replace")

    def long_string(self) -> str:
        n = self.int()
        s = self.b[self.pos:self.pos + max(n, 0)]
        self.pos += max(n, 0)
        return s.decode("utf-8", "replace")

    def short_bytes(self) -> bytes:
        n = self.short()
        s = self.b[self.pos:self.pos + n]
        self.pos += n
        return bytes(s)

    def skip_bytes_map(self) -> None:
        for _ in range(self.short()):
            self.string()
            n = self.int()
            self.pos += max(n, 0)

    def skip_string_list(self) -> None:
        for _ in range(self.short()):
            self.string()


class _Req:
    __slots__ = ("opcode", "start_ns", "query", "consistency", "prepared_id")

    def __init__(self, opcode: int, start_ns: int) -> None:
        self.opcode, self.start_ns = opcode, start_ns
        self.query = self.consistency = None
        self.prepared_id: bytes | None = None


class CassandraParser(FramedParser):
    protocol = "CASSANDRA"
    header_len = staticmethod(_hlen)
    frame_length = staticmethod(_length)
    max_pending = MAX_PENDING

    def __init__(self) -> None:
        super().__init__()
        self._prepared: dict[bytes, str] = {}
        self._keyspace: str | None = None
        self._segments = False  # v5 after READY: frames travel inside segments
        self._compressed = False  # STARTUP asked for compression (v5: compressed segments)
        self._unwrap = {side: _Segments(self._readers[side], self, self.stats) for side in Side}

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        segmented = self._segments
        frames = (self._unwrap[side].feed(data, ts_ns, size) if segmented
                  else self._readers[side].feed(data, ts_ns, size))
        out: list[Record] = []
        for f in frames:
            h = _header(f.data[:9])
            if h is None:
                continue
            if h[5]:
                self._response(h, f, out)
            else:
                self._request(h, f, out)
            if self._segments and not segmented:
                break  # READY: what follows is segments, not frames
        return out

    def _request(self, h, f: Frame, out: list[Record]) -> None:
        version, flags, stream, opcode, _n, _r = h
        r = _Req(opcode, f.start_ns)
        if opcode == 1 and b"COMPRESSION" in f.data:  # STARTUP options {"COMPRESSION": ...}
            self._compressed = True
        if not flags & FLAG_COMPRESSED:
            body = _Body(f.data, _hlen(f.data[0]))
            try:
                if flags & FLAG_CUSTOM_PAYLOAD:
                    body.skip_bytes_map()
                if opcode in (QUERY, PREPARE):
                    r.query = body.long_string()
                    if opcode == QUERY:
                        r.consistency = body.short()
                elif opcode == EXECUTE:
                    r.prepared_id = body.short_bytes()
                    r.query = self._prepared.get(r.prepared_id)
                    if version >= 5:
                        body.short_bytes()  # result metadata id
                    if version >= 2:
                        r.consistency = body.short()
                elif opcode == BATCH:
                    body.pos += 1  # batch type
                    if body.short() and body.b[body.pos] == 0:
                        body.pos += 1
                        r.query = body.long_string()
                    elif len(body.b) > body.pos:
                        body.pos += 1
                        r.query = self._prepared.get(body.short_bytes())
            except (struct.error, IndexError):
                self.stats["truncated_request"] += 1
        else:
            self.stats["compressed_frames"] += 1
        if stream in self._pending:
            self.stats["stream_reused_before_response"] += 1
        self._pending.put(stream, r)

    def _response(self, h, f: Frame, out: list[Record]) -> None:
        version, flags, stream, opcode, _n, _r = h
        if opcode == EVENT or stream < 0:
            return  # server push (schema/topology/status events), not an answer
        r = self._pending.take(stream)
        if r is None:
            self.stats["responses_without_request"] += 1
            return
        result: tuple | None = ("ok",)
        if not flags & FLAG_COMPRESSED:
            body = _Body(f.data, _hlen(f.data[0]))
            try:
                if flags & FLAG_TRACING:
                    body.pos += 16
                if flags & FLAG_WARNING:
                    body.skip_string_list()
                if flags & FLAG_CUSTOM_PAYLOAD:
                    body.skip_bytes_map()
                if opcode == ERROR:
                    code = body.int()
                    result = ("error", code, body.string())
                elif opcode == RESULT:
                    kind = body.int()
                    if kind == 3:  # Set_keyspace
                        self._keyspace = body.string()
                    elif kind == 4 and r.query is not None and len(self._prepared) < 10000:
                        self._prepared[body.short_bytes()] = r.query
            except (struct.error, IndexError):
                self.stats["truncated_response"] += 1
        if version == 5 and opcode in (2, 16):  # READY / AUTH_SUCCESS: v5 segments follow
            self._segments = True
        out.append(self._record(r, result, f.end_ns))

    def _record(self, r: _Req, result: tuple | None, end_ns: int) -> Record:
        opname = REQUESTS.get(r.opcode, str(r.opcode))
        attrs: dict = {"db.system": "cassandra", "network.protocol.name": "cql"}
        op, table, ns = opname, None, self._keyspace
        if r.query:
            attrs["db.query.text"] = r.query[:MAX_QUERY_TEXT]
            verb = r.query.lstrip().split(None, 1)[0].upper() if r.query.strip() else opname
            m = _TABLE.search(r.query)
            if m:
                ref = m.group(1).replace('"', "")
                ns, _, table = ref.rpartition(".") if "." in ref else (ns, "", ref)
            op = verb if r.opcode in (QUERY, EXECUTE) else (
                f"BATCH {verb}" if r.opcode == BATCH else f"PREPARE {verb}")
        elif r.opcode == BATCH:
            op = "BATCH"
        attrs["db.operation.name"] = op
        if table:
            attrs["db.collection.name"] = table
        if ns:
            attrs["db.namespace"] = ns
        if r.consistency is not None and r.consistency < len(CONSISTENCY):
            attrs["cassandra.consistency.level"] = CONSISTENCY[r.consistency]
        status, message = "UNSET", ""
        if result is None:
            status, message = "ERROR", "connection closed before a response"
            attrs["error.type"] = "no_response"
        elif result[0] == "error":
            _e, code, message = result
            status = "ERROR"
            attrs["db.response.status_code"] = f"0x{code & 0xFFFF:04X}"
            attrs["error.type"] = ERRORS.get(code, f"0x{code & 0xFFFF:04X}")
        return Record(name=f"{op} {table}" if table else op, start_ns=r.start_ns, end_ns=end_ns,
                      attributes=attrs, status=status, status_message=message)


PARSER = CassandraParser


class _Segments:
    """v5 segments of one direction -> the frame stream inside them, fed to its FrameReader.

    Uncompressed segment: 3 bytes little-endian (payload length in bits 0-16, self-contained
    flag in bit 17) + CRC24 of them, the payload, CRC32 of the payload. Payloads joined are the
    frame stream (a large frame spans segments). CRCs are not checked: a desynchronised stream
    shows as invalid frame headers, which the frame reader counts and resyncs from. Compressed
    segments (8-byte header, lz4 payload) are skipped by length and counted.
    """

    def __init__(self, frames: FrameReader, parser: "CassandraParser", stats) -> None:
        self.frames, self.parser, self.stats = frames, parser, stats
        self.head = bytearray()
        self.payload_left = 0  # bytes of the current segment's payload still to come
        self.skip_left = 0  # trailer (or compressed payload + trailer) bytes still to skip
        self.lost = False

    def feed(self, data: bytes, ts_ns: int, size: int | None) -> list[Frame]:
        if self.lost:
            self.stats["v5_segment_chunks_skipped"] += 1
            return []
        out: list[Frame] = []
        pos, n = 0, len(data)
        while pos < n:
            if self.payload_left:
                take = min(self.payload_left, n - pos)
                out += self.frames.feed(data[pos:pos + take], ts_ns)
                pos += take
                self.payload_left -= take
                if not self.payload_left:
                    self.skip_left = SEGMENT_TRAILER
            elif self.skip_left:
                take = min(self.skip_left, n - pos)
                pos += take
                self.skip_left -= take
            else:
                hlen = 8 if self.parser._compressed else SEGMENT_HEADER
                take = min(hlen - len(self.head), n - pos)
                self.head += data[pos:pos + take]
                pos += take
                if len(self.head) == hlen:
                    self._segment_header()
        missing = (size or n) - n
        if missing > 0 and self.payload_left:  # inside a payload: the frames skip it by length
            take = min(self.payload_left, missing)
            out += self.frames.feed(b"", ts_ns, take)
            self.payload_left -= take
            missing -= take
            if not self.payload_left:
                self.skip_left = SEGMENT_TRAILER
        if missing > 0 and self.skip_left:
            take = min(self.skip_left, missing)
            self.skip_left -= take
            missing -= take
        if missing > 0:  # a segment header was not copied: the segment boundaries are lost
            self.lost = True
            self.stats["v5_segments_lost"] += 1
        return out

    def _segment_header(self) -> None:
        value = int.from_bytes(self.head[:5 if self.parser._compressed else 3], "little")
        self.head.clear()
        self.stats["v5_segments"] += 1
        if self.parser._compressed:  # lz4 payload: its compressed length, then the trailer
            self.stats["v5_compressed_segments"] += 1
            self.skip_left = (value & 0x1FFFF) + SEGMENT_TRAILER
            return
        self.payload_left = value & 0x1FFFF
        if not self.payload_left:
            self.skip_left = SEGMENT_TRAILER
