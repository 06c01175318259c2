"""Answers an RTO late (tools.retransmit) as candidates: the callee's network, kind "network".
A few calls that lost a packet are the whole change: the callee's own spans and its typical
call stay as they were, so its change is the test's, not a percentile's."""
from __future__ import annotations

from guardian.investigate.rank import Candidate
from guardian.investigate.signals import Signals

LOSS_VOTES = 1.5  # as a gap shift tested on every sampled call weighs


def add_loss(walker, sig: Signals, cands: dict) -> None:
    for r in sig.lost:
        svc = walker.canon(r.server)
        c = cands.setdefault((svc, "network"), Candidate(key=(svc, r.operation), kind="network"))
        c.votes += LOSS_VOTES * r.sure
        c.ops[r.operation] = c.ops.get(r.operation, 0.0) + LOSS_VOTES
        c.fixed_change = max(c.fixed_change or 0.0, r.sure)
        # resting on a few late answers, those are the calls behind it (sparse.few says so)
        c.calls = c.calls or ((r.count[0], r.hits) if r.few else r.count)
        c.change = f"{r.describe()}; {c.change}" if c.change else r.describe()
        for call, ms in zip(r.examples, r.excess_ms):
            if call.client.trace_id not in c.traces:
                c.spans.append(call.client)
                c.excess_ms.append(ms)
                c.gap_ms.append(ms)
                c.traces.add(call.client.trace_id)
