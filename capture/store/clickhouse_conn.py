"""Where ClickHouseStore's SQL runs: a ClickHouse server (clickhouse-connect, HTTP) or chDB.

Both sides take the same SQL text with ClickHouse's own `{name:Type}` parameters (bound by the
server, never spliced into the text) and the same Arrow batches for inserts, and both hand back
rows from an Arrow result, so a test on chDB runs exactly what a hub sends to a server.
chDB is ClickHouse's engine in-process: one embedded server per process with one data path,
so stores in one process share it and each keeps its own database.
"""
from __future__ import annotations

import threading
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse

import pyarrow as pa


class Connection(Protocol):
    kind: str

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...
    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]: ...
    def insert(self, table: str, data: pa.Table) -> None: ...
    def close(self) -> None: ...


def _rows(table: pa.Table) -> list[tuple]:
    return list(zip(*(c.to_pylist() for c in table.columns))) if table.num_rows else []


def _ipc(data: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as w:
        w.write_table(data)
    return sink.getvalue().to_pybytes()


class ServerConnection:
    """A ClickHouse server over HTTP(S) through the official client."""

    kind = "clickhouse"

    def __init__(self, url: str):
        import clickhouse_connect

        u = urlparse(url)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        secure = u.scheme in ("clickhouses", "https")
        self.database = (u.path or "/").strip("/") or "guardian"
        self.client = clickhouse_connect.get_client(
            host=u.hostname or "localhost", port=u.port or (8443 if secure else 8123),
            username=unquote(u.username or "default"), password=unquote(u.password or ""),
            secure=secure, database="default", autogenerate_session_id=False,
            compress=q.get("compress", "lz4"))

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.client.command(sql, parameters=params or None)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        return _rows(self.client.query_arrow(sql, parameters=params or None, use_strings=True))

    def insert(self, table: str, data: pa.Table) -> None:
        self.client.raw_insert(table, data.column_names, _ipc(data), fmt="ArrowStream")

    def close(self) -> None:
        self.client.close()


_chdb_lock = threading.RLock()  # one embedded server per process; its connection is not thread-safe
_chdb_conn: Any = None
_chdb_path: str | None = None


class ChdbConnection:
    """ClickHouse's engine in this process (chDB): `path` None keeps data in memory."""

    kind = "chdb"

    def __init__(self, path: str | None = None):
        global _chdb_conn, _chdb_path
        import chdb

        want = path or ":memory:"
        with _chdb_lock:
            if _chdb_conn is None:
                _chdb_conn, _chdb_path = chdb.connect(want), want
            elif want != _chdb_path:
                raise ValueError(f"chDB already runs on {_chdb_path} in this process; "
                                 f"one process has one chDB data path (asked for {want})")
        self._conn = _chdb_conn

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with _chdb_lock:
            self._conn.query(sql, "CSV", params=params or None)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        with _chdb_lock:
            return _rows(self._conn.query(sql, "ArrowTable", params=params or None))

    def insert(self, table: str, data: pa.Table) -> None:
        cols = ", ".join(data.column_names)
        with _chdb_lock, self._conn.send_insert(f"INSERT INTO {table} ({cols})", "ArrowStream") as ins:
            ins.append(_ipc(data))
            ins.finish()

    def close(self) -> None:
        """The embedded server lives as long as the process (other stores may share it)."""


def connect(url: str) -> tuple[Connection, str | None]:
    """`clickhouse[s]://user:pass@host:port/db` -> a server; `chdb://` (memory) or
    `chdb:///abs/dir` -> chDB. Returns the connection and the database the URL names, if any."""
    u = urlparse(url)
    if u.scheme == "chdb":
        path = unquote(u.path) or None
        return ChdbConnection(path), None
    if u.scheme in ("clickhouse", "clickhouses", "http", "https"):
        conn = ServerConnection(url)
        return conn, conn.database
    raise ValueError(f"not a ClickHouse URL: {url!r} (clickhouse://host:8123/db or chdb://)")
