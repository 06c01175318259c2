"""Requests waiting for a pooled connection (tools.pool) as candidates: the service whose
requests wait is saturated (its pool), whatever the database's spans of the calls that were
made look like (a connection held idle stretches them, as the capture pairs them)."""
from __future__ import annotations

from guardian.investigate.rank import Candidate
from guardian.investigate.signals import Signals

POOL_VOTES = 1.5  # per operation whose requests wait, as a stuck operation weighs


def add_pools(sig: Signals, cands: dict) -> None:
    """Calls stuck at the database itself (a row lock) hold the pool's connections there: the
    waits are its, and the stuck calls name it already."""
    stuck = {st.service for st in sig.stuck}
    for w in sig.pools:
        if w.call.split(" ", 1)[0] in stuck:
            continue
        c = cands.setdefault((w.service, "saturation"), Candidate(key=(w.service, w.operation),
                                                                  kind="saturation"))
        c.votes += POOL_VOTES * w.sure
        c.pooled = True
        c.ops[w.operation] = c.ops.get(w.operation, 0.0) + POOL_VOTES
        c.fixed_change = max(c.fixed_change or 0.0, w.sure)
        c.change = c.change or w.describe()
        for s in w.examples[:3]:
            if s.trace_id not in c.traces:
                c.spans.append(s)
                c.excess_ms.append(s.duration_ns / 1e6 - w.p50_ms[0])
                c.gap_ms.append(0.0)
                c.traces.add(s.trace_id)
