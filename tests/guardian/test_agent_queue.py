"""The agent's ingest queue is bounded in spans, not only in batches: a capture that outpaces the
worker (a slow store at saturation) drops whole batches, counted, instead of growing memory."""
from __future__ import annotations

from capture.config import AgentConfig
from capture.store.factory import open_store
from guardian.agent_daemon import Agent
from tests.guardian.test_agent import request


def test_spans_beyond_the_bound_are_dropped_counted_and_the_rest_stored():
    store = open_store(None)
    agent = Agent(AgentConfig(), store, source=None, max_queued_spans=1000)
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
    agent = Agent(cfg, store, source=None)
    batch = [s for i in range(100) for s in request(i)]  # 300 spans
    agent.on_spans(list(batch))
    agent.on_spans(list(batch))  # 600 > 500: dropped
    assert (agent.queued_spans, agent.dropped) == (300, 300)
    assert agent.linker.max_pending == 300
    store.close()
