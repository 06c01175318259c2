"""Requests held and released together (tools.release) as candidates: a callee that held them
(stopped: silent on every connection while they waited, their calls to it let go at once)
takes the slowdown of the services whose requests it held, wherever the capture put their
wait (their own time, before a call whose span begins only at the release). Moves scores
after propagation; a release names who held the requests, which the walks, reading one
request at a time, cannot.
"""
from __future__ import annotations

from guardian.investigate.rank import FAMILY, Candidate
from guardian.investigate.samples import Walker
from tools.held import holds
from tools.release import Release
from tools.sampling import Sample

RELEASE_VOTES = 1.0  # per release seen, up to RELEASE_CAP: a pattern across requests, not a test
RELEASE_CAP = 4
KEEP = 0.2  # of its score, what a held service keeps when the one that held it takes it


def hand_over(walker: Walker, cands: list[Candidate], found: list[Release]) -> list[Candidate]:
    """Each release's holder becomes (or joins) a latency candidate with the held services'
    slowdown; returns the candidates."""
    for r in found:
        by = walker.canon(r.by)
        if by == walker.canon(r.service):
            # held on itself: as likely its pool or a lock its requests queue for as its CPU;
            # its own slowdown names it already
            continue
        into = next((c for c in cands if c.key[0] == by and FAMILY[c.kind] == 1
                     and c.kind != "network"), None)
        if into is None:
            into = Candidate(key=(by, ""), kind="latency", changed=1.0, moved=True, fixed_change=1.0)
            cands.append(into)
        votes = RELEASE_VOTES * min(r.releases, RELEASE_CAP)
        into.votes += votes
        into.score += votes
        into.changed = max(into.changed, 1.0)
        for s in r.examples[:3]:
            if s.trace_id not in into.traces:
                into.spans.append(s)
                into.excess_ms.append(r.idle_ms)
                into.gap_ms.append(0.0)
                into.traces.add(s.trace_id)
        into.change = f"{r.describe()}; {into.change}" if into.change else r.describe()
        for x in cands:
            if x is into or x.key[0] != r.service or FAMILY[x.kind] != 1 or x.kind == "network":
                continue
            into.score += (1 - KEEP) * x.score
            x.score *= KEEP
    return cands


def held_on_itself(walker: Walker, cands: list[Candidate], cur: Sample, base: Sample) -> None:
    """Say how a service held its own requests (tools.held), on its latency candidate: on its
    CPU quota's period, stopped, or in a queue (a lock, a pool). Said, not ranked: counting a
    service held on its CPU or stopped as stalled changed no tuning case (docs/investigating.md),
    so it is read for the candidates a report names, and only when one of them is a slowdown."""
    slow = [c for c in cands if FAMILY[c.kind] == 1 and c.kind != "network"]
    if not slow:
        return
    for h in holds(cur, base):
        svc = walker.canon(h.service)
        c = next((c for c in slow if c.key[0] == svc), None)
        text = h.describe()
        if c is not None and text not in c.change:
            c.change = f"{c.change}; {text}" if c.change else text
