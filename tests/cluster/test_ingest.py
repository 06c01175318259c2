"""The hub's ingest pipeline (receivers -> link thread -> store thread): a store that stalls
fills the bounded queues, receivers answer 503 + Retry-After (counted), and once the store
moves again everything accepted is stored, linked, nothing lost."""
from __future__ import annotations

import threading
import time

import httpx

from capture.export.otlp_proto import encode
from capture.span import Span
from capture.store.factory import open_store
from capture.traces.crossnode import CrossNodeLinker
from guardian.hub.hub import Hub, HubMetrics
from tests.engines import engine  # noqa: F401 - the fixture

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


class Stalled:
    """The real store, whose appends wait until `go` is set (a disk or server that stalls)."""

    def __init__(self, store):
        self.store, self.go, self.calls = store, threading.Event(), 0

    def append(self, spans):
        self.calls += 1
        self.go.wait(30)
        return self.store.append(spans)

    def __getattr__(self, name):
        return getattr(self.store, name)


def exchanges(n: int, first: int = 0) -> list[Span]:
    """n calls from node-1 to node-2 on one keep-alive connection, both halves."""
    out = []
    for i in range(first, first + n):
        a = {"server.address": "10.0.0.2", "server.port": 80, "client.address": "10.0.0.1",
             "client.port": 5000, "url.query": f"rid={i}"}
        t = T0 + i * 10 * MS
        out.append(Span(name="GET /", kind="CLIENT", start_time_unix_nano=t, end_time_unix_nano=t + 5 * MS,
                        resource={"service.name": "web", "host.name": "node-1"}, attributes=dict(a)))
        out.append(Span(name="GET /", kind="SERVER", start_time_unix_nano=t + MS, end_time_unix_nano=t + 4 * MS,
                        resource={"service.name": "api", "host.name": "node-2"}, attributes=dict(a)))
    return out


def test_a_stalled_store_throttles_receivers_and_loses_nothing():
    store = Stalled(open_store(None))
    linker = CrossNodeLinker(window_s=0.05)
    hub = Hub(store, "127.0.0.1", None, 0, linker=linker, max_queue_spans=1000, batch_spans=200,
              store_batches=1).start()
    url = f"http://127.0.0.1:{hub.http.port}/v1/traces"
    client = httpx.Client(headers={"Content-Type": "application/x-protobuf"})
    try:
        accepted, answers = 0, []
        for k in range(60):
            r = client.post(url, content=encode(exchanges(50, first=50 * k)))
            answers.append(r.status_code)
            if r.status_code == 200:
                accepted += 1
            else:
                assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert hub.ingest.queued <= 1000 + 2 * 200 * 2  # offer queue + what the two threads hold
        assert 503 in answers and hub.ingest.throttled == answers.count(503)
        assert store.store.count() == 0  # nothing got through the stalled store
        metrics = {m.name: m.samples[0].value for m in HubMetrics(hub).collect()}
        assert metrics["guardian_hub_throttled_requests"] == answers.count(503)
        store.go.set()
        assert hub.ingest.drain(30)
        assert store.store.count() == accepted * 100 == hub.ingest.stored
        servers = [s for s in store.store.spans(_all()) if s.kind == "SERVER"]
        assert servers and all(s.parent_span_id for s in servers)  # linked across the two nodes
        assert hub.ingest.seconds["decode"] > 0 and hub.ingest.seconds["store"] > 0
    finally:
        client.close()
        store.go.set()
        hub.stop()
        store.store.close()


def _all():
    from capture.store.api import SpanFilter

    return SpanFilter(limit=100_000)


def test_a_late_nodes_clients_link_to_servers_already_stored(engine):  # noqa: F811 - both engines
    # node-2's agent ships; node-1's agent is cut off and ships its backlog after node-2's
    # servers were stored unlinked: those rows get their parent and the client's trace.
    store = open_store(None)
    hub = Hub(store, "127.0.0.1", None, 0, linker=CrossNodeLinker(window_s=0.05)).start()
    url = f"http://127.0.0.1:{hub.http.port}/v1/traces"
    spans = exchanges(40)
    clients = [s for s in spans if s.kind == "CLIENT"]
    servers = [s for s in spans if s.kind == "SERVER"]
    later = [s for s in exchanges(40, first=200) if s.kind == "SERVER"]  # node-2 goes on
    try:
        with httpx.Client(headers={"Content-Type": "application/x-protobuf"}) as client:
            assert client.post(url, content=encode(servers)).status_code == 200
            time.sleep(0.1)  # past the linker's start-up hold
            assert client.post(url, content=encode(later)).status_code == 200
            assert hub.ingest.drain(30)
            assert store.count() == 80 and not any(s.parent_span_id for s in store.spans(_all()))
            assert client.post(url, content=encode(clients)).status_code == 200
            assert hub.ingest.drain(30)
        rows = {s.span_id: s for s in store.spans(_all())}
        assert len(rows) == 120
        for c, s in zip(clients, servers):
            row = rows[s.span_id]
            assert row.parent_span_id == c.span_id and row.trace_id == rows[c.span_id].trace_id
            assert row.attributes["guardian.link.method"] == "connection+late"
            assert row.attributes["url.query"] == c.attributes["url.query"]  # the right client
        assert hub.ingest.relinked == 40 and hub.ingest.store_errors == 0
        metrics = {m.name: m.samples[0].value for m in HubMetrics(hub).collect()}
        assert metrics["guardian_hub_spans_relinked"] == 40 and metrics["guardian_hub_links_late"] == 40
    finally:
        hub.stop()
        store.close()
