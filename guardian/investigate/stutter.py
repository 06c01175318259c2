"""A service that stutters (tools.stutter: stopped or throttled again and again, its requests
begin in bursts) answers for its callers' slowdowns when their slow requests ended right
after its releases: they waited on it, however quick its own spans look (each read only when
it ran again) and wherever the capture put the wait (the caller's own time, a connection it
could not open). Moves scores between candidates after propagation; reads no spans.
"""
from __future__ import annotations

from guardian.investigate.rank import FAMILY, Candidate
from guardian.investigate.samples import Walker
from guardian.investigate.signals import Signals
from tools.stats import SURE
from tools.stutter import ended_with

KEEP = 0.2  # of its score, what a caller keeps when the service it waited on takes it


def _callers(walker: Walker, service: str) -> set[str]:
    return {walker.canon(e.client) for e in walker.store.service_map(walker.window)
            if walker.canon(e.server) == service and walker.canon(e.client) != service}


def hand_over(walker: Walker, cands: list[Candidate], sig: Signals) -> list[Candidate]:
    """Callers' slowdowns that ended with a stuttering callee's releases become its candidate's
    score; returns the candidates (one added per such callee). Not a caller whose requests
    waited for a pooled connection or were held far beyond any baseline call: its pool was
    held (the database then begins what waited in bursts as connections come back), which a
    stop of a fraction of a second at a time does not do."""
    w = walker.window
    held = {p.service for p in sig.pools} | {walker.canon(s.service) for s in sig.stuck}
    for st in sig.stutters:
        callers = _callers(walker, st.service)
        into: Candidate | None = next((c for c in cands if c.key[0] == st.service
                                       and c.kind == "latency"), None)
        for x in list(cands):
            if x.key[0] not in callers or x.key[0] in held or FAMILY[x.kind] != 1 \
                    or x.kind == "network" or x.score <= 0:
                continue
            slow = [s for s, ms in zip(x.spans, x.excess_ms)
                    if s.service == x.key[0] and s.kind == "SERVER" and ms > 0]
            sure = ended_with(st.releases, [s.end_time_unix_nano for s in slow], w.start_ns, w.end_ns)
            if sure < SURE:
                continue
            if into is None:
                into = Candidate(key=(st.service, ""), kind="latency", changed=1.0, moved=True,
                                 fixed_change=st.sure)
                into.spans = st.burst_spans[:3]
                into.excess_ms = [0.0] * len(into.spans)
                into.gap_ms = [0.0] * len(into.spans)
                into.traces = {s.trace_id for s in into.spans}
                into.change = st.describe()
                cands.append(into)
            # its callers' slowdown is all the change it shows: it takes that score whole
            into.score += x.score
            into.votes += x.votes
            x.score *= KEEP
            into.change += (f"; {x.key[0]}'s slow requests ended right after its bursts"
                            f" ({sure:.1%} sure): they waited on it")
    return cands
