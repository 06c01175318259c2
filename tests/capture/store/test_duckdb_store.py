"""DuckDBStore on a seeded store: filters, traces, RED, service map, retention, persistence."""
from __future__ import annotations

import random
import threading

import pytest

from capture.span import Span
from capture.store.api import SpanFilter, TimeWindow
from capture.store.factory import open_store

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S


def call(i: int, fail: bool = False) -> list[Span]:
    """frontend SERVER -> CLIENT -> backend SERVER -> CLIENT postgres (unlinked), one trace."""
    start = T0 + i * 100 * MS
    dur = (10 + i % 7) * MS
    fe = Span(name="GET /checkout", kind="SERVER", start_time_unix_nano=start,
              end_time_unix_nano=start + dur + 4 * MS, status_code="ERROR" if fail else "OK",
              attributes={"http.request.method": "GET", "http.response.status_code": 500 if fail else 200},
              resource={"service.name": "frontend", "k8s.namespace.name": "shop"})
    cl = Span(name="POST /pay", kind="CLIENT", start_time_unix_nano=start + MS,
              end_time_unix_nano=start + dur + 2 * MS, status_code="ERROR" if fail else "OK",
              trace_id=fe.trace_id, parent_span_id=fe.span_id,
              attributes={"server.address": "10.0.0.2", "server.port": 8080},
              resource={"service.name": "frontend"})
    be = Span(name="POST /pay", kind="SERVER", start_time_unix_nano=start + 2 * MS,
              end_time_unix_nano=start + dur + MS, status_code="ERROR" if fail else "OK",
              trace_id=fe.trace_id, parent_span_id=cl.span_id, resource={"service.name": "payments"})
    db = Span(name="SELECT", kind="CLIENT", start_time_unix_nano=start + 3 * MS,
              end_time_unix_nano=start + 3 * MS + (i % 5 + 1) * MS, trace_id=fe.trace_id,
              parent_span_id=be.span_id, attributes={"db.system": "postgresql", "db.query.text": "SELECT 1"},
              resource={"service.name": "payments"})
    return [fe, cl, be, db]


def seeded(n: int = 100, path: str | None = None, **kw):
    store = open_store(path, **kw)
    spans = [s for i in range(n) for s in call(i, fail=i % 10 == 0)]
    assert store.append(spans) == 4 * n
    return store, spans


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, like DuckDB's quantile_cont."""
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def test_round_trip_and_trace():
    store, spans = seeded(10)
    assert store.count() == 40
    trace = store.trace(spans[0].trace_id)
    assert [s.to_dict() for s in trace] == [s.to_dict() for s in spans[:4]]
    assert isinstance(trace[0].attributes["http.response.status_code"], int)
    assert store.trace("00" * 16) == []


def test_filters():
    store, spans = seeded(50)
    assert {s.resource["service.name"] for s in store.spans(SpanFilter(service="payments"))} == {"payments"}
    errs = store.spans(SpanFilter(status_code="ERROR", kind="SERVER", service="frontend"))
    assert len(errs) == 5 and all(s.status_code == "ERROR" for s in errs)
    by_attr = store.spans(SpanFilter(attributes={"http.response.status_code": "500"}))
    assert {s.span_id for s in by_attr} == {s.span_id for s in errs}
    assert len(store.spans(SpanFilter(attributes={"k8s.namespace.name": "shop"}))) == 50
    assert len(store.spans(SpanFilter(attributes={"db.system": "mysql"}))) == 0
    db_calls = store.spans(SpanFilter(peer="postgresql", limit=1000))
    assert len(db_calls) == 50 and all(s.attributes["db.system"] == "postgresql" for s in db_calls)
    assert len(store.spans(SpanFilter(peer="10.0.0.2:8080", service="frontend"))) == 50
    slow = store.spans(SpanFilter(kind="SERVER", min_duration_ns=20 * MS))
    assert slow and all(s.duration_ns >= 20 * MS for s in slow)
    assert len(slow) == sum(1 for s in spans if s.kind == "SERVER" and s.duration_ns >= 20 * MS)
    newest = store.spans(SpanFilter(order="start_desc", limit=2))
    assert [s.start_time_unix_nano for s in newest] == sorted((s.start_time_unix_nano for s in spans), reverse=True)[:2]
    top = store.spans(SpanFilter(order="duration_desc", limit=3))
    assert [s.duration_ns for s in top] == sorted((s.duration_ns for s in spans), reverse=True)[:3]
    win = TimeWindow(T0 + 1000 * MS, T0 + 2000 * MS)  # calls 10..19
    assert len(store.spans(SpanFilter(window=win, name="GET /checkout"))) == 10
    assert len(store.spans(SpanFilter(trace_id=spans[8].trace_id))) == 4
    assert len(store.spans(SpanFilter(limit=7))) == 7
    assert store.spans(SpanFilter(name="it's; DROP TABLE spans")) == [] and store.count() == 200


def test_traces_newest_first():
    store, spans = seeded(30)
    got = store.traces(SpanFilter(service="payments", status_code="ERROR"), limit=2)
    assert [t[0].trace_id for t in got] == [spans[4 * 20].trace_id, spans[4 * 10].trace_id]
    assert all(len(t) == 4 for t in got)


def test_red_per_service_and_operation():
    store, spans = seeded(100)
    win = TimeWindow(T0, T0 + 10 * S)
    rows = {r.service: r for r in store.red(win)}
    assert set(rows) == {"frontend", "payments"}  # SERVER spans only
    fe = rows["frontend"]
    durs = [s.duration_ns / MS for s in spans if s.kind == "SERVER" and s.service == "frontend"]
    assert fe.count == 100 and fe.errors == 10 and fe.error_rate == pytest.approx(0.1)
    assert fe.rate_per_s == pytest.approx(10.0)
    assert fe.p50_ms == pytest.approx(quantile(durs, 0.5))
    assert fe.p95_ms == pytest.approx(quantile(durs, 0.95))
    assert fe.p99_ms == pytest.approx(quantile(durs, 0.99))
    ops = store.red(win, by="operation", service="payments")
    assert [(r.service, r.operation, r.count) for r in ops] == [("payments", "POST /pay", 100)]


def test_red_bucketed():
    store, _ = seeded(100)  # one call per 100 ms over 10 s
    rows = store.red(TimeWindow(T0, T0 + 10 * S), interval_s=2, service="frontend")
    assert [r.interval_start_ns for r in rows] == [T0 + k * 2 * S for k in range(5)]
    assert all(r.count == 20 and r.rate_per_s == pytest.approx(10.0) for r in rows)
    assert sum(r.errors for r in rows) == 10


def test_service_map_edges():
    store, spans = seeded(100)
    edges = {(e.client, e.server): e for e in store.service_map(TimeWindow(T0, T0 + 10 * S))}
    assert set(edges) == {("frontend", "payments"), ("payments", "postgresql")}
    fp = edges[("frontend", "payments")]
    client_durs = [s.duration_ns / MS for s in spans if s.kind == "CLIENT" and s.service == "frontend"]
    assert fp.count == 100 and fp.errors == 10
    assert fp.p95_ms == pytest.approx(quantile(client_durs, 0.95))  # measured on the caller side
    assert edges[("payments", "postgresql")].count == 100


def test_service_map_unlinked_client_uses_peer_address():
    store = open_store()
    store.append([Span(name="GET", kind="CLIENT", start_time_unix_nano=T0, end_time_unix_nano=T0 + MS,
                       attributes={"server.address": "api.example", "server.port": 443},
                       resource={"service.name": "cron"})])
    [edge] = store.service_map(TimeWindow(T0, T0 + S))
    assert (edge.client, edge.server, edge.count) == ("cron", "api.example:443", 1)


def test_services_and_time_range():
    store, spans = seeded(10)
    assert store.services() == ["frontend", "payments"]
    assert store.services(TimeWindow(T0 + 50 * S, T0 + 60 * S)) == []
    tr = store.time_range()
    assert tr.start_ns == T0 and tr.end_ns == max(s.end_time_unix_nano for s in spans)
    assert open_store().time_range() is None


def test_retention_by_count_evicts_oldest():
    store = open_store(max_spans=100)
    for i in range(0, 60, 10):
        store.append([s for k in range(i, i + 10) for s in call(k)])
    assert store.count() == 100
    kept = store.spans(SpanFilter(limit=1000))
    assert len(kept) == 100
    assert min(s.start_time_unix_nano for s in kept) >= T0 + 35 * 100 * MS  # the newest 25 calls


def test_retention_by_age_relative_to_newest():
    store = open_store(max_age_s=2.0)
    store.append([s for k in range(50) for s in call(k)])  # 0 .. 5 s
    kept = store.spans(SpanFilter(limit=1000))
    newest = max(s.end_time_unix_nano for s in kept)
    assert kept and all(s.end_time_unix_nano >= newest - 2 * S for s in kept)
    assert store.count() == len(kept) < 200


def test_file_survives_reopen(tmp_path):
    path = str(tmp_path / "spans.duckdb")
    store, spans = seeded(20, path=path)
    store.close()
    again = open_store(path)
    assert again.count() == 80
    assert [s.to_dict() for s in again.trace(spans[4].trace_id)] == [s.to_dict() for s in spans[4:8]]
    again.append(call(99))
    again.close()
    assert open_store(path).count() == 84


def test_concurrent_append_and_read():
    store = open_store()
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(50):
                store.append(call(i))
        except BaseException as e:  # noqa: BLE001 - surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        store.red(TimeWindow(T0, T0 + 10 * S))
        store.spans(SpanFilter(limit=10))
    for t in threads:
        t.join()
    assert not errors and store.count() == 600
    assert {r.service: r.count for r in store.red(TimeWindow(T0, T0 + 10 * S))} == {
        "frontend": 150, "payments": 150}


def _mode(path) -> int:
    import os

    return os.stat(path).st_mode & 0o777


def test_store_file_and_wal_are_private_from_the_start(tmp_path):
    """The store and its WAL are created 0600 under a permissive umask, also the WAL DuckDB
    re-creates after each checkpoint; the process umask is left as it was."""
    import os

    path = tmp_path / "spans.duckdb"
    wal = tmp_path / "spans.duckdb.wal"
    old = os.umask(0o022)
    try:
        store, _ = seeded(10, path=str(path))
        assert _mode(path) == 0o600
        assert wal.exists() and _mode(wal) == 0o600
        store.flush()  # CHECKPOINT: DuckDB deletes the WAL ...
        store.append(call(50))  # ... and creates a new one at the next write (the insert of
        store.count()  # what append held back, which a read makes at once)
        assert wal.exists() and _mode(wal) == 0o600
        store.close()
        assert os.umask(0o022) == 0o022
        path.chmod(0o644)  # a store made world-readable elsewhere is tightened when opened
        open_store(str(path)).close()
        assert _mode(path) == 0o600
        (tmp_path / "other").write_text("x")  # the umask of the process is untouched
        assert _mode(tmp_path / "other") == 0o644
    finally:
        os.umask(old)


def test_relink_sets_a_stored_servers_parent_and_moves_its_trace():
    store = open_store(None)
    spans = call(0) + call(1)
    late_server = Span(name="GET /x", kind="SERVER", start_time_unix_nano=T0, end_time_unix_nano=T0 + MS,
                       attributes={"http.route": "/x", "n": 1}, resource={"service.name": "api"})
    child = Span(name="SELECT", kind="CLIENT", start_time_unix_nano=T0, end_time_unix_nano=T0 + MS,
                 trace_id=late_server.trace_id, parent_span_id=late_server.span_id,
                 resource={"service.name": "api"})
    store.append(spans + [late_server, child])
    client = spans[1]  # its trace takes the server and the server's child
    n = store.relink([(late_server.span_id, client.span_id, {"guardian.link.method": "connection+late",
                                                             "guardian.link.confidence": 0.9}),
                      ("f" * 16, client.span_id, {"x": 1})],  # not stored: nothing set
                     {late_server.trace_id: client.trace_id})
    assert n == 1
    trace = store.trace(client.trace_id)
    got = {s.span_id: s for s in trace}
    assert len(trace) == 6 and store.trace(late_server.trace_id) == []
    s = got[late_server.span_id]
    assert s.parent_span_id == client.span_id and got[child.span_id].parent_span_id == s.span_id
    assert s.attributes == {"http.route": "/x", "n": 1, "guardian.link.method": "connection+late",
                            "guardian.link.confidence": 0.9}
    assert store.count() == len(spans) + 2
    assert store.relink([], {}) == 0


def test_memory_limit_and_threads_are_set_and_an_in_memory_store_spills_to_its_own_directory():
    import os

    from capture.store.duckdb_store import DuckDBStore
    store = DuckDBStore(None, memory_limit_mb=64, threads=1)
    limit, threads, tmp = store._con.execute(
        "SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('temp_directory')").fetchall()[0]
    assert limit == "61.0 MiB", limit  # 64 MB (10^6 bytes) as DuckDB shows it
    assert threads == 1 and tmp == store._spill and os.path.isdir(tmp)
    store.close()
    assert not os.path.exists(tmp)
    plain = DuckDBStore(None)  # no bounds asked: DuckDB's defaults, no directory of ours
    assert plain._spill is None
    plain.close()


def test_a_store_file_is_written_in_small_row_groups_and_returns_freed_memory_early(tmp_path):
    from capture.store.duckdb_store import ROW_GROUP_ROWS, DuckDBStore

    path = str(tmp_path / "spans.duckdb")
    store = DuckDBStore(path, memory_limit_mb=64)
    flush, purge = store._con.execute("SELECT current_setting('allocator_flush_threshold'),"
                                      " current_setting('allocator_background_threads')").fetchall()[0]
    assert flush in ("16MB", "15.2 MiB") and purge is True, flush  # a quarter of the limit, not 128 MB
    n = 3 * ROW_GROUP_ROWS // 4 + 1
    store.append([s for i in range(n) for s in call(i)])
    store.flush()
    groups = store._con.execute("SELECT row_group_id, max(count) FROM pragma_storage_info('span_rows')"
                                " GROUP BY ALL").fetchall()
    assert len(groups) == 4 and all(rows <= ROW_GROUP_ROWS for _, rows in groups), groups
    store.close()
    again = DuckDBStore(path)  # reopened (and without a memory limit): same rows, same database file
    assert again.count() == 4 * n
    assert again._con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                              ).fetchall() == [(path,)]
    again.close()


def test_age_retention_after_reopen_counts_from_the_stored_newest_span(tmp_path):
    path = str(tmp_path / "spans.duckdb")
    store = open_store(path)
    store.append([s for k in range(50) for s in call(k)])  # 0 .. 5 s
    store.close()
    aged = open_store(path, max_age_s=2.0)
    aged.append(call(0))  # older than what is stored: the newest end is still the stored one
    kept = aged.spans(SpanFilter(limit=1000))
    newest = max(s.end_time_unix_nano for s in kept)
    assert newest > T0 + 4 * S and all(s.end_time_unix_nano >= newest - 2 * S for s in kept)
    assert aged.count() == len(kept) < 100 and aged.evicted == 204 - len(kept)


def _pool_mb(store) -> float:
    return store._con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0] / 2**20


def test_a_store_file_hands_its_cached_blocks_back_and_still_answers(tmp_path, monkeypatch):
    from capture.store import duckdb_store

    monkeypatch.setattr(duckdb_store, "RELEASE_EVERY_S", 3600.0)
    monkeypatch.setattr(duckdb_store, "INSERT_ROWS", 1)  # small inserts: through the WAL, cached
    store = duckdb_store.DuckDBStore(str(tmp_path / "spans.duckdb"), memory_limit_mb=64)
    for k in range(0, 20_000, 1_000):  # (ids as keys: 12,000 calls left 13.6 MB cached)
        store.append([s for i in range(k, k + 1_000) for s in call(i, fail=i % 10 == 0)])
    held = _pool_mb(store)
    assert held > 4 * duckdb_store.RELEASE_TO_MB, held  # what DuckDB keeps cached on its own
    store.release()
    assert store.releases == 1 and _pool_mb(store) <= duckdb_store.RELEASE_TO_MB < held
    assert store._con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "61.0 MiB"
    assert store.count() == 80_000
    assert len(store.spans(SpanFilter(status_code="ERROR", kind="SERVER", limit=10_000))) == 4_000
    # and on its own, from append, every RELEASE_EVERY_S; an in-memory store's pool is its data: kept
    store._next_release = 0.0  # due
    store.append(call(20_000))
    assert store.releases == 2
    store.close()
    memory = duckdb_store.DuckDBStore(None, memory_limit_mb=64)
    memory.append(call(0))
    memory.release()
    assert memory.releases == 0 and memory.count() == 4
    memory.close()


def _wide(i0: int, n: int) -> list[Span]:
    """Spans whose text does not compress away (a distinct random literal each: ~300 bytes)."""
    rnd = random.Random(i0)
    return [Span(name="SELECT", kind="CLIENT", start_time_unix_nano=T0 + (i0 + i) * MS,
                 end_time_unix_nano=T0 + (i0 + i) * MS + 5, resource={"service.name": "db"},
                 attributes={"db.query.text": f"SELECT '{rnd.randbytes(150).hex()}'"})
            for i in range(n)]


def test_a_store_with_a_limit_is_held_near_half_of_it_and_keeps_every_span(tmp_path, monkeypatch):
    """New rows (uncompressed, pinned) and retention's deletes stay in an in-memory store's pool
    until a checkpoint: it rose to its limit. `hold` checkpoints it (a file's pool: released) once
    the pool passes HOLD_AT of the limit; nothing is lost."""
    from capture.store import duckdb_store

    monkeypatch.setattr(duckdb_store, "HOLD_CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(duckdb_store, "RELEASE_EVERY_S", 3600.0)  # never by time here
    monkeypatch.setattr(duckdb_store, "INSERT_ROWS", 1)  # each append inserted at once: the pool's worst case
    limit = 16
    held = [duckdb_store.DuckDBStore(None, memory_limit_mb=limit),
            duckdb_store.DuckDBStore(str(tmp_path / "spans.duckdb"), memory_limit_mb=limit)]
    plain = duckdb_store.DuckDBStore(None, memory_limit_mb=limit)
    peak, peak_plain, batch = [0, 0], 0, 5_000
    for k in range(0, 60_000, batch):
        spans = _wide(k, batch)
        plain.append(spans)
        peak_plain = max(peak_plain, plain.memory()["pool"])
        for i, store in enumerate(held):
            store.append(spans)
            store.hold()
            peak[i] = max(peak[i], store.memory()["pool"])
    assert peak_plain > 0.75 * limit * 2**20, peak_plain  # near its limit: what `hold` prevents
    for i, store in enumerate(held):
        assert store.holds >= 2
        assert peak[i] <= duckdb_store.HOLD_AT * limit * 2**20, (i, peak[i])
        assert store.count() == 60_000 == store._rows("SELECT count(*) FROM spans")[0][0]
        assert [s.start_time_unix_nano for s in store.spans(SpanFilter(limit=2))] == [T0, T0 + MS]
        store.close()
    plain.close()


def test_appends_are_held_for_one_larger_insert_yet_every_read_and_a_restart_sees_them(tmp_path, monkeypatch):
    from capture.store import duckdb_store

    path = str(tmp_path / "spans.duckdb")
    store = duckdb_store.DuckDBStore(path, memory_limit_mb=64, threads=2)
    inserted = lambda: store._con.execute("SELECT count(*) FROM spans").fetchall()[0][0]  # noqa: E731
    first = call(1)
    store.append(first)
    store.append(call(2))
    assert inserted() == 0 and store._held_rows == 8  # held: below INSERT_ROWS, younger than INSERT_EVERY_S
    store.settle()
    assert inserted() == 0
    assert [s.span_id for s in store.trace(first[0].trace_id)] == [s.span_id for s in first]  # a read inserts
    assert inserted() == 8 and store._held_rows == 0
    threads = store._con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    assert threads == 2  # set back after the one-thread insert
    store.append(call(3))
    monkeypatch.setattr(duckdb_store, "INSERT_EVERY_S", 0.0)
    store.settle()  # old enough: inserted while no spans come
    assert inserted() == 12
    monkeypatch.setattr(duckdb_store, "INSERT_EVERY_S", 3600.0)
    n = duckdb_store.INSERT_ROWS // 4 + 1
    store.append([s for i in range(10, 10 + n) for s in call(i)])  # a row group's worth: inserted now
    assert inserted() == 12 + 4 * n
    store.append(call(5))
    store.close()  # what is held is written before the file is closed
    again = duckdb_store.DuckDBStore(path)
    assert again.count() == 16 + 4 * n
    again.close()
