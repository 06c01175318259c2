"""SpanStore on ClickHouse: a server through clickhouse-connect, or chDB in-process (same SQL).

One MergeTree table per database, partitioned by day of span start, ordered by (service, kind,
start_ns) since every tool query names a window and most a service or kind; bloom-filter
indexes find a trace or span id without that key. Attributes and resource are JSON text, as in
the DuckDB store, so values round-trip with their types. Retention: a TTL on ingest time (the
server's own merges drop old rows) plus the same relative-to-newest age check and span count
cap as DuckDB, so both engines answer alike. Batches go in as one Arrow insert.
"""
from __future__ import annotations

import base64
import secrets
import threading
import time
from typing import Any, Iterable, Literal

import orjson

from capture.span import Span
from capture.store.api import EdgeRow, RedRow, SpanFilter, SpanStore, TimeWindow
from capture.store.columns import arrow_batch, span_of_row, with_attributes
from capture.store.clickhouse_conn import Connection, connect

_QUANTILES = "quantilesExactInclusive(0.5, 0.95, 0.99)(duration_ns)"  # = DuckDB's quantile_cont
_AGE_CHECK_EVERY_S = 1.0


def schema(table: str, ttl_s: float | None) -> str:
    ttl = f"\nTTL ingested_at + INTERVAL {int(ttl_s)} SECOND" if ttl_s else ""
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    trace_id String, span_id String, parent_span_id String,
    name LowCardinality(String), kind LowCardinality(String),
    start_ns Int64, end_ns Int64, duration_ns Int64,
    status_code LowCardinality(String), status_message String,
    service LowCardinality(String), peer LowCardinality(String),
    attributes String CODEC(ZSTD(1)), resource String CODEC(ZSTD(1)),
    ingested_at DateTime DEFAULT now(),
    INDEX idx_trace trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_span span_id TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(fromUnixTimestamp64Nano(start_ns))
ORDER BY (service, kind, start_ns){ttl}"""


class _Params:
    """Names `{pN:Type}` placeholders and collects their values."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __call__(self, value: Any, typ: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return "{" + name + ":" + typ + "}"


class ClickHouseStore(SpanStore):
    def __init__(self, url: str = "chdb://", database: str | None = None,
                 max_age_s: float | None = None, max_spans: int | None = None):
        self.url = url
        self.max_age_s = max_age_s
        self.max_spans = max_spans
        self._con: Connection | None
        self._con, url_db = connect(url)
        # An in-memory chDB store is private to this object (the embedded server is shared).
        self._private = self._con.kind == "chdb" and url.rstrip("/") == "chdb:"
        db = database or url_db or ("g_" + secrets.token_hex(6) if self._private else "guardian")
        if not db.replace("_", "").isalnum():
            raise ValueError(f"bad database name {db!r}")
        self.database = db
        self.table = f"{db}.spans"
        self._con.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self._con.command(schema(self.table, max_age_s))
        self._lock = threading.RLock()
        self._last_age_check = 0.0
        self.evicted = 0

    # -- writing ---------------------------------------------------------------------------
    def append(self, spans: Iterable[Span]) -> int:
        batch = spans if isinstance(spans, list) else list(spans)
        n = len(batch)
        if not n:
            return 0
        table = arrow_batch(batch, nulls=False)
        with self._lock:
            self._con.insert(self.table, table)
            self._enforce_retention()
        return n

    def relink(self, parents: list[tuple[str, str, dict[str, Any]]], traces: dict[str, str]) -> int:
        """Mutations (ALTER TABLE ... UPDATE, waited for): late links are few next to inserts.
        Lists travel as one JSON String parameter each, which server and chDB bind alike."""
        def arr(name: str) -> str:
            return f"JSONExtract({{{name}:String}}, 'Array(String)')"

        def js(values: list[str]) -> str:
            return orjson.dumps(values).decode()

        set_ = 0
        with self._lock:
            if parents:
                want = {sid: (parent, extra) for sid, parent, extra in parents}
                rows = self._rows(f"SELECT span_id, attributes FROM {self.table}"
                                  f" WHERE has({arr('ids')}, span_id)", {"ids": js(list(want))})
                if rows:
                    ids = [r[0] for r in rows]
                    attrs = [base64.b64encode(with_attributes(r[1], want[r[0]][1]).encode()).decode()
                             for r in rows]
                    self._con.command(
                        f"ALTER TABLE {self.table} UPDATE"
                        f" parent_span_id = transform(span_id, {arr('ids')}, {arr('parents')}, parent_span_id),"
                        f" attributes = transform(span_id, {arr('ids')},"
                        f" arrayMap(x -> base64Decode(x), {arr('attrs')}), attributes)"
                        f" WHERE has({arr('ids')}, span_id) SETTINGS mutations_sync = 2",
                        {"ids": js(ids), "parents": js([want[i][0] for i in ids]), "attrs": js(attrs)})
                set_ = len(rows)
            if traces:
                self._con.command(
                    f"ALTER TABLE {self.table} UPDATE trace_id = transform(trace_id, {arr('old')},"
                    f" {arr('new')}, trace_id) WHERE has({arr('old')}, trace_id) SETTINGS mutations_sync = 2",
                    {"old": js(list(traces)), "new": js(list(traces.values()))})
        return set_

    def _enforce_retention(self) -> None:
        # Lightweight deletes: a hub should prefer max_age_s (the TTL) to a count cap.
        if self.max_spans is not None:
            excess = self.count() - self.max_spans
            if excess > 0:
                p = _Params()
                cut = self._rows(f"SELECT start_ns FROM {self.table} ORDER BY start_ns"
                                 f" LIMIT 1 OFFSET {p(excess - 1, 'UInt64')}", p.values)
                if cut:
                    self._delete(f"start_ns <= {{c:Int64}}", {"c": cut[0][0]})
        now = time.monotonic()
        if self.max_age_s is not None and now - self._last_age_check >= _AGE_CHECK_EVERY_S:
            self._last_age_check = now
            [(newest,)] = self._rows(f"SELECT max(end_ns) FROM {self.table}")
            self._delete("end_ns < {c:Int64}", {"c": newest - int(self.max_age_s * 1e9)})

    def _delete(self, where: str, params: dict[str, Any]) -> None:
        before = self.count()
        self._con.command(f"DELETE FROM {self.table} WHERE {where}", params)
        self.evicted += before - self.count()

    def close(self) -> None:
        with self._lock:
            if self._con is None:
                return
            if self._private:
                self._con.command(f"DROP DATABASE IF EXISTS {self.database}")
            self._con.close()
            self._con = None

    # -- reading ---------------------------------------------------------------------------
    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        return self._con.rows(sql, params)

    def _select(self) -> str:
        return ("SELECT trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code,"
                f" status_message, attributes, resource FROM {self.table}")

    _span = staticmethod(span_of_row)

    @staticmethod
    def _where(flt: SpanFilter, p: _Params) -> str:
        where: list[str] = []
        if flt.window:
            where.append(f"start_ns >= {p(flt.window.start_ns, 'Int64')}"
                         f" AND start_ns < {p(flt.window.end_ns, 'Int64')}")
        for col, val in (("service", flt.service), ("name", flt.name), ("kind", flt.kind),
                         ("status_code", flt.status_code), ("trace_id", flt.trace_id),
                         ("peer", flt.peer)):
            if val is not None:
                where.append(f"{col} = {p(val, 'String')}")
        if flt.min_duration_ns is not None:
            where.append(f"duration_ns >= {p(flt.min_duration_ns, 'Int64')}")
        for key, val in flt.attributes.items():
            # The raw JSON value equals the text (a number, true) or the text as a JSON string;
            # resource keys filter too, as in the DuckDB store.
            k = p(key, "String")
            raw = f"if(JSONHas(attributes, {k}), JSONExtractRaw(attributes, {k}), JSONExtractRaw(resource, {k}))"
            where.append(f"{raw} IN ({p(str(val), 'String')}, {p(orjson.dumps(str(val)).decode(), 'String')})")
        return (" WHERE " + " AND ".join(where)) if where else ""

    def spans(self, flt: SpanFilter) -> list[Span]:
        p = _Params()
        sql = self._select() + self._where(flt, p)
        sql += {"duration_desc": " ORDER BY duration_ns DESC", "start_desc": " ORDER BY start_ns DESC"}.get(
            flt.order, " ORDER BY start_ns")
        sql += f" LIMIT {p(max(int(flt.limit), 0), 'UInt64')}"
        return [self._span(r) for r in self._rows(sql, p.values)]

    def traces(self, flt: SpanFilter, limit: int = 20) -> list[list[Span]]:
        p = _Params()
        where = self._where(flt, p)
        pick = (f"SELECT trace_id FROM {self.table}{where} GROUP BY trace_id"
                f" ORDER BY max(start_ns) DESC LIMIT {p(limit, 'UInt64')}")
        ids = [r[0] for r in self._rows(pick, p.values)]
        if not ids:
            return []
        rows = self._rows(self._select() + f" WHERE trace_id IN ({pick}) ORDER BY start_ns", p.values)
        by_trace: dict[str, list[Span]] = {i: [] for i in ids}
        for r in rows:
            if r[0] in by_trace:  # a tie on max(start_ns) may pick another id the second time
                by_trace[r[0]].append(self._span(r))
        return list(by_trace.values())

    def trace(self, trace_id: str) -> list[Span]:
        return [self._span(r) for r in self._rows(
            self._select() + " WHERE trace_id = {t:String} ORDER BY start_ns", {"t": trace_id})]

    def red(self, window: TimeWindow, by: Literal["service", "operation"] = "service",
            interval_s: int | None = None, service: str | None = None) -> list[RedRow]:
        p = _Params()
        op = "name" if by == "operation" else "NULL"
        w0, w1 = p(window.start_ns, "Int64"), p(window.end_ns, "Int64")
        if interval_s:
            step = p(int(interval_s * 1e9), "Int64")
            bucket = f"({w0} + intDiv(start_ns - {w0}, {step}) * {step})"
            seconds = float(interval_s)
        else:
            bucket, seconds = "NULL", window.seconds
        sql = (f"SELECT service, {op} AS op, {bucket} AS b, count(), countIf(status_code = 'ERROR'),"
               f" {_QUANTILES} FROM {self.table}"
               f" WHERE kind IN ('SERVER', 'CONSUMER') AND start_ns >= {w0} AND start_ns < {w1}")
        if service is not None:
            sql += f" AND service = {p(service, 'String')}"
        sql += " GROUP BY ALL ORDER BY service, op, b"
        return [RedRow(service=svc, operation=o, interval_start_ns=b, count=n, errors=e,
                       rate_per_s=n / seconds, error_rate=e / n if n else 0.0,
                       p50_ms=q[0] / 1e6, p95_ms=q[1] / 1e6, p99_ms=q[2] / 1e6)
                for svc, o, b, n, e, q in self._rows(sql, p.values)]

    def service_map(self, window: TimeWindow) -> list[EdgeRow]:
        # The same edges as the DuckDB store: linked calls (caller's stats when the parent is a
        # CLIENT/PRODUCER), then unlinked CLIENT/PRODUCER spans to their peer.
        sql = f"""
        WITH w AS (SELECT trace_id, span_id, parent_span_id, kind, service, peer, duration_ns,
                          status_code FROM {self.table}
                   WHERE start_ns >= {{w0:Int64}} AND start_ns < {{w1:Int64}}),
        linked AS (
            SELECT p.service AS client, c.service AS server, p.span_id AS caller,
                   if(p.kind IN ('CLIENT','PRODUCER'), p.duration_ns, c.duration_ns) AS duration_ns,
                   if(p.kind IN ('CLIENT','PRODUCER'), p.status_code, c.status_code) AS status_code
            FROM w AS c INNER JOIN w AS p ON c.parent_span_id = p.span_id AND c.trace_id = p.trace_id
            WHERE c.kind IN ('SERVER','CONSUMER') AND c.parent_span_id != ''
              AND (p.kind IN ('CLIENT','PRODUCER') OR p.service != c.service)),
        calls AS (
            SELECT client, server, duration_ns, status_code FROM linked
            UNION ALL
            SELECT service AS client, peer AS server, duration_ns, status_code FROM w
            WHERE kind IN ('CLIENT','PRODUCER') AND peer != ''
              AND span_id NOT IN (SELECT caller FROM linked))
        SELECT client, server, count() AS n, countIf(status_code = 'ERROR'), {_QUANTILES}
        FROM calls GROUP BY client, server ORDER BY n DESC, client, server"""
        seconds = window.seconds
        return [EdgeRow(client=c, server=s, count=n, errors=e, rate_per_s=n / seconds,
                        error_rate=e / n if n else 0.0,
                        p50_ms=q[0] / 1e6, p95_ms=q[1] / 1e6, p99_ms=q[2] / 1e6)
                for c, s, n, e, q in self._rows(sql, {"w0": window.start_ns, "w1": window.end_ns})]

    def services(self, window: TimeWindow | None = None) -> list[str]:
        if window is None:
            rows = self._rows(f"SELECT DISTINCT service FROM {self.table} ORDER BY 1")
        else:
            rows = self._rows(f"SELECT DISTINCT service FROM {self.table} WHERE start_ns >= {{w0:Int64}}"
                              " AND start_ns < {w1:Int64} ORDER BY 1",
                              {"w0": window.start_ns, "w1": window.end_ns})
        return [r[0] for r in rows]

    def time_range(self) -> TimeWindow | None:
        n, lo, hi = self._rows(f"SELECT count(), min(start_ns), max(end_ns) FROM {self.table}")[0]
        return TimeWindow(lo, hi) if n else None

    def count(self) -> int:
        return int(self._rows(f"SELECT count() FROM {self.table}")[0][0])
