"""`open_store`: the one place that picks the store engine.

A plain path (or None, in memory) is DuckDB, the single-node default. A ClickHouse URL
(`clickhouse://user:pass@host:8123/db`) is a ClickHouse server; `chdb://` (memory) or
`chdb:///dir` runs the same ClickHouse SQL in-process on chDB. With no path at all,
DEFAULT_ENGINE decides (tests switch it to run one suite on both engines).
"""
from __future__ import annotations

from capture.store.api import SpanStore

DEFAULT_ENGINE = "duckdb"  # or "chdb": what open_store(None) gives
_CLICKHOUSE_SCHEMES = ("clickhouse://", "clickhouses://", "chdb://")


def is_clickhouse_url(path: str | None) -> bool:
    return bool(path) and path.startswith(_CLICKHOUSE_SCHEMES)


def open_store(path: str | None = None, *, max_age_s: float | None = None,
               max_spans: int | None = None, memory_limit_mb: int | None = None,
               threads: int | None = None) -> SpanStore:
    """In memory when path is None, else a file or a ClickHouse URL; retention optional.
    `memory_limit_mb`/`threads` bound the embedded engine (DuckDB); None keeps its defaults."""
    if path is None and DEFAULT_ENGINE == "chdb":
        path = "chdb://"
    if is_clickhouse_url(path):
        from capture.store.clickhouse_store import ClickHouseStore

        return ClickHouseStore(path, max_age_s=max_age_s, max_spans=max_spans)
    from capture.store.duckdb_store import DuckDBStore

    return DuckDBStore(path, max_age_s=max_age_s, max_spans=max_spans, memory_limit_mb=memory_limit_mb,
                       threads=threads)
