"""Calls whose answers came one TCP retransmission timeout late: packets lost on the path
back from a callee. A lost segment is sent again after the retransmission timeout (Linux: at
least 200 ms, doubled for each resend lost in turn; ~200-220 ms on a short path), so a call
that lost its answer ends about that much after the callee answered, while the other calls
to it are as before and nothing else moved.

Rule 1: only the answer's leg counts (callee SERVER end -> caller CLIENT end): the callee
        answered on time, and only the path (or a caller slow to read) can hold it after.
        A lost request looks like a stalled callee (request unread): tools.gaps reads that.
Rule 2: the excess sits on an RTO multiple (1, 2 or 3 timeouts: one loss, two losses, a
        resend lost once more), and most of the edge's far-too-late answers sit there: a
        queue or a slow reader spreads its delays, a timeout does not.
Rule 3: the rest of the calls to it are as before (their answers as prompt as the baseline's),
        and there are more such calls than the baseline of every quiet edge gives by chance.
Rule 4: its callers' other callees answered on time (else the caller is slow to read). A
        caller that calls nothing else gives no control: it counts when it serves requests
        itself, not when it is a client alone (a load script's late reads are its own).

Read from sampled linked calls (tools.gaps.calls); ranks nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tools.gaps import Call, calls
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, SURE, _quantile, binom_sf, confidence

RTO_MS = (195.0, 235.0)  # one retransmission timeout on a short path (min RTO 200 ms + RTT)
MULTIPLES = (1, 2, 3)  # one loss, two losses in one call, a resend lost again (200 + 400)
FAR_MS = 150.0  # an answer this much later than the edge's typical one is far too late
QUIET_MS = 50.0  # an edge whose baseline answers (p90) came within this never queues long
MIN_HITS = 2  # one late answer is one lost packet: a busy host drops one now and then
FEW_HITS = 3  # fewer calls than this carry it: said so, and not sure
CLUSTERED = 0.5  # at least this share of the edge's far-too-late answers on RTO multiples


@dataclass
class Retransmits:
    server: str
    operation: str  # the server operation most of the late answers were for
    callers: list[str]
    hits: int  # calls now whose answer came an RTO multiple late
    count: tuple[int, int]  # calls on these edges: baseline, now
    base_hits: int  # baseline calls on these edges that did
    far: int  # calls now whose answer came far too late, on an RTO multiple or not
    sure: float  # more such calls than the baseline of every quiet edge gives by chance
    excess_ms: list[float] = field(default_factory=list)  # of each hit, longest first
    examples: list[Call] = field(default_factory=list)

    @property
    def few(self) -> bool:
        return self.hits < FEW_HITS

    def describe(self) -> str:
        late = ", ".join(f"{x:.0f}" for x in self.excess_ms[:4])
        few = f"; only {self.hits} calls carry it: few to go on, so not sure" if self.few else ""
        return (f"{self.hits} of {self.count[1]} calls to {self.server} got their answer one TCP"
                f" retransmission timeout or more late ({late} ms after {self.server} answered;"
                f" {self.base_hits} of {self.count[0]} baseline calls), while"
                f" {', '.join(self.callers[:3])}'s other calls did not: packets lost on the path"
                f" to {self.server} ({self.sure:.1%} sure){few}")


def _on_rto(excess_ms: float) -> bool:
    return any(m * RTO_MS[0] <= excess_ms <= m * RTO_MS[1] for m in MULTIPLES)


def _late(cs: list[Call]) -> list[tuple[Call, float]]:
    """Each call with its answer's delay beyond the edge's typical answer (its median)."""
    typical = _quantile(sorted(c.after_ns / 1e6 for c in cs), 0.5)
    return [(c, c.after_ns / 1e6 - typical) for c in cs]


def _by_edge(s: Sample) -> dict[tuple[str, str], list[Call]]:
    out: dict[tuple[str, str], list[Call]] = {}
    for c in calls(s):
        out.setdefault((c.client.service, c.server.service), []).append(c)
    return out


def _hits(cs: list[Call]) -> tuple[list[tuple[Call, float]], int]:
    """Calls whose answer came an RTO multiple late, and how many came far too late at all."""
    late = _late(cs)
    return [(c, x) for c, x in late if _on_rto(x)], sum(1 for _, x in late if x >= FAR_MS)


def retransmits(cur: Sample, base: Sample) -> list[Retransmits]:
    """Callees whose answers came an RTO late on calls from callers whose other calls did not;
    surest first. Those resting on one call are left out (MIN_HITS)."""
    now, before = _by_edge(cur), _by_edge(base)
    quiet = {e for e, cs in before.items()
             if _quantile(sorted(c.after_ns / 1e6 for c in cs), 0.9) <= QUIET_MS}
    # the chance of an answer an RTO late on an ordinary edge, from every quiet edge's baseline
    before_k = {e: len(_hits(cs)[0]) for e, cs in before.items()}  # baseline calls an RTO late
    pooled_n = sum(len(before[e]) for e in quiet)
    pooled_k = sum(before_k[e] for e in quiet)
    p0 = (pooled_k + 1) / (pooled_n + 2)
    hits = {e: _hits(cs) for e, cs in now.items()}
    by_server: dict[str, list[tuple[str, str]]] = {}
    controlled: set[str] = set()
    serving = {s.service for s in cur.spans if s.kind in ("SERVER", "CONSUMER")}
    for e, (h, far) in hits.items():
        if not h or (e in before and e not in quiet):
            continue  # an edge whose answers queued in the baseline already: its delays spread
        if len(h) < CLUSTERED * far:
            continue  # most far-too-late answers off the RTO multiples: a queue, a slow reader
        hit = {id(c) for c, _ in h}
        rest = sorted(x for c, x in _late(now[e]) if id(c) not in hit)
        if rest and _quantile(rest, 0.9) > QUIET_MS:
            continue  # the other calls' answers came late too: not a few lost packets
        others = [o for o in now if o[0] == e[0] and o[1] != e[1]]
        k_o, n_o = sum(len(hits[o][0]) for o in others), sum(len(now[o]) for o in others)
        if k_o and k_o / max(n_o, 1) >= 0.5 * len(h) / len(now[e]):
            continue  # the caller's other callees answered late as often: the caller reads late
        if n_o >= MIN_SAMPLE or (not others and e[0] in serving):
            controlled.add(e[1])
        by_server.setdefault(e[1], []).append(e)
    out = []
    for server, edges in by_server.items():
        if server not in controlled and len(edges) < 2:
            continue  # one caller that only sends (a load script): its own late reads, maybe
        got = sorted((x for e in edges for x in hits[e][0]), key=lambda cx: -cx[1])
        n = sum(len(now[e]) for e in edges)
        n0 = sum(len(before.get(e, [])) for e in edges)
        k0 = sum(before_k.get(e, 0) for e in edges)
        if len(got) < MIN_HITS:
            continue
        sure = confidence(binom_sf(len(got), n, p0))
        if sure < SURE:
            continue
        ops: dict[str, int] = {}
        for c, _ in got:
            ops[c.server.name] = ops.get(c.server.name, 0) + 1
        out.append(Retransmits(
            server=server, operation=max(ops, key=ops.get), callers=sorted(e[0] for e in edges),
            hits=len(got), count=(n0, n), base_hits=k0, far=sum(hits[e][1] for e in edges),
            sure=sure, excess_ms=[x for _, x in got], examples=[c for c, _ in got[:5]]))
    out.sort(key=lambda r: (-r.sure, -r.hits))
    return out
