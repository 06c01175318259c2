"""Source-independent core: chunks of a connection -> protocol parser -> spans.

Live eBPF and recorded pcap sources both call `data()` / `close()`; spans go to `emit`.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from capture.connection import Connection
from capture.protocols import registry
from capture.protocols.base import Side
from capture.span import Span
from capture.stitch import record_to_span

log = logging.getLogger(__name__)

SpanSink = Callable[[list[Span]], None]
_CLIENT, _SERVER = Side.CLIENT, Side.SERVER


class Pipeline:
    def __init__(self, emit: SpanSink) -> None:
        self.emit = emit
        self.stats: Counter[str] = Counter()
        self.batch: list[Span] = []  # spans completed and not yet flushed (the compiled path appends here too)

    def data(self, conn: Connection, egress: bool, data: bytes, ts_ns: int, size: int | None = None,
             tid: int = 0) -> None:
        """Bytes of `conn` written (egress) or read by its process."""
        parser = conn.parser
        if parser is None and (parser := self.new_parser(conn)) is None:
            return
        if egress == (conn.role != "SERVER"):
            side = _CLIENT
            if tid:
                conn.request_tid = tid
        else:
            side = _SERVER
        conn.last_seen_ns = ts_ns
        try:
            records = parser.feed(side, data, ts_ns, size)
        except Exception:  # noqa: BLE001 — a parser bug must never stop the capture (Rule 2)
            self._parser_failed(conn)
            return
        if records:
            self._emit(records, conn)

    def exchange(self, conn: Connection, request: bytes, req_ts: int, req_size: int, req_tid: int,
                 response: bytes, resp_ts: int, resp_size: int) -> None:
        """A request chunk of `conn` and the response chunk that followed it (a record the kernel
        paired): as data() of the one then the other."""
        parser = conn.parser
        if parser is None and (parser := self.new_parser(conn)) is None:
            return
        if req_tid:
            conn.request_tid = req_tid
        conn.last_seen_ns = resp_ts
        try:
            records = parser.exchange(request, req_ts, req_size, response, resp_ts, resp_size)
        except Exception:  # noqa: BLE001 — as in data()
            self._parser_failed(conn)
            return
        if records:
            self._emit(records, conn)

    def _emit(self, records: list, conn: Connection) -> None:
        batch = self.batch
        for r in records:
            batch.append(record_to_span(r, conn))

    def new_parser(self, conn: Connection):
        """The parser a connection's first bytes start (None: no parser for its protocol)."""
        cls = registry.parser_class(conn.protocol)
        if cls is None:
            self.stats["no_parser"] += 1
            return None
        conn.parser = cls()
        conn.parser.at_server = conn.role == "SERVER"
        return conn.parser

    def _parser_failed(self, conn: Connection) -> None:
        self.stats["parser_exceptions"] += 1
        log.exception("%s parser failed; connection dropped from parsing", conn.protocol)
        conn.parser = None

    def close(self, conn: Connection, ts_ns: int) -> None:
        if conn.parser is None:
            return
        try:
            records = conn.parser.close(ts_ns)
        except Exception:  # noqa: BLE001 — see data()
            self.stats["parser_exceptions"] += 1
            log.exception("%s parser failed on close", conn.protocol)
            return
        self.batch.extend(record_to_span(r, conn) for r in records)
        for key, n in conn.parser.stats.items():
            self.stats[f"{conn.protocol.lower()}.{key}"] += n

    def flush(self) -> None:
        """Hand the spans completed so far to the sink."""
        if self.batch:
            batch, self.batch = self.batch, []
            self.stats["spans"] += len(batch)
            self.emit(batch)
