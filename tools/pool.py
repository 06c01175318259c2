"""Requests waiting for a pooled connection: an operation whose requests now skip a call they
usually make (to a database or cache, through a pool: a callee that calls nothing) and take far longer than any baseline request,
that time spent calling nothing. Their wait is for a connection the service's other requests
hold (leaked, held across slow work, too few for the load): the service's own pool, not the
database, whose answers to the calls that were made say nothing of it. A request that stops
before a call because it failed (an exception) is short, not long; a call that was made and
was slow is no skipped call; spans a capture lost leave requests as long as those that had it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.span import Span
from tools.sampling import Sample
from tools.shape import Request, requests
from tools.stats import MIN_SAMPLE, SURE, _quantile, confidence, mann_whitney_p

USUAL = 0.5  # a call at least this share of the baseline requests made
WAITED = 3.0  # the skipping requests' median at least this many times the baseline's
WAITED_MS = 1000.0  # and this much longer: a pool's checkout wait is bounded in seconds, not ms
SKIPPED = 0.2  # share of the requests now that skipped and waited: a pool out of connections
IDLE = 0.8  # share of a skipping request's time spent in no call: it waited, it did not work


@dataclass
class PoolWait:
    service: str
    operation: str
    call: str  # the usual call skipped ("postgres INSERT orders")
    skipped: int  # requests now that skipped it and waited
    count: tuple[int, int]  # requests in baseline, window
    p50_ms: tuple[float, float]  # baseline requests, skipping requests
    sure: float
    examples: list[Span] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.service} `{self.operation}`: {self.skipped} of {self.count[1]} requests made no"
                f" {self.call} call, usual in its baseline, and took p50 {self.p50_ms[1]:.0f} ms against"
                f" {self.p50_ms[0]:.1f} ms, calling nothing while they waited ({self.sure:.1%} sure they"
                " are longer): waiting for a pooled connection its other requests hold")


def _idle(r: Request) -> bool:
    busy = sum(r.call_ns.values())
    return r.span.duration_ns > 0 and busy <= (1 - IDLE) * r.span.duration_ns


def pool_waits(cur: Sample, base: Sample) -> list[PoolWait]:
    """Every operation whose requests skip a usual call and wait instead, surest first."""
    now, before = requests(cur), requests(base)
    # services seen calling others: a call to one of them waits on its work, not on a pool
    calling = {sp.service for sp in cur.spans + base.spans if sp.kind in ("CLIENT", "PRODUCER")}
    out: list[PoolWait] = []
    for op, rs in now.items():
        bs = before.get(op, [])
        if len(rs) < MIN_SAMPLE or len(bs) < MIN_SAMPLE:
            continue
        made = set().union(*(r.calls for r in bs + rs)) - set().union(*(r.lookups for r in bs + rs))
        # A request that calls a service doing work of its own may be waiting on that call,
        # unanswered (no span yet): only an operation that calls databases and caches alone
        # waits, calling nothing, for nothing but a connection.
        if any(sig.split(" ", 1)[0] in calling for sig in made):
            continue
        usual = [sig for sig in made if sum(1 for r in bs if r.calls[sig]) >= USUAL * len(bs)]
        d0 = sorted(r.span.duration_ns / 1e6 for r in bs)
        base_p50 = _quantile(d0, 0.5)
        best: PoolWait | None = None
        for sig in usual:
            waited = [r for r in rs if not r.calls[sig] and _idle(r)]
            if len(waited) < max(MIN_SAMPLE, SKIPPED * len(rs)):
                continue
            d1 = sorted(r.span.duration_ns / 1e6 for r in waited)
            p50 = _quantile(d1, 0.5)
            if p50 < WAITED * base_p50 or p50 - base_p50 < WAITED_MS:
                continue
            sure = confidence(mann_whitney_p(d1, d0))
            if sure < SURE or (best is not None and best.skipped >= len(waited)):
                continue
            best = PoolWait(op[0], op[1], sig, len(waited), (len(bs), len(rs)), (base_p50, p50), sure,
                            [r.span for r in sorted(waited, key=lambda r: -r.span.duration_ns)[:5]])
        if best is not None:
            out.append(best)
    # the lowest waiting service: one whose requests call another that waits waits on it
    callees = {sp.service: set() for sp in cur.spans}
    for tree in cur.trees:
        for sp in tree.spans:
            for k in tree.children[sp.span_id]:
                if k.service != sp.service:
                    callees.setdefault(sp.service, set()).add(k.service)
    waiting = {w.service for w in out}
    out = [w for w in out if not (callees.get(w.service, set()) - {w.service}) & waiting]
    out.sort(key=lambda w: (-w.sure, -w.skipped))
    return out
