"""HTTP/2 (RFC 9113) and gRPC over it, parsed passively: hyperframe for frames, hpack for headers.

Rule 1: one HPACK decoder per direction; a stream becomes one record when the server ends
        it (END_STREAM, with gRPC trailers) or either side resets it (RST_STREAM).
Rule 2: joining a connection mid-way, dynamic-table references point at entries we never
        saw: such headers are marked unknown, literal ones (paths are usually literal on
        first use) are kept, new entries still go into the table so later indexes line up.
Rule 3: after garbage or lost bytes a direction resyncs at the next chunk that starts with
        a plausible frame header. Bodies are never kept: a DATA payload is skipped by length
        (copied or lost), its END_STREAM taking effect at its last byte.
Rule 4: an HPACK table holds at most what the receiving side's SETTINGS_HEADER_TABLE_SIZE
        allows (4096 before any SETTINGS), and never more than MAX_TABLE, counted when capped.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from urllib.parse import unquote

from hpack import Decoder
from hpack.exceptions import HPACKError
from hpack.hpack import decode_integer
from hpack.huffman_table import decode_huffman
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import Frame

from capture.protocols.base import Parser, Record, Side

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_FRAME = (1 << 24) - 1
MAX_FILL = 256 * 1024  # lost bytes inside a non-DATA frame stood in by zeros, at most
MAX_TABLE = 64 * 1024  # HPACK dynamic table bytes per direction, whatever a peer announces
MAX_STREAMS = 4096
MAX_HEADER_BLOCK = 256 * 1024
UNKNOWN = "<unknown>"
_HEADER = struct.Struct(">HBBBI")  # length split as 16+8 bits, type, flags, stream id
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, END_HEADERS = 0x1, 0x4
_GRPC_CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
               "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
               "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]


def _frame_header(data: bytes, pos: int = 0) -> tuple[int, int, int, int]:
    hi, lo, ftype, flags, stream = _HEADER.unpack_from(data, pos)
    return hi << 8 | lo, ftype, flags, stream


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/http2.h."""
    if data.startswith(b"PRI * HTTP/2.0"):
        return Side.CLIENT
    if len(data) < 9:
        return None
    n, ftype, flags, stream = _frame_header(data)
    if n > 16384 or stream >> 31:
        return None
    if ftype == SETTINGS:
        ok = stream == 0 and ((flags == 0 and n % 6 == 0 and n > 0) or (flags == 1 and n == 0))
        return Side.SERVER if ok else None
    if ftype == HEADERS and stream & 1 and not flags & ~0x2D and 0 < n <= len(data) - 9:
        return Side.CLIENT
    return None


def _plausible(data: bytes) -> bool:
    """A chunk that starts with a frame header we could resync at."""
    if data.startswith(PREFACE) or detect(data) is not None:
        return True
    if len(data) < 9:
        return False
    n, ftype, flags, stream = _frame_header(data)
    return n <= 16384 and not stream >> 31 and ftype <= CONTINUATION and (
        (ftype in (DATA, HEADERS, RST_STREAM, WINDOW_UPDATE) and stream) or
        (ftype in (PING, GOAWAY) and stream == 0 and (ftype != PING or n == 8)))


class TolerantDecoder:
    """hpack.Decoder for whole streams; a tolerant walk of the block when an index is unknown."""

    def __init__(self) -> None:
        self.decoder = Decoder(max_header_list_size=1 << 20)
        self.degraded = 0  # header blocks decoded with unknown entries
        self.capped = 0  # table sizes asked beyond the limit (the parser moves it to its stats)
        # a passive observer may have missed the SETTINGS: tolerate up to MAX_TABLE until one is seen
        self.decoder.max_allowed_table_size = MAX_TABLE

    def set_limit(self, size: int) -> None:
        """The receiver's SETTINGS_HEADER_TABLE_SIZE: the largest table the sender may use."""
        if size > MAX_TABLE:
            self.capped += 1
            size = MAX_TABLE
        self.decoder.max_allowed_table_size = size
        if self.decoder.header_table.maxsize > size:
            self.decoder.header_table.maxsize = size

    def decode(self, block: bytes) -> tuple[list[tuple[str, str]], int]:
        """Header block -> ([(name, value)], number of headers we could not resolve)."""
        table = self.decoder.header_table
        saved = (table.dynamic_entries.copy(), table._current_size, table._maxsize)
        try:
            headers = self.decoder.decode(block, raw=True)
            return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers], 0
        except (HPACKError, IndexError, ValueError):
            table.dynamic_entries, table._current_size, table._maxsize = saved
        self.degraded += 1
        return self._walk(bytes(block))

    def _walk(self, b: bytes) -> tuple[list[tuple[str, str]], int]:
        table = self.decoder.header_table
        out, unknown, pos = [], 0, 0
        try:
            while pos < len(b):
                c = b[pos]
                if c & 0x80:  # indexed field
                    idx, n = decode_integer(b[pos:], 7)
                    pos += n
                    name, value = self._lookup(idx)
                elif c & 0xC0 == 0x40 or c & 0xF0 in (0x00, 0x10):  # literal (+ indexing)
                    prefix = 6 if c & 0x40 else 4
                    idx, n = decode_integer(b[pos:], prefix)
                    pos += n
                    if idx:
                        name = self._lookup(idx)[0]
                    else:
                        name, pos = self._string(b, pos)
                    value, pos = self._string(b, pos)
                    if c & 0x40:
                        table.add(name.encode("latin-1"), value.encode("latin-1"))
                elif c & 0xE0 == 0x20:  # dynamic table size update
                    size, n = decode_integer(b[pos:], 5)
                    pos += n
                    if size > self.decoder.max_allowed_table_size:
                        self.capped += 1
                        size = self.decoder.max_allowed_table_size
                    table.maxsize = size
                    continue
                else:
                    break
                if name == UNKNOWN or value == UNKNOWN:
                    unknown += 1
                out.append((name, value))
        except (HPACKError, IndexError, ValueError):
            unknown += 1
        return out, unknown

    def _lookup(self, idx: int) -> tuple[str, str]:
        try:
            n, v = self.decoder.header_table.get_by_index(idx)
        except HPACKError:
            return UNKNOWN, UNKNOWN
        return n.decode("latin-1"), v.decode("latin-1")

    @staticmethod
    def _string(b: bytes, pos: int) -> tuple[str, int]:
        n, used = decode_integer(b[pos:], 7)
        raw = b[pos + used : pos + used + n]
        if len(raw) < n:
            raise ValueError("truncated string")
        s = decode_huffman(raw) if b[pos] & 0x80 else raw
        return s.decode("latin-1"), pos + used + n


@dataclass(slots=True)
class _Stream:
    start_ns: int
    request: dict[str, str] = field(default_factory=dict)
    response: dict[str, str] = field(default_factory=dict)
    unknown: int = 0
    reset: int | None = None


@dataclass(slots=True)
class _Direction:
    side: Side
    buf: bytearray = field(default_factory=bytearray)
    hpack: TolerantDecoder = field(default_factory=TolerantDecoder)
    block: bytearray = field(default_factory=bytearray)  # header block awaiting CONTINUATION
    block_stream: int = 0
    block_end_stream: bool = False
    resync: bool = False
    start_ns: int = 0
    need: int = 0  # the buffer cannot hold a whole frame before it is this long
    skip: int = 0  # bytes of a DATA payload still to pass over
    skip_end: int = 0  # the stream that payload's END_STREAM ends (0: none)


class Http2Parser(Parser):
    protocol = "HTTP2"

    def __init__(self) -> None:
        super().__init__()
        self._dirs = {Side.CLIENT: _Direction(Side.CLIENT), Side.SERVER: _Direction(Side.SERVER)}
        self._streams: dict[int, _Stream] = {}
        self._out: list[Record] = []

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        d = self._dirs[side]
        missing = max(0, (size or 0) - len(data))
        if d.skip:
            data, missing = self._skip(d, data, missing, ts_ns)
            if not data and not missing:
                return self._take()
        if d.resync:
            if not _plausible(data):
                self.stats["resync_skipped_chunks"] += 1
                return []
            d.resync, d.buf, d.block = False, bytearray(), bytearray()
            self.stats["resyncs"] += 1
        if not d.buf:
            d.start_ns = ts_ns
        d.buf += data
        if len(d.buf) >= d.need:
            self._parse(d, ts_ns)
        if missing > 0 and not d.resync:
            # lost bytes are harmless inside a DATA payload (skipped) and stood in by zeros inside
            # another frame; past its end the framing and maybe the HPACK state are gone (Rules 2, 3)
            if d.skip and missing <= d.skip:
                self._skip(d, b"", missing, ts_ns)
            elif not d.skip and len(d.buf) >= 9 and missing <= min(MAX_FILL, 9 + _frame_header(d.buf)[0] - len(d.buf)):
                d.buf += bytes(missing)
                self._parse(d, ts_ns)
            else:
                self._lose(d, "lost_bytes")
        return self._take()

    def _skip(self, d: _Direction, data: bytes, missing: int, ts_ns: int) -> tuple[bytes, int]:
        """Pass over the rest of a DATA payload, copied (`data`) or not (`missing`)."""
        n = min(d.skip, len(data))
        d.skip -= n
        data = data[n:]
        n = min(d.skip, missing)
        d.skip -= n
        missing -= n
        if not d.skip and d.skip_end:
            stream, d.skip_end = d.skip_end, 0
            self._end(stream, ts_ns)
        return data, missing

    def _parse(self, d: _Direction, ts_ns: int) -> None:
        buf, pos = bytes(d.buf), 0
        d.need = 0
        if d.side == Side.CLIENT and buf.startswith(PREFACE[: len(buf)]):
            if len(buf) < len(PREFACE):
                return
            pos = len(PREFACE)
            d.start_ns = ts_ns  # the first frame begins in this chunk
        while len(buf) - pos >= 9:
            n, ftype, flags, stream = _frame_header(buf, pos)
            if stream >> 31 or ftype > 0x10 or (ftype <= CONTINUATION and ftype not in (DATA, HEADERS, CONTINUATION)
                                                and n > 16384):
                self._lose(d, "garbage")
                return
            if len(buf) - pos - 9 < n:
                if ftype == DATA:
                    # Rule 3: a payload is passed over by length, not buffered
                    d.skip = 9 + n - (len(buf) - pos)
                    d.skip_end = stream if flags & END_STREAM and d.side == Side.SERVER else 0
                    pos = len(buf)
                else:
                    d.need = 9 + n
                break
            self._frame(d, buf, pos, n, ftype, flags, stream, ts_ns)
            pos += 9 + n
            d.start_ns = ts_ns
        del d.buf[:pos]

    def close(self, ts_ns: int) -> list[Record]:
        for sid, st in list(self._streams.items()):
            if st.request:
                self.stats["requests_without_response"] += 1
                self._emit(sid, st, ts_ns, closed=True)
        self._streams.clear()
        return self._take()

    def _take(self) -> list[Record]:
        out, self._out = self._out, []
        return out

    def _lose(self, d: _Direction, reason: str) -> None:
        self.stats[reason] += 1
        d.resync, d.buf, d.block = True, bytearray(), bytearray()
        d.need = d.skip = d.skip_end = 0

    def _frame(self, d: _Direction, buf: bytes, pos: int, n: int, ftype: int, flags: int, stream: int,
               ts_ns: int) -> None:
        if ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                try:
                    frame, _ = Frame.parse_frame_header(memoryview(buf[pos : pos + 9]))
                    frame.parse_body(memoryview(buf[pos + 9 : pos + 9 + n]))
                except (HyperframeError, ValueError):
                    self.stats["bad_frame"] += 1
                    return
                d.block = bytearray(frame.data)
                d.block_stream, d.block_end_stream = stream, bool(flags & END_STREAM)
            elif stream == d.block_stream and d.block is not None:
                d.block += buf[pos + 9 : pos + 9 + n]
            if len(d.block) > MAX_HEADER_BLOCK:
                self._lose(d, "header_block_too_large")
                return
            if flags & END_HEADERS:
                self._headers(d, d.block_stream, bytes(d.block), d.block_end_stream, ts_ns)
                d.block = bytearray()
        elif ftype == DATA:
            if flags & END_STREAM and d.side == Side.SERVER:
                self._end(stream, ts_ns)
        elif ftype == SETTINGS and not flags & 0x1 and stream == 0:
            # Rule 4: what this side's decoder allows bounds the other side's encoder
            other = self._dirs[Side.SERVER if d.side == Side.CLIENT else Side.CLIENT]
            for i in range(pos + 9, pos + 9 + n - 5, 6):
                ident, value = struct.unpack_from(">HI", buf, i)
                if ident == 0x1:
                    other.hpack.set_limit(value)
                    self.stats["hpack_table_capped"] += other.hpack.capped
                    other.hpack.capped = 0
        elif ftype == RST_STREAM and n == 4:
            st = self._streams.get(stream)
            if st is not None:
                st.reset = int.from_bytes(buf[pos + 9 : pos + 13], "big")
                self._end(stream, ts_ns)

    def _headers(self, d: _Direction, stream: int, block: bytes, end_stream: bool, ts_ns: int) -> None:
        headers, unknown = d.hpack.decode(block)
        if d.hpack.capped:
            self.stats["hpack_table_capped"] += d.hpack.capped
            d.hpack.capped = 0
        if unknown:
            self.stats["degraded_header_blocks"] += 1
        st = self._streams.get(stream)
        if d.side == Side.CLIENT:
            if st is None:
                if len(self._streams) >= MAX_STREAMS:
                    self._streams.pop(next(iter(self._streams)))
                    self.stats["stream_overflow"] += 1
                st = self._streams[stream] = _Stream(start_ns=d.start_ns)
            target = st.request
        else:
            if st is None:  # the request went by before we joined
                self.stats["responses_without_request"] += 1
                st = self._streams[stream] = _Stream(start_ns=d.start_ns)
            target = st.response
        st.unknown += unknown
        for name, value in headers:
            if name != UNKNOWN and name not in target:
                target[name] = value
        if end_stream and d.side == Side.SERVER:
            self._end(stream, ts_ns)

    def _end(self, stream: int, ts_ns: int) -> None:
        st = self._streams.pop(stream, None)
        if st is not None:
            self._emit(stream, st, ts_ns)

    def _emit(self, stream: int, st: _Stream, ts_ns: int, closed: bool = False) -> None:
        req, resp = st.request, st.response
        method, path = req.get(":method", UNKNOWN), req.get(":path", UNKNOWN)
        attrs: dict = {"network.protocol.name": "http", "network.protocol.version": "2", "http2.stream_id": stream}
        if method != UNKNOWN:
            attrs["http.request.method"] = method
        if path != UNKNOWN:
            attrs["url.path"], _, query = path.partition("?")
            if query:
                attrs["url.query"] = query
        if st.unknown or not req:
            attrs["http2.unknown_headers"] = st.unknown or 1
        status, message = "UNSET", ""
        code = resp.get(":status")
        if _number(code) is not None:
            attrs["http.response.status_code"] = int(code)
            if int(code) >= 500:
                status, message = "ERROR", f"HTTP {code}"
                attrs["error.type"] = code
        name = f"{method} {path.partition('?')[0]}" if path != UNKNOWN else (method if method != UNKNOWN else "HTTP2")
        ctype = req.get("content-type", resp.get("content-type", ""))
        if ctype.startswith("application/grpc"):
            name, status, message = self._grpc(attrs, path, resp, status, message)
        if st.reset is not None and status != "ERROR":
            status, message = "ERROR", f"stream reset (error code {st.reset})"
            attrs["error.type"] = "RST_STREAM"
        if closed and status != "ERROR":
            status, message = "ERROR", "connection closed before the stream ended"
            attrs["error.type"] = "no_response"
        self._out.append(Record(name=name, start_ns=st.start_ns, end_ns=ts_ns, attributes=attrs,
                                status=status, status_message=message))

    @staticmethod
    def _grpc(attrs: dict, path: str, resp: dict, status: str, message: str) -> tuple[str, str, str]:
        attrs["rpc.system"] = "grpc"
        service, _, method = path.lstrip("/").partition("/")
        if path != UNKNOWN and method:
            attrs["rpc.service"], attrs["rpc.method"] = service, method
        code = resp.get("grpc-status")
        if _number(code) is not None:
            attrs["rpc.grpc.status_code"] = int(code)
            if code != "0":
                status = "ERROR"
                message = unquote(resp.get("grpc-message", ""))[:512]
                attrs["error.type"] = _GRPC_CODES[int(code)] if int(code) < len(_GRPC_CODES) else code
        name = f"{service}/{method}" if path != UNKNOWN and method else "grpc"
        return name, status, message


def _number(text: str | None) -> int | None:
    """A status header's value as a number, None unless it is a few ASCII digits (str.isdigit also
    takes digits like "³" that int() refuses, and int() refuses thousands of digits)."""
    if text and len(text) <= 9 and text.isascii() and text.isdigit():
        return int(text)
    return None


PARSER = Http2Parser
