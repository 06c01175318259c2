"""DuckDBStore with its inserter thread (insert_in_background, as the agent runs it): every span
appended is stored once, reads see every append, retention and close still hold."""
from __future__ import annotations

import threading

import pytest

from capture.store import duckdb_store
from capture.store.api import SpanFilter
from capture.store.duckdb_store import DuckDBStore
from tests.capture.store.test_duckdb_store import call


@pytest.fixture(autouse=True)
def _both_engines():  # DuckDB's own thread: one engine here (overrides the folder's fixture)
    yield


@pytest.fixture
def small_inserts(monkeypatch):
    monkeypatch.setattr(duckdb_store, "INSERT_ROWS", 64)  # many inserts from a few hundred spans


def test_reads_see_every_append_while_the_thread_inserts(tmp_path, small_inserts):
    store = DuckDBStore(str(tmp_path / "s.duckdb"), memory_limit_mb=64)
    store.insert_in_background()
    spans = [s for i in range(300) for s in call(i)]
    for i in range(0, len(spans), 40):
        store.append(spans[i:i + 40])
        assert store.count() == i + len(spans[i:i + 40])  # a read inserts what is ready and held first
    got = store.spans(SpanFilter(limit=10_000))
    assert sorted(s.span_id for s in got) == sorted(s.span_id for s in spans)  # each once
    store.close()
    again = DuckDBStore(str(tmp_path / "s.duckdb"))
    assert again.count() == len(spans)
    again.close()


def test_appends_from_a_worker_beside_reads_and_close(tmp_path, small_inserts):
    store = DuckDBStore(str(tmp_path / "s.duckdb"), max_spans=1_000, memory_limit_mb=64)
    store.insert_in_background()
    done = threading.Event()
    seen: list[int] = []

    def reader():
        while not done.is_set():
            seen.append(store.count())

    t = threading.Thread(target=reader)
    t.start()
    n = 0
    for i in range(500):
        n += store.append(call(i))
    done.set()
    t.join()
    assert n == 2_000
    assert store.count() == 1_000  # retention by count, on the inserter thread or the read's
    assert store.evicted == 1_000
    assert max(seen) <= 1_000
    store.close()
    assert store.insert_errors == 0


def test_settle_inserts_a_small_batch_without_a_read(tmp_path, monkeypatch):
    monkeypatch.setattr(duckdb_store, "INSERT_EVERY_S", 0.05)
    store = DuckDBStore(str(tmp_path / "s.duckdb"))
    store.insert_in_background()
    store.append(call(1))
    for _ in range(200):  # the thread gathers what waited INSERT_EVERY_S and inserts it
        with store._buf:
            if not store._held and not store._ready:
                break
        threading.Event().wait(0.05)
    with store._lock:
        assert store._con.execute("SELECT count(*) FROM spans").fetchall()[0][0] == 4
    store.close()
