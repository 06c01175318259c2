"""SpanStore on DuckDB: in memory by default, or a file that survives restart.

One row per span in `span_rows`: ids as 64-bit keys (capture.store.columns: a trace id as two
UBIGINTs, a span id as one; text kept only for an id not in OTLP's hex form), attributes as JSON
text (filterable with DuckDB's JSON functions, and round-tripped with their types), the resource as
the key of its row in `resources` (JSON text, once per distinct resource): DuckDB's insert of a
span went 4.4 -> 3.1 µs of CPU and 80 -> 65 bytes of file (`python -m bench.store --bare`,
`--agent-path` for the agent's whole store path). The view `spans` gives
every reader the rows as they were (hex ids, resource JSON) beside the keys; a lookup by id
compares keys, never hex text. A store file of the previous layout (ids and resource as text in
table `spans`) is migrated in place when opened (`migrate`). Batches go in as columnar
INSERTs (Arrow tables DuckDB scans in place), never row by row, small ones held for one larger
insert that every read makes first. Retention: by age
(relative to the newest span, so recorded data is not evicted on import) and by count,
oldest first. One connection guarded by a lock: DuckDB connections are not thread-safe.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Literal

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from capture.span import Span
from capture.store.api import EdgeRow, RedRow, SpanFilter, SpanStore, TimeWindow
from capture.store.columns import encode_json, id_key, keyed_batch, span_of_row, with_attributes

log = logging.getLogger(__name__)

_TABLES = """
CREATE TABLE IF NOT EXISTS span_rows (
    trace_hi UBIGINT, trace_lo UBIGINT, span_key UBIGINT, parent_key UBIGINT,
    name VARCHAR, kind VARCHAR,
    start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT,
    status_code VARCHAR, status_message VARCHAR,
    service VARCHAR, peer VARCHAR,
    attributes VARCHAR,  -- JSON text: validating it at write would cost more than the rest of the row
    resource_key BIGINT,
    trace_text VARCHAR, span_text VARCHAR, parent_text VARCHAR  -- ids not in OTLP's hex form only
);
CREATE TABLE IF NOT EXISTS resources (key BIGINT, resource VARCHAR);
"""
# A span_rows row `s`'s ids as their text (the hex of their keys, or the text they kept)
_TRACE_ID = "coalesce(s.trace_text, format('{:016x}{:016x}', s.trace_hi, s.trace_lo))"
_SPAN_ID = "coalesce(s.span_text, format('{:016x}', s.span_key))"
_PARENT_ID = "CASE WHEN s.parent_key IS NOT NULL THEN coalesce(s.parent_text, format('{:016x}', s.parent_key)) END"
_VIEW = f"""
CREATE OR REPLACE VIEW spans AS SELECT
    {_TRACE_ID} AS trace_id, {_SPAN_ID} AS span_id, {_PARENT_ID} AS parent_span_id,
    s.name, s.kind, s.start_ns, s.end_ns, s.duration_ns, s.status_code, s.status_message, s.service, s.peer,
    s.attributes, r.resource,
    s.trace_hi, s.trace_lo, s.trace_text, s.span_key, s.span_text, s.parent_key, s.parent_text, s.resource_key
FROM span_rows s LEFT JOIN resources r ON r.key = s.resource_key
"""
# A file of the previous layout: one table `spans`, ids and resource as text.
_CANONICAL_SQL = {16: "'[0-9a-f]{16}'", 32: "'[0-9a-f]{32}'"}
_MIGRATE = f"""
INSERT INTO resources SELECT row_number() OVER (), resource FROM (SELECT DISTINCT resource FROM spans
                                                                  WHERE resource IS NOT NULL);
INSERT INTO span_rows SELECT
    CASE WHEN regexp_full_match(trace_id, {_CANONICAL_SQL[32]}) THEN ('0x' || substr(trace_id, 1, 16))::UBIGINT
         ELSE md5_number_upper(trace_id) END,
    CASE WHEN regexp_full_match(trace_id, {_CANONICAL_SQL[32]}) THEN ('0x' || substr(trace_id, 17, 16))::UBIGINT
         ELSE md5_number_lower(trace_id) END,
    CASE WHEN regexp_full_match(span_id, {_CANONICAL_SQL[16]}) THEN ('0x' || span_id)::UBIGINT
         ELSE md5_number_upper(span_id) END,
    CASE WHEN parent_span_id IS NULL OR parent_span_id = '' THEN NULL
         WHEN regexp_full_match(parent_span_id, {_CANONICAL_SQL[16]}) THEN ('0x' || parent_span_id)::UBIGINT
         ELSE md5_number_upper(parent_span_id) END,
    name, kind, start_ns, end_ns, duration_ns, status_code, status_message, service, peer, attributes,
    r.key,
    CASE WHEN NOT regexp_full_match(trace_id, {_CANONICAL_SQL[32]}) THEN trace_id END,
    CASE WHEN NOT regexp_full_match(span_id, {_CANONICAL_SQL[16]}) THEN span_id END,
    CASE WHEN parent_span_id <> '' AND NOT regexp_full_match(parent_span_id, {_CANONICAL_SQL[16]})
         THEN parent_span_id END
FROM spans LEFT JOIN resources r ON r.resource = spans.resource;
DROP TABLE spans;
"""


def _select(rows: str, order: str) -> str:
    """The columns span_of_row reads (the view's trace_id .. attributes, then the resource's key) of
    the span_rows `rows` picks (a query over span_rows): ids made hex only for those rows, after
    their filter and limit (the view would make them for every row the filter reads: a query of 100
    spans in 15 minutes went 14 -> 45 ms). The resource's text comes from the store's own table of
    keys (DuckDBStore._resource_texts), not a join: a read of 1-250 spans kept 2.4 kB of glibc heap
    until the next drain with the join, 0.4-0.6 kB without (DRAIN_AFTER_QUERIES)."""
    return (f"SELECT {_TRACE_ID}, {_SPAN_ID}, {_PARENT_ID},"
            " s.name, s.kind, s.start_ns, s.end_ns, s.status_code, s.status_message, s.attributes, s.resource_key"
            f" FROM ({rows}) s ORDER BY {order}")


_BY_TRACE = "trace_hi = ? AND trace_lo = ? AND trace_text IS NOT DISTINCT FROM ?"
# distinct resources past which those no span refers to any more are deleted (at an insert)
RESOURCES_PRUNE_AT = 4096
_QUANTILES = "quantile_cont(duration_ns, [0.5, 0.95, 0.99])"
_AGE_CHECK_EVERY_S = 1.0
# A file-backed store's buffer pool keeps every block it read or wrote cached up to memory_limit
# (DuckDB evicts only when it needs room): at a shop's rate that is a rise of the agent's resident
# set over its first half hour. Every RELEASE_EVERY_S the store checkpoints and evicts what is
# not pinned down to RELEASE_TO_MB, so it holds about what was appended since (`python -m
# bench.soak_live` samples duckdb_memory() beside the resident set, `python -m bench.store
# --path FILE --memory-limit-mb 64` the ingest rate).
RELEASE_EVERY_S = 30.0
RELEASE_TO_MB = 4
# An in-memory store's pool is its data, but rows appended since the last checkpoint are held
# uncompressed and pinned, and rows deleted by retention stay until one: without it the pool rose
# to its limit (200k spans: 61 MB in the pool and 13 MB spilled; 9 MB once checkpointed). `hold`
# checkpoints it every RELEASE_EVERY_S or once its pool passes HOLD_AT of the limit (what a
# checkpoint compressed can be spilled to the temp directory: the pool stays near HOLD_AT); a
# store file's pool is released at HOLD_AT too, before its RELEASE_EVERY_S at a high rate.
HOLD_AT = 0.5
HOLD_CHECK_EVERY_S = 1.0
ROW_GROUP_ROWS = 16_384
# Appended batches are held (as their Arrow tables) until INSERT_ROWS rows or INSERT_EVERY_S have
# gathered, then go in as one INSERT on one thread: an INSERT of at least a row group's rows is
# written to the file as compressed row groups (the WAL keeps only where they are), a smaller one
# goes through the WAL and is read back and compressed at the next checkpoint; and DuckDB's fixed
# cost per statement (~1.5 ms) is paid once per insert. Every read inserts what is held first, so
# a query sees every appended span (`python -m bench.events agent FILE`: the store's µs per span).
# Two row groups per INSERT rather than one: DuckDB's CPU per row 1.6-1.8 -> 1.4-1.5 µs and the
# file 65 -> 57 bytes per span (hey's spans; four: 1.5 µs, 53 bytes, but twice the Arrow tables
# held); at hey's 20k spans/s that is an insert every 1.6 s, hence INSERT_EVERY_S 2 s (a read
# still sees every span at once: it inserts what is held first).
INSERT_ROWS = 2 * ROW_GROUP_ROWS
INSERT_EVERY_S = 2.0
# Every block a query or an insert unpins leaves an entry in DuckDB's eviction queues, and an entry
# whose block is gone keeps ~200 B of glibc heap (outside duckdb_memory()) until the queue is purged,
# which DuckDB does only past 32k entries a queue: a scheduled report every 30 s (~20 reads, ~40 kB)
# grew an agent's heap by ~5 MB an hour. A store file's queues are emptied (`drain`, ~15 ms) after
# DRAIN_AFTER_QUERIES reads and at least DRAIN_MIN_S since the last time, between two queries
# (`python -m bench.report_heap`: the heap over scheduled reports with and without).
DRAIN_AFTER_QUERIES = 200
DRAIN_MIN_S = 10.0
_PRIVATE = 0o600
_UMASK_LOCK = threading.Lock()  # the umask is per process: stores must not interleave their changes


@contextmanager
def _private_files(path: str | None):
    """Files DuckDB creates meanwhile (the store, its WAL, which it deletes at each checkpoint
    and re-creates at the next write) come out 0600: DuckDB has no mode option, so the
    process umask is narrowed for the call. Nothing to do for an in-memory store."""
    if not path or path == ":memory:":
        yield
        return
    with _UMASK_LOCK:
        old = os.umask(0o077)
        try:
            yield
        finally:
            os.umask(old)


def _allocator_settings(memory_limit_mb: int) -> dict[str, Any]:
    """The memory limit bounds what DuckDB's buffer manager holds, not what its allocator keeps
    resident after a query freed it: by default it is returned only past 128 MB (allocator_flush_threshold),
    so the agent's resident set swings by that much above the limit. Freed memory goes back past a
    quarter of the limit and a background thread returns what idle threads cached
    (`python -m bench.soak_rate` samples RSS and duckdb_memory())."""
    return {"allocator_flush_threshold": f"{max(4, memory_limit_mb // 4)}MB",
            "allocator_background_threads": True}


def _attach(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """The store file as the connection's default database, in row groups of ROW_GROUP_ROWS: a
    checkpoint compresses a row group at a time outside the buffer manager's limit, and with
    DuckDB's default (122,880 rows of span text) each one was a spike of the agent's resident set
    (`python -m bench.soak_rate --rate 15000 --sample-s 0.5`, `python -m bench.capture --only agent`).
    A file whose format predates the option opens with the default."""
    quoted = path.replace("'", "''")
    try:
        con.execute(f"ATTACH '{quoted}' AS guardian_store (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
    except duckdb.Error:
        con.execute(f"ATTACH '{quoted}' AS guardian_store")
    con.execute("USE guardian_store")


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """A store of the previous layout (table `spans`: ids and resource as text) moved to this one
    in one transaction, the spans' values unchanged; how many spans it held (0: nothing to do).
    Idempotent: a store already in this layout (or new) is left as it is."""
    kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'spans'"
                       " AND table_catalog = current_database() AND table_schema = current_schema()").fetchall()
    if not kind or kind[0][0] != "BASE TABLE":
        return 0
    n = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(_TABLES)
        con.execute(_MIGRATE)
        con.execute(_VIEW)
        con.execute("COMMIT")
    except duckdb.Error:
        con.execute("ROLLBACK")
        raise
    return n


def _json_path(key: str) -> str:
    return '$."' + key.replace('"', '\\"') + '"'


class DuckDBStore(SpanStore):
    def __init__(self, path: str | None = None, max_age_s: float | None = None,
                 max_spans: int | None = None, memory_limit_mb: int | None = None,
                 threads: int | None = None, drain_after_queries: int | None = DRAIN_AFTER_QUERIES):
        self.path = path
        self.max_age_s = max_age_s
        self.max_spans = max_spans
        self._lock = threading.RLock()
        if path and path != ":memory:":  # an existing store (and WAL) made by an older version, or by hand
            for p in (path, f"{path}.wal"):
                if os.path.exists(p):
                    os.chmod(p, _PRIVATE)
        config: dict[str, Any] = {}
        self._memory_limit_mb = memory_limit_mb
        if memory_limit_mb is not None:
            config["memory_limit"] = f"{int(memory_limit_mb)}MB"
            config.update(_allocator_settings(int(memory_limit_mb)))
        if threads is not None:
            config["threads"] = int(threads)
        self._spill: str | None = None
        if config and not (path and path != ":memory:"):
            # past its limit an in-memory store spills to temp_directory: DuckDB's default is ".tmp"
            # in the current directory, so the agent gets a private one of its own
            self._spill = config["temp_directory"] = tempfile.mkdtemp(prefix="guardian-store-")
        on_file = bool(path and path != ":memory:")
        if on_file:
            config.setdefault("temp_directory", f"{path}.tmp")  # what DuckDB uses for a store it opens itself
        self._config = config
        self._on_file = on_file
        with _private_files(path):
            self._con = self._connect()
            self.migrated = migrate(self._con)
            if self.migrated:
                log.info("store %s: %d spans moved to the keyed layout (ids as integers)", path, self.migrated)
                if on_file:
                    self._con.execute("CHECKPOINT")
            self._con.execute(_TABLES)
            self._con.execute(_VIEW)
        self._count, self._newest_end = self._con.execute("SELECT count(*), max(end_ns) FROM span_rows").fetchall()[0]
        # resource JSON text <-> key: what is in `resources`, and those appended since the last insert
        self._load_resources()
        self._next_resource_key = max(self._resource_keys.values(), default=0) + 1
        self._new_resources: list[tuple[int, str]] = []
        self._last_age_check = 0.0
        self.evicted = 0
        self._threads = threads
        self._held: list = []  # Arrow tables appended, not yet inserted
        self._held_rows = 0
        self._held_since = 0.0
        self._next_release = time.monotonic() + RELEASE_EVERY_S
        self.releases = self.release_failures = 0
        self._next_hold_check = 0.0
        self.holds = 0
        self.drain_after_queries = drain_after_queries if on_file else None
        self.drain_min_s = DRAIN_MIN_S
        self.queries = 0  # reads since the last drain
        self._drained = time.monotonic()
        self.drains = 0

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:", config=self._config)
        if self._on_file:
            _attach(con, self.path)
        return con

    def drain(self) -> None:
        """DuckDB's eviction queues emptied: the buffer pool queues an entry for every block a query
        or an insert unpins (a hash table's, a sort's, a column's), and an entry whose block is gone
        keeps the block's handle (~200 B of glibc heap, outside duckdb_memory()) until the queue is
        purged, which DuckDB does only past 32k entries a queue (heaptrack on repeated joins:
        StandardBufferManager::RegisterMemory). An eviction to a limit of 0 pops every entry: it
        fails once what is pinned is all that is left, and the limit is set back (a checkpoint first,
        as in `release`). Counted in `drains`. A store file's only: an in-memory store's blocks would
        be spilled to disk."""
        if not self._on_file:
            return
        with self._lock:
            if self._con is None:
                return
            self._insert_held()
            with _private_files(self.path):  # what was appended since goes to the file, not to spill
                self._con.execute("CHECKPOINT")
            try:
                self._con.execute("SET memory_limit = '0MB'")
            except duckdb.Error:  # what is pinned stays (expected): the queues are empty all the same
                pass
            finally:
                back = "RESET memory_limit" if self._memory_limit_mb is None else \
                    f"SET memory_limit = '{int(self._memory_limit_mb)}MB'"
                self._con.execute(back)
            self.queries = 0
            self._drained = time.monotonic()
            self.drains += 1

    # -- writing ---------------------------------------------------------------------------
    def append(self, spans: Iterable[Span]) -> int:
        batch = spans if isinstance(spans, list) else list(spans)
        n = len(batch)
        if not n:
            self.settle()
            return 0
        with self._lock:
            table = keyed_batch(batch, self._resource_key)
            newest = pc.max(table.column("end_ns")).as_py()
            if not self._held:
                self._held_since = time.monotonic()
            self._held.append(table)
            self._held_rows += n
            self._count += n
            if newest is not None and (self._newest_end is None or newest > self._newest_end):
                self._newest_end = newest
            if self._held_rows >= INSERT_ROWS or time.monotonic() - self._held_since >= INSERT_EVERY_S:
                self._insert_held()
        if self._on_file and self._memory_limit_mb is not None and time.monotonic() >= self._next_release:
            self.release()
        return n

    def _resource_key(self, resource: dict[str, Any]) -> int:
        """The key of a resource (by its JSON text), new ones inserted with the next insert."""
        text = encode_json(resource).decode()
        with self._lock:
            key = self._resource_keys.get(text)
            if key is None:
                key = self._resource_keys[text] = self._next_resource_key
                self._resource_texts[key] = text
                self._next_resource_key += 1
                self._new_resources.append((key, text))
            return key

    def _insert_resources(self) -> None:
        """Resources keyed since the last insert go in, before the spans that refer to them. Under the lock."""
        if self._new_resources:
            new, self._new_resources = self._new_resources, []
            # as parameters: an Arrow array made from a Python list (pa.array) imports pandas, 20-35 MB
            # of the agent's resident set, to ask whether the list holds pandas objects
            self._con.executemany("INSERT INTO resources VALUES (?, ?)", new)

    def _prune_resources(self) -> None:
        """Past RESOURCES_PRUNE_AT distinct resources, those no span refers to any more (their
        processes gone, their spans retired) are deleted. Under the lock, nothing held: a batch is
        keyed under the lock too, so no key handed out is dropped before its spans are in."""
        if len(self._resource_keys) <= RESOURCES_PRUNE_AT or self._held or self._new_resources:
            return
        self._con.execute("DELETE FROM resources WHERE key NOT IN (SELECT DISTINCT resource_key FROM span_rows"
                          " WHERE resource_key IS NOT NULL)")
        self._load_resources()

    def _load_resources(self) -> None:
        """The store's resources both ways (JSON text -> key for appends, key -> text for reads)."""
        rows = self._con.execute("SELECT resource, key FROM resources").fetchall()
        self._resource_keys: dict[str, int] = dict(rows)
        self._resource_texts: dict[int, str] = {key: text for text, key in rows}

    def settle(self) -> None:
        """Insert what is held once it has waited INSERT_EVERY_S (the agent's worker calls it
        at every turn, so that spans are written while none come)."""
        if self._held and time.monotonic() - self._held_since >= INSERT_EVERY_S:
            with self._lock:
                self._insert_held()

    def _insert_held(self) -> None:
        """The held batches as one INSERT, on one thread (two cost a third more CPU per row and
        leave row groups half full for the checkpoint to merge), then retention. Under the lock."""
        if not self._held:
            return
        table = pa.concat_tables(self._held) if len(self._held) > 1 else self._held[0]
        self._held, self._held_rows = [], 0
        with _private_files(self.path):
            parallel = self._threads is None or self._threads > 1
            if parallel:
                self._con.execute("SET threads = 1")
            self._insert_resources()
            self._con.register("_batch", table)
            try:
                self._con.execute("INSERT INTO span_rows SELECT * FROM _batch")
            except duckdb.Error:
                self._count -= table.num_rows  # counted when appended; lost like a failed append
                raise
            finally:
                self._con.unregister("_batch")
                if parallel:
                    back = "RESET threads" if self._threads is None else f"SET threads = {int(self._threads)}"
                    self._con.execute(back)
            self._enforce_retention()
            self._prune_resources()

    def relink(self, parents: list[tuple[str, str, dict[str, Any]]], traces: dict[str, str]) -> int:
        set_ = 0
        with self._lock:
            self._insert_held()
            if parents:
                want = {id_key(sid, 16)[::2]: (id_key(parent, 16)[::2], extra) for sid, parent, extra in parents}
                self._con.register("_want", pa.Table.from_pydict({"key": pa.array([k for k, _ in want], pa.uint64()),
                                                      "text": pa.array([t for _, t in want], pa.string())}))
                try:
                    rows = self._con.execute(
                        "SELECT s.span_key, s.span_text, s.attributes FROM span_rows s JOIN _want w"
                        " ON s.span_key = w.key AND s.span_text IS NOT DISTINCT FROM w.text").fetchall()
                finally:
                    self._con.unregister("_want")
                upd = pa.Table.from_pydict({"key": pa.array([r[0] for r in rows], pa.uint64()),
                                "text": pa.array([r[1] for r in rows], pa.string()),
                                "parent": pa.array([want[r[:2]][0][0] for r in rows], pa.uint64()),
                                "parent_text": pa.array([want[r[:2]][0][1] for r in rows], pa.string()),
                                "attributes": [with_attributes(r[2], want[r[:2]][1]) for r in rows]})
                self._con.register("_relink", upd)
                try:
                    self._con.execute("UPDATE span_rows SET parent_key = u.parent, parent_text = u.parent_text,"
                                      " attributes = u.attributes FROM _relink u WHERE span_rows.span_key = u.key"
                                      " AND span_rows.span_text IS NOT DISTINCT FROM u.text")
                finally:
                    self._con.unregister("_relink")
                set_ = len(rows)
            if traces:
                old = [id_key(t, 32) for t in traces]
                new = [id_key(t, 32) for t in traces.values()]
                self._con.register("_retrace", pa.Table.from_pydict({
                    "hi": pa.array([k[0] for k in old], pa.uint64()), "lo": pa.array([k[1] for k in old], pa.uint64()),
                    "text": pa.array([k[2] for k in old], pa.string()),
                    "new_hi": pa.array([k[0] for k in new], pa.uint64()),
                    "new_lo": pa.array([k[1] for k in new], pa.uint64()),
                    "new_text": pa.array([k[2] for k in new], pa.string())}))
                try:
                    self._con.execute("UPDATE span_rows SET trace_hi = u.new_hi, trace_lo = u.new_lo,"
                                      " trace_text = u.new_text FROM _retrace u WHERE span_rows.trace_hi = u.hi"
                                      " AND span_rows.trace_lo = u.lo"
                                      " AND span_rows.trace_text IS NOT DISTINCT FROM u.text")
                finally:
                    self._con.unregister("_retrace")
        return set_

    def _enforce_retention(self) -> None:
        if self.max_spans is not None and self._count > self.max_spans:
            excess = self._count - self.max_spans
            self._con.execute(
                "DELETE FROM span_rows WHERE rowid IN "
                "(SELECT rowid FROM span_rows ORDER BY start_ns LIMIT ?)", [excess])
            self._count -= excess
            self.evicted += excess
        now = time.monotonic()
        if self.max_age_s is not None and now - self._last_age_check >= _AGE_CHECK_EVERY_S:
            self._last_age_check = now
            if self._newest_end is None:
                return
            # the newest end is known from the appends: a scan of the whole table for it every
            # second would page all of end_ns through the buffer manager; with a constant the
            # row groups' min/max skip everything newer than the cutoff
            cutoff = self._newest_end - int(self.max_age_s * 1e9)
            gone = self._con.execute("DELETE FROM span_rows WHERE end_ns < ?", [cutoff]).fetchall()[0][0]
            self._count -= gone
            self.evicted += gone

    def release(self) -> None:
        """Checkpoint, then evict the buffer pool's unpinned blocks (the file holds them): the
        limit is lowered to RELEASE_TO_MB for a moment and set back. A file-backed store with a
        memory limit only; an in-memory store's pool is its data."""
        if not self._on_file or self._memory_limit_mb is None:
            return
        with self._lock:
            self._insert_held()
        with self._lock, _private_files(self.path):
            self._next_release = time.monotonic() + RELEASE_EVERY_S
            self._con.execute("CHECKPOINT")
            try:
                self._con.execute(f"SET memory_limit = '{RELEASE_TO_MB}MB'")
                self.releases += 1
            except duckdb.Error:  # more than that pinned (a query's buffers): the next time
                self.release_failures += 1
            finally:
                self._con.execute(f"SET memory_limit = '{int(self._memory_limit_mb)}MB'")

    def hold(self) -> None:
        """A store with a memory limit held near HOLD_AT of it: once its pool passes that, a file's
        is released (`release`), an in-memory one is checkpointed (and every RELEASE_EVERY_S too),
        counted in `holds`. At most one duckdb_memory() look every HOLD_CHECK_EVERY_S: the caller
        (the agent's worker) may call it after every batch."""
        if self._memory_limit_mb is None or self._con is None:
            return
        now = time.monotonic()
        if now < self._next_hold_check:
            return
        self._next_hold_check = now + HOLD_CHECK_EVERY_S
        past = self.memory().get("pool", 0) >= HOLD_AT * self._memory_limit_mb * 2**20
        if self._on_file:
            if past:
                self.holds += 1
                self.release()
            return
        if past or now >= self._next_release:
            with self._lock:
                self._next_release = now + RELEASE_EVERY_S
                self._con.execute("CHECKPOINT")
                self.holds += 1

    def memory(self) -> dict[str, int]:
        """What DuckDB's buffer manager holds now (duckdb_memory()), in bytes: in memory (`pool`)
        and spilled to its temp directory (`spilled`)."""
        with self._lock:
            if self._con is None:
                return {}
            pool, spilled = self._con.execute("SELECT sum(memory_usage_bytes), sum(temporary_storage_bytes)"
                                              " FROM duckdb_memory()").fetchall()[0]
        return {"pool": int(pool or 0), "spilled": int(spilled or 0)}

    def flush(self) -> None:
        with self._lock:
            self._insert_held()  # (under the lock: _private_files' umask lock is not re-entrant)
        with self._lock, _private_files(self.path):
            if self.path:
                self._con.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self.flush()
                self._con.close()
                self._con = None
            if self._spill:
                shutil.rmtree(self._spill, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------
    def _rows(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self._lock:
            self._insert_held()
            rows = self._con.execute(sql, params or []).fetchall()
            self.queries += 1
            if (self.drain_after_queries is not None and self.queries >= self.drain_after_queries
                    and time.monotonic() - self._drained >= self.drain_min_s):
                self.drain()  # (DRAIN_AFTER_QUERIES: DuckDB's heap outside its pool)
            return rows

    def _spans(self, sql: str, params: list[Any]) -> list[Span]:
        """The spans of a _select query, each with its resource's text by key (under the lock: a
        prune of the resources never comes between the read and the look-up)."""
        with self._lock:
            texts = self._resource_texts
            return [span_of_row(r[:10] + (texts.get(r[10]),)) for r in self._rows(sql, params)]

    @staticmethod
    def _where(flt: SpanFilter) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if flt.window:
            where.append("start_ns >= ? AND start_ns < ?")
            params += [flt.window.start_ns, flt.window.end_ns]
        if flt.trace_id is not None:
            where.append(_BY_TRACE)
            params += id_key(flt.trace_id, 32)
        for col, val in (("service", flt.service), ("name", flt.name), ("kind", flt.kind),
                         ("status_code", flt.status_code), ("peer", flt.peer)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if flt.min_duration_ns is not None:
            where.append("duration_ns >= ?")
            params.append(flt.min_duration_ns)
        for key, val in flt.attributes.items():
            # Resource keys (k8s.*, process.*) filter too: callers need not know which holds it.
            where.append("coalesce(json_extract_string(attributes, ?), json_extract_string("
                         "(SELECT resource FROM resources WHERE key = span_rows.resource_key), ?)) = ?")
            params += [_json_path(key), _json_path(key), str(val)]
        return (" WHERE " + " AND ".join(where) if where else ""), params

    def spans(self, flt: SpanFilter) -> list[Span]:
        where, params = self._where(flt)
        order = {"duration_desc": "duration_ns DESC", "start_desc": "start_ns DESC"}.get(flt.order, "start_ns")
        params.append(max(int(flt.limit), 0))
        return self._spans(_select(f"SELECT * FROM span_rows{where} ORDER BY {order} LIMIT ?", order), params)

    def traces(self, flt: SpanFilter, limit: int = 20) -> list[list[Span]]:
        where, params = self._where(flt)
        spans = self._spans(
            f"WITH ids AS (SELECT trace_hi, trace_lo, trace_text, max(start_ns) AS last FROM span_rows{where}"
            " GROUP BY ALL ORDER BY last DESC LIMIT ?) "
            + _select("SELECT t.*, ids.last FROM span_rows t JOIN ids ON t.trace_hi = ids.trace_hi"
                      " AND t.trace_lo = ids.trace_lo AND t.trace_text IS NOT DISTINCT FROM ids.trace_text",
                      "s.last DESC, s.trace_hi, s.trace_lo, s.trace_text, s.start_ns"), params + [limit])
        by_trace: dict[str, list[Span]] = {}
        for s in spans:
            by_trace.setdefault(s.trace_id, []).append(s)
        return list(by_trace.values())

    def trace(self, trace_id: str) -> list[Span]:
        return self._spans(_select(f"SELECT * FROM span_rows WHERE {_BY_TRACE}", "s.start_ns"),
                           list(id_key(trace_id, 32)))

    def red(self, window: TimeWindow, by: Literal["service", "operation"] = "service",
            interval_s: int | None = None, service: str | None = None) -> list[RedRow]:
        op = "name" if by == "operation" else "NULL"
        params: list[Any] = []
        if interval_s:
            step = int(interval_s * 1e9)
            bucket = f"({window.start_ns} + ((start_ns - {window.start_ns}) // {step}) * {step})"
            seconds = float(interval_s)
        else:
            bucket, seconds = "NULL", window.seconds
        sql = (f"SELECT service, {op} AS op, {bucket} AS b, count(*),"
               f" count(*) FILTER (WHERE status_code = 'ERROR'), {_QUANTILES}"
               " FROM span_rows WHERE kind IN ('SERVER', 'CONSUMER') AND start_ns >= ? AND start_ns < ?")
        params += [window.start_ns, window.end_ns]
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        sql += " GROUP BY ALL ORDER BY service, op, b"
        return [RedRow(service=svc, operation=o, interval_start_ns=b, count=n, errors=e,
                       rate_per_s=n / seconds, error_rate=e / n if n else 0.0,
                       p50_ms=q[0] / 1e6, p95_ms=q[1] / 1e6, p99_ms=q[2] / 1e6)
                for svc, o, b, n, e, q in self._rows(sql, params)]

    def service_map(self, window: TimeWindow) -> list[EdgeRow]:
        # Linked calls: a SERVER/CONSUMER span whose parent is a CLIENT/PRODUCER (stats from
        # the caller's side) or a span of another service (imported data without client spans).
        # Unlinked CLIENT/PRODUCER spans become edges to their peer (db, broker, host:port).
        sql = f"""
        WITH w AS (SELECT trace_hi, trace_lo, trace_text, span_key, span_text, parent_key, parent_text, kind,
                          service, peer, duration_ns, status_code
                   FROM span_rows WHERE start_ns >= ? AND start_ns < ?),
        c AS (SELECT * FROM w WHERE kind IN ('SERVER','CONSUMER') AND parent_key IS NOT NULL),
        linked AS (
            SELECT p.service AS client, c.service AS server, p.span_key AS caller, p.span_text AS caller_text,
                   CASE WHEN p.kind IN ('CLIENT','PRODUCER') THEN p.duration_ns ELSE c.duration_ns END AS duration_ns,
                   CASE WHEN p.kind IN ('CLIENT','PRODUCER') THEN p.status_code ELSE c.status_code END AS status_code
            FROM c JOIN w p ON c.parent_key = p.span_key AND c.parent_text IS NOT DISTINCT FROM p.span_text
            WHERE c.trace_hi = p.trace_hi AND c.trace_lo = p.trace_lo
              AND c.trace_text IS NOT DISTINCT FROM p.trace_text
              AND (p.kind IN ('CLIENT','PRODUCER') OR p.service <> c.service)),
        calls AS (
            SELECT client, server, duration_ns, status_code FROM linked
            UNION ALL
            SELECT service, peer, duration_ns, status_code FROM w
            WHERE kind IN ('CLIENT','PRODUCER') AND peer IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM linked l WHERE l.caller = w.span_key
                              AND l.caller_text IS NOT DISTINCT FROM w.span_text))
        SELECT client, server, count(*), count(*) FILTER (WHERE status_code = 'ERROR'), {_QUANTILES}
        FROM calls GROUP BY ALL ORDER BY count(*) DESC, client, server"""
        seconds = window.seconds
        return [EdgeRow(client=c, server=s, count=n, errors=e, rate_per_s=n / seconds,
                        error_rate=e / n if n else 0.0,
                        p50_ms=q[0] / 1e6, p95_ms=q[1] / 1e6, p99_ms=q[2] / 1e6)
                for c, s, n, e, q in self._rows(sql, [window.start_ns, window.end_ns])]

    def services(self, window: TimeWindow | None = None) -> list[str]:
        if window is None:
            rows = self._rows("SELECT DISTINCT service FROM span_rows ORDER BY 1")
        else:
            rows = self._rows("SELECT DISTINCT service FROM span_rows WHERE start_ns >= ? AND"
                              " start_ns < ? ORDER BY 1", [window.start_ns, window.end_ns])
        return [r[0] for r in rows]

    def time_range(self) -> TimeWindow | None:
        lo, hi = self._rows("SELECT min(start_ns), max(end_ns) FROM span_rows")[0]
        return None if lo is None else TimeWindow(lo, hi)

    def count(self) -> int:
        with self._lock:
            self._insert_held()  # retention applies to what is held too
            return self._count
