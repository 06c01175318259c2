"""The agent's ingest queue is bounded in spans, not only in batches: a capture that outpaces the
worker (a slow store at saturation) drops whole batches, counted, instead of growing memory."""
from __future__ import annotations

from capture.config import AgentConfig
from capture.store.factory import open_store
from capture.span import Span
from capture.store.api import SpanFilter
from guardian.agent_daemon import Agent
from guardian.shed import Shedder
from tests.guardian.test_agent import request

PLAIN = Shedder(quiet_per_s=0)  # no shedding: the queue's bound alone


def test_spans_beyond_the_bound_are_dropped_counted_and_the_rest_stored():
    store = open_store(None)
    agent = Agent(AgentConfig(), store, source=None, max_queued_spans=1000, shed=PLAIN)
    batch = [s for i in range(100) for s in request(i)]  # 300 spans
    for _ in range(5):  # the worker is not running: the queue only fills
        agent.on_spans(list(batch))
    assert (agent.received, agent.queued_spans, agent.dropped, agent.queue.qsize()) == (1500, 900, 600, 3)
    agent.queue.put(None)
    agent._work()  # the worker drains what was queued, links it and stores it
    assert agent.queued_spans == 0 and agent.stored == 900 == store.count()
    agent.on_spans(list(batch))  # room again
    assert agent.queued_spans == 300 and agent.dropped == 600
    store.close()


def test_the_bounds_on_held_spans_come_from_the_configuration():
    cfg = AgentConfig(store={"queue_spans": 500}, linker={"max_pending_spans": 300})
    store = open_store(None)
    agent = Agent(cfg, store, source=None, shed=PLAIN)
    batch = [s for i in range(100) for s in request(i)]  # 300 spans
    agent.on_spans(list(batch))
    agent.on_spans(list(batch))  # 600 > 500: dropped
    assert (agent.queued_spans, agent.dropped) == (300, 300)
    assert agent.linker.max_pending == 300
    store.close()


def _spans(pid: int, n: int, error_every: int = 0, t0: int = 10**18) -> list[Span]:
    return [Span(name="GET /x", kind="SERVER", start_time_unix_nano=t0 + i, end_time_unix_nano=t0 + i + 1000,
                 status_code="ERROR" if error_every and i % error_every == 0 else "UNSET",
                 resource={"service.name": f"p{pid}", "process.pid": pid}) for i in range(n)]


def test_a_flood_is_shed_but_a_quiet_services_errors_and_spans_are_kept():
    """One process floods the host while a quiet one fails now and then: with the queue full, the
    flood's batches go (counted), the quiet process's spans and every error still reach the store,
    within the reserve past the bound."""
    store = open_store(None)
    now = [100.0]
    agent = Agent(AgentConfig(), store, source=None, max_queued_spans=1000,
                  shed=Shedder(quiet_per_s=20, clock=lambda: now[0]))
    assert agent.queue.reserve_spans == 250
    for second in range(3):
        now[0] = 100.0 + second
        for _ in range(10):  # 10 batches a second of 200 flood spans, 2 quiet spans (1 error) mixed in
            agent.on_spans(_spans(7, 200) + _spans(9, 2, error_every=2))
    quiet = 3 * 10 * 2
    kept = agent.shed.kept
    # the flood's first 20 spans a second under overload are "quiet" too: at most 20 a second
    assert quiet <= kept <= quiet + 3 * 20, kept
    whole = 4 * 202  # batches the queue took whole before it was full
    assert agent.queued_spans == whole + kept <= 1000 + agent.queue.reserve_spans
    assert agent.received == 3 * 10 * 202 and agent.dropped == agent.received - agent.queued_spans
    agent.queue.put(None)
    agent._work()  # the worker stores everything queued, the reserve too
    assert store.count() == whole + kept
    quiet_stored = store.spans(SpanFilter(service="p9", limit=10_000))
    assert len(quiet_stored) == quiet and sum(s.status_code == "ERROR" for s in quiet_stored) == quiet // 2
    store.close()


def test_a_flood_of_errors_is_itself_shed():
    now = [5.0]
    shed = Shedder(quiet_per_s=20, clock=lambda: now[0])
    kept = shed.keep(_spans(7, 1000, error_every=1))
    assert len(kept) == 20 + 200  # its quiet share, then ten times as many errors a second
    assert shed.keep(_spans(7, 10, error_every=1)) == []
    now[0] = 6.0  # a new second
    assert len(shed.keep(_spans(7, 10, error_every=1))) == 10


def test_without_overload_nothing_is_counted_or_shed():
    store = open_store(None)
    agent = Agent(AgentConfig(), store, source=None, max_queued_spans=1000)
    agent.on_spans(_spans(7, 500) + _spans(9, 5, error_every=2))
    assert (agent.queued_spans, agent.dropped, agent.shed.kept, agent.shed._seen) == (505, 0, 0, {})
    store.close()


def test_the_queue_is_bounded_in_bytes_counted_and_visible_in_metrics():
    """Spans with long text (SQL, URLs up to the payload prefix) reach the byte bound long before
    the span bound: the batches past it are refused, counted, and the gauges say what is held."""
    from prometheus_client import generate_latest

    store = open_store(None)
    agent = Agent(AgentConfig(store={"queue_mb": 1}), store, source=None, shed=PLAIN)
    long = [Span(name="SELECT", kind="CLIENT", start_time_unix_nano=10**18 + i, end_time_unix_nano=10**18 + i + 9,
                 attributes={"db.system.name": "postgresql", "db.query.text": "SELECT " + "x" * 4000 + f" {i}"},
                 resource={"service.name": "a", "process.pid": 1}) for i in range(100)]  # ~400 KB a batch
    for _ in range(10):
        agent.on_spans(list(long))
    assert agent.queue.refused_bytes >= 7 and agent.dropped >= 700
    assert 0 < agent.queue.bytes <= 2**20 and agent.queued_spans <= 300  # 1,000 spans by the span bound alone
    text = generate_latest(agent.registry).decode()
    assert f"guardian_agent_ingest_queue_refused_bytes_total {float(agent.queue.refused_bytes)}" in text
    assert f"guardian_agent_ingest_queue_bytes {float(agent.queue.bytes)}" in text
    agent.queue.put(None)
    agent._work()
    assert agent.queue.bytes == 0 and agent.stored == store.count() == agent.received - agent.dropped
    store.close()
