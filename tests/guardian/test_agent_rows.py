"""Differential test of the agent's ingest path: the same recorded ring-buffer traffic through a real
Agent (its queue, worker, linker and DuckDB store) stores the same rows, ids masked and links kept,
whether the capture's exchanges become Spans then rows in Python and are linked in Python (the
specification: capture.rows.row_of, linker.link_python, StreamLinker._release_python) or become
rows in the compiled path (ConnTracker.spans_as_rows) and are made into rows and linked in C; and
whether the store inserts each append at once or holds appends for one larger insert."""
from __future__ import annotations

import random
import threading

import pytest

from bench.events import load
from capture import fastpath, rows, stitch
from capture.config import AgentConfig
from capture.live import BATCH
from capture.pipeline import Pipeline
from capture.store import duckdb_store
from capture.store.duckdb_store import DuckDBStore
from capture.traces import linker
from guardian.agent_daemon import Agent
from tests.capture.test_fastpath import FIXTURES, feed_to_the_end
from tests.capture.test_pairing import tracker_for

pytestmark = pytest.mark.skipif(fastpath._fastpath is None or rows._rows is None or linker._link is None,
                                reason="the C extensions are not built (their own tests say so)")


class RecordedSource:
    """Recorded ring records as the live capture hands them to the agent: fed in batches, the
    spans of each flushed to on_spans, what is still open at the end closed."""

    def __init__(self, name: str, compiled_rows: bool) -> None:
        header, self.records = load(str(FIXTURES / f"{name}.events.gz"))
        self.sink = None
        self.pipeline = Pipeline(lambda spans: self.sink(spans))
        tracker = tracker_for(self.pipeline, header)
        if compiled_rows:
            self.tracker = tracker  # Agent.run turns its rows on, as for the live capture
        self._tracker = tracker
        # the same ids on both paths: the linker breaks ties between equal fits by span id
        tracker.fast.seed_ids(7)
        random.seed(7)
        stitch._ids.clear()

    def run(self, on_spans, stop: threading.Event) -> None:
        self.sink = on_spans
        feed_to_the_end(self._tracker, self.pipeline, self.records, BATCH)

    def stats(self) -> dict:
        return {}


class ChunkedStore(DuckDBStore):
    """Each append handed over in small batches, so that several are held and inserted together
    (and what is left is inserted by the first read)."""

    def append(self, spans):
        return sum(super(ChunkedStore, self).append(spans[i:i + 257]) for i in range(0, len(spans), 257))


def stored(name: str, compiled: bool, monkeypatch, held: bool = False) -> tuple[list[tuple], Agent]:
    """The store's rows after the agent ran on the recording: ids replaced by the order of the rows
    (sorted on everything else), parents and traces by the row they point at. `held`: appends in
    small batches, held by the store and inserted a thousand rows at a time; else each at once."""
    if not compiled:
        monkeypatch.setattr(linker, "_link", None)
        monkeypatch.setattr(rows, "_rows", None)
    monkeypatch.setattr(duckdb_store, "INSERT_ROWS", 1_000 if held else 1)
    monkeypatch.setattr(duckdb_store, "INSERT_EVERY_S", 3600.0)
    store = ChunkedStore(None, threads=2) if held else DuckDBStore(None)
    source = RecordedSource(name, compiled)
    # one linker run over everything at the end: the worker's batches follow the threads' timing,
    # and where a window or the pending bound releases spans between them, links may differ run to run
    config = AgentConfig(linker={"window_s": 3600, "max_pending_spans": 1_000_000})
    agent = Agent(config, store, source, trim_every_s=None)
    agent.run()
    monkeypatch.undo()
    got = store._rows("SELECT trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, duration_ns, "
                      "status_code, status_message, service, peer, attributes, resource FROM spans")
    got.sort(key=lambda r: r[3:] + r[:3])
    index = {r[1]: n for n, r in enumerate(got)}
    roots = {}
    masked = [(roots.setdefault(r[0], len(roots)), index[r[1]], index.get(r[2], r[2] and "outside"), *r[3:])
              for r in got]
    return masked, agent


@pytest.mark.parametrize("name", ["nginx_hey_pair", "nginx_hey", "redis_bench_pair"])
def test_the_store_gets_the_same_rows_from_both_paths(name, monkeypatch):
    python, a = stored(name, False, monkeypatch)
    compiled, b = stored(name, True, monkeypatch)
    assert compiled == python
    assert len(python) >= 1400 and a.dropped == b.dropped == 0
    assert a.stored == b.stored == len(python) and a.linker.linked == b.linker.linked
    if name.startswith("nginx"):  # every client's call found its server span
        assert sum(1 for r in python if r[2] is not None) >= 0.45 * len(python)
        # and the compiled path made its HTTP/1 exchanges as rows, not Spans
        assert b.source.tracker.fast.counts()["spans"] >= 0.9 * len(python)


@pytest.mark.parametrize("name", ["nginx_hey_pair", "redis_bench_pair"])
def test_the_store_gets_the_same_rows_whether_it_inserts_each_append_or_holds_them(name, monkeypatch):
    at_once, a = stored(name, True, monkeypatch)
    held, b = stored(name, True, monkeypatch, held=True)
    assert held == at_once and len(held) >= 1400 and a.stored == b.stored == len(held)
    assert b.store.count() == len(held) and not b.store._held
