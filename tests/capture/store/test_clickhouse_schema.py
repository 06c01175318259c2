"""ClickHouse-only parts of the store, on chDB: the schema (day partitions, ORDER BY, TTL),
the TTL dropping rows on a merge, URL dispatch, and one chDB path per process."""
from __future__ import annotations

import time

import pytest

from capture.span import Span
from capture.store.clickhouse_store import ClickHouseStore
from capture.store.factory import is_clickhouse_url, open_store

S = 1_000_000_000
DAY = 86400 * S


def _span(t: int, name: str = "GET /") -> Span:
    return Span(name=name, kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=t + 1000,
                resource={"service.name": "api"})


def test_schema_partitions_by_day_orders_for_the_tools_and_sets_ttl():
    store = ClickHouseStore("chdb://", max_age_s=3600)
    try:
        [(part, order, create)] = store._rows(
            "SELECT partition_key, sorting_key, create_table_query FROM system.tables"
            " WHERE database = {d:String} AND name = 'spans'", {"d": store.database})
        assert "toDate(fromUnixTimestamp64Nano(start_ns))" in part
        assert order == "service, kind, start_ns"
        assert "TTL ingested_at + toIntervalSecond(3600)" in create
        now = time.time_ns()
        store.append([_span(now - 2 * DAY), _span(now - DAY), _span(now)])
        parts = store._rows("SELECT DISTINCT partition FROM system.parts WHERE database = {d:String}"
                            " AND table = 'spans' AND active", {"d": store.database})
        assert len(parts) == 3  # one per day
    finally:
        store.close()


def test_ttl_drops_rows_ingested_before_the_retention():
    store = ClickHouseStore("chdb://", max_age_s=3600)
    try:
        now = time.time_ns()
        store.append([_span(now, "fresh")])
        # Rows ingested two hours and one minute ago, as a server would hold them after
        # running that long: the TTL (3600 s) drops the first when its part is written or merged.
        for name, age_s in (("old", 7200), ("recent", 60)):
            store._con.command(
                f"INSERT INTO {store.table} (trace_id, span_id, name, kind, start_ns, end_ns, service,"
                " ingested_at) VALUES ('t', {s:String}, {s:String}, 'SERVER', {n:Int64}, {n:Int64},"
                " 'api', now() - {a:UInt32})", {"n": now, "s": name, "a": age_s})
        store._con.command(f"OPTIMIZE TABLE {store.table} FINAL")
        assert sorted(s.name for s in store.spans(_filter())) == ["fresh", "recent"]
    finally:
        store.close()


def _filter():
    from capture.store.api import SpanFilter

    return SpanFilter(limit=10)


def test_url_dispatch():
    assert is_clickhouse_url("clickhouse://u:p@ch:8123/guardian") and is_clickhouse_url("chdb://")
    assert not is_clickhouse_url("/var/lib/guardian/spans.duckdb") and not is_clickhouse_url(None)
    store = open_store("chdb://")
    try:
        assert isinstance(store, ClickHouseStore) and store.count() == 0
    finally:
        store.close()
    with pytest.raises(ValueError):
        ClickHouseStore("mysql://x")


def test_stores_in_one_process_are_separate_and_close_drops_their_data():
    a, b = ClickHouseStore("chdb://"), ClickHouseStore("chdb://")
    try:
        a.append([_span(S)])
        assert a.count() == 1 and b.count() == 0
        db = a.database
        a.close()
        assert b._rows("SELECT count() FROM system.databases WHERE name = {d:String}", {"d": db}) == [(0,)]
        with pytest.raises(ValueError, match="one chDB data path"):
            ClickHouseStore("chdb:///tmp/another-chdb-dir")
    finally:
        b.close()
