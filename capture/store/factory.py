"""`open_store`: the one place that picks the store engine (DuckDB today)."""
from __future__ import annotations

from capture.store.api import SpanStore


def open_store(path: str | None = None, *, max_age_s: float | None = None,
               max_spans: int | None = None) -> SpanStore:
    """In memory when path is None, else a file that survives restart; retention optional."""
    from capture.store.duckdb_store import DuckDBStore

    return DuckDBStore(path, max_age_s=max_age_s, max_spans=max_spans)
