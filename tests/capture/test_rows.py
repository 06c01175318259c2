"""Compact rows (capture.rows) between the capture and the store give the same answers as the
Spans they are made from: the same links and trace ids, the same stored rows, the same Spans
back for exporters, through the agent's queue, linker and store; and they hold less memory."""
from __future__ import annotations

import copy
import gc
import tracemalloc

import pytest

from capture import rows as rows_mod
from capture.config import AgentConfig
from capture.rows import span_of, to_rows
from capture.span import Span
from capture.store.factory import open_store
from capture.traces.linker import TRACEPARENT, conn_key, link
from guardian.agent_daemon import Agent
from tests.guardian.test_agent import request

pytestmark = pytest.mark.skipif(rows_mod.Row is None, reason="capture/export/_otlp_wire.c not built")
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def sample() -> list[Span]:
    """Linked three-span requests, a server span carrying a traceparent, a client span with a
    peer (db.system), one with a status message."""
    spans = [s for i in range(40) for s in request(i)]
    spans[0].attributes[TRACEPARENT] = TP  # linked to its caller: the header gives the trace id
    lone = request(99)[2]  # no captured caller: the header gives the parent too
    lone.attributes[TRACEPARENT] = TP
    spans.append(lone)
    spans[4].attributes = {**spans[4].attributes, "db.system": "redis"}
    spans[7].status_message = "boom"
    return spans


def facts(spans) -> dict[str, tuple]:
    return {s.span_id: (s.parent_span_id, s.trace_id) for s in spans}


def test_rows_link_like_the_spans_they_were_made_from():
    spans = sample()
    rows = to_rows(copy.deepcopy(spans))
    link(spans)
    stats = link(rows)
    assert stats.cross_process > 0 and stats.in_process > 0 and stats.traceparent == 1
    assert facts(rows) == facts(spans)
    assert spans[-1].parent_span_id == TP.split("-")[2]
    assert sum(1 for s in spans if s.parent_span_id) > len(spans) // 2


def test_rows_store_and_come_back_as_the_same_spans():
    spans = sample()
    link(spans)
    rows = to_rows(spans)
    assert [span_of(r) for r in rows] == spans
    a, b = open_store(None), open_store(None)
    try:
        a.append(spans)
        b.append(rows)
        q = "SELECT * FROM spans ORDER BY span_id"
        got, want = b._rows(q), a._rows(q)
        assert len(got) == len(spans) and got == want
        assert any(r[11] == "redis" for r in got)  # the peer column
    finally:
        a.close()
        b.close()


def run_agent(batches) -> list[tuple]:
    store = open_store(None)
    agent = Agent(AgentConfig(linker={"window_s": 0.5}), store, source=None)
    for batch in batches:
        agent.on_spans(copy.deepcopy(batch))
    agent.queue.put(None)
    agent._work()
    got = store._rows("SELECT * FROM spans ORDER BY span_id")
    store.close()
    assert agent.stored == len(got) == sum(map(len, batches))
    return got


def test_the_agent_stores_the_same_rows_as_it_did_with_spans(monkeypatch):
    batches = [sample()[i:i + 25] for i in range(0, 120, 25)]
    with_rows = run_agent(batches)
    monkeypatch.setattr(rows_mod, "Row", None)  # the path without the compiled module: Spans
    assert run_agent(batches) == with_rows
    assert sum(1 for r in with_rows if r[2]) > len(with_rows) // 2  # parents were set


def held(make) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) // len(kept)
    finally:
        tracemalloc.stop()


def test_rows_hold_less_than_spans_and_are_not_tracked_by_the_collector():
    from tests.capture.test_hotpath_diff import RECORDING
    from bench.events import _Sockets, load
    from capture.conntrack import ConnTracker
    from capture.pipeline import Pipeline

    header, records = load(str(RECORDING))
    resources = {int(pid): res for pid, res in header["resources"].items()}

    def captured() -> list[Span]:  # the spans the capture makes of recorded nginx traffic
        out: list[Span] = []
        pipeline = Pipeline(out.extend)
        tracker = ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                              sockets=_Sockets(header["port"]), boot_offset_ns=0)
        for raw in records:
            tracker.on_event(raw)
        pipeline.flush()
        return out

    per_span = held(captured)
    per_row = held(lambda: to_rows(captured()))
    # this recording's connections were first seen mid-stream, so each span also carries its
    # connection's epoch, one more key in a row's JSON text where a Span's dict had room for it
    assert per_row < per_span, (per_row, per_span)
    assert not gc.is_tracked(to_rows(captured()[:1])[0])


def test_shared_link_facts_stay_bounded_and_skip_per_request_traceparents(monkeypatch):
    monkeypatch.setattr(rows_mod, "_facts", {})
    monkeypatch.setattr(rows_mod, "_FACTS_MAX", 50)
    spans = [s for i in range(200) for s in request(i)]
    for i, s in enumerate(spans):
        s.attributes["client.port"] = 20000 + i  # every span a connection of its own
    carried = spans[0]
    carried.attributes[TRACEPARENT] = TP
    rows = to_rows(spans)
    assert 0 < len(rows_mod._facts) <= 50
    assert all(f[2] is None for f in rows_mod._facts)  # a request's traceparent is never kept shared
    assert rows[0].key[2] == TP and rows[0].key[0] == conn_key(carried)  # still carried by its row


@pytest.mark.parametrize("compiled", [True, False])
def test_the_facts_table_stays_at_its_bound_and_its_clears_are_counted(compiled, monkeypatch):
    if compiled and rows_mod._rows is None:
        pytest.skip("capture/_rows.c not built")
    if not compiled:
        monkeypatch.setattr(rows_mod, "_rows", None)
    monkeypatch.setattr(rows_mod, "_FACTS_MAX", 16)
    monkeypatch.setattr(rows_mod, "_facts", {})
    before = rows_mod.facts_clears()
    sizes = []
    for i in range(20):  # 3 distinct facts a request, 60 in all: the table fills 3 times
        to_rows(request(i))
        sizes.append(rows_mod.facts_held())
    assert max(sizes) <= 16
    assert rows_mod.facts_clears() - before == 3
    # a keep-alive connection's spans share their facts: nothing new, no clear
    for _ in range(5):
        to_rows(request(19))
    assert rows_mod.facts_clears() - before == 3
