"""Structural anomalies: how each operation's requests are shaped (the calls and steps it
makes, how many of each, how long it runs), baseline vs window.

Without status codes an exception or a wrong return value shows only so: calls an operation
used to make and no longer makes, new calls, a changed fan-out, a span ending early. Each
change carries how sure a test (binomial / Mann-Whitney) is of it and on how many requests.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from capture.span import Span
from tools.base import peer_of
from tools.sampling import Sample
from tools.stats import (MIN_SAMPLE, SURE, _quantile, binom_sf, confidence, mann_whitney_p,
                         proportion_p)
from tools.trace import Tree

Op = tuple[str, str]  # (service, operation)
DROP_SHARE = 0.7  # a call now made by under this share of the requests that used to make it
DROP_DELTA = 0.05  # or by this many fewer, when the test is surer still
SURER = 0.999
AGREE = 0.6  # share of requests that must have stopped after the same callee to name it
NEW_SHARE = 0.1  # a new call made by at least this many more of the requests
NEW_BEFORE = 0.5  # and made by fewer than this share before (a call most made is not new)
SEEN_PAIRS = 4  # (operation, call) pairs needed to read a capture-wide loss from their median
EARLY = 0.7  # p50 duration below this share of the baseline's: the operation ends early


@dataclass
class Request:
    """One execution of an operation: the calls and steps it made in its own service."""
    span: Span
    calls: Counter = field(default_factory=Counter)  # signature -> times
    last: str | None = None  # the call that ended last (its callee and name)
    last_end: int = 0
    last_callee: str | None = None
    lookups: set = field(default_factory=set)  # signatures of name lookups (DNS)
    call_ns: Counter = field(default_factory=Counter)  # signature -> time in those calls


@dataclass
class ShapeChange:
    service: str
    operation: str
    change: str  # dropped | new | fanout | early
    what: str  # the call or step signature, or "" for early
    before: float  # share of requests (dropped/new), calls per request (fanout), p50 ms (early)
    now: float
    count: tuple[int, int]  # requests in baseline, window
    sure: float
    examples: list[Span] = field(default_factory=list)  # the operation's spans in the window
    after: str | None = None  # dropped: the callee whose answer most requests stopped after

    def describe(self) -> str:
        where = f"{self.service} `{self.operation}`"
        n = f"({self.count[0]} -> {self.count[1]} requests, {self.sure:.0%} sure)"
        if self.change == "dropped":
            stop = f", stopping right after {self.after} answered" if self.after else ""
            return (f"{where} no longer calls {self.what}: {self.before:.0%} -> {self.now:.0%} of"
                    f" requests{stop} {n}")
        if self.change == "new":
            return f"{where} makes a new call {self.what}: {self.before:.0%} -> {self.now:.0%} of requests {n}"
        if self.change == "fanout":
            return f"{where} calls {self.what} {self.before:.1f} -> {self.now:.1f} times per request {n}"
        return f"{where} ends early: p50 {self.before:.1f} -> {self.now:.1f} ms {n}"


def _callee(tree: Tree, s: Span) -> str:
    # A consumer of a publish is not its callee (it answers nothing): the broker is.
    linked = [c for c in tree.children[s.span_id] if c.service != s.service and c.kind == "SERVER"]
    if linked:
        return linked[0].service
    return peer_of(s) or "?"


def requests(sample: Sample) -> dict[Op, list[Request]]:
    """Per operation (a span entering its service), what each request of it did there."""
    out: dict[Op, list[Request]] = {}
    for tree in sample.trees:
        for s in tree.spans:
            parent = tree.by_id.get(s.parent_span_id or "")
            if parent is not None and parent.service == s.service:
                continue  # not an entry into its service
            if s.kind in ("CLIENT", "PRODUCER") and parent is None:
                continue  # a caller seen without its own request: its calls are its work
            r = Request(s)
            stack = [(s, c) for c in tree.children[s.span_id]]
            while stack:
                p, c = stack.pop()
                if c.service != s.service:
                    # A server under a span that is no call: data without client spans. Under a
                    # call it is that call's callee; a consumer answers nothing.
                    if c.kind == "SERVER" and p.kind not in ("CLIENT", "PRODUCER"):
                        r.calls[f"{c.service} {c.name}"] += 1
                    continue
                if c.kind in ("CLIENT", "PRODUCER"):
                    sig = f"{_callee(tree, c)} {c.name}"
                    r.calls[sig] += 1
                    r.call_ns[sig] += c.duration_ns
                    if "dns.question.name" in c.attributes:
                        r.lookups.add(sig)
                    if c.kind == "CLIENT" and c.end_time_unix_nano >= r.last_end:
                        r.last, r.last_end = sig, c.end_time_unix_nano
                        r.last_callee = _callee(tree, c)
                else:
                    r.calls[f"step {c.name}"] += 1
                stack += [(c, k) for k in tree.children[c.span_id]]
            out.setdefault((s.service, s.name), []).append(r)
    return out


def _made_unseen(missing: list[Request], having: list[Request], sig: str) -> bool:
    """Requests that lack a call yet took as long as those that made it: the call was made and
    its spans were lost (a capture that drops events), not skipped. A request that really
    stopped before the call is shorter by about the call's time. Unknown (False) when the
    call is too short next to the request to tell."""
    if len(missing) < MIN_SAMPLE or len(having) < MIN_SAMPLE:
        return False
    call = _quantile(sorted(r.call_ns[sig] / 1e6 for r in having), 0.5)
    full = _quantile(sorted(r.span.duration_ns / 1e6 for r in having), 0.5)
    if call < 0.2 * full or call < 1.0:
        return False
    short = _quantile(sorted(r.span.duration_ns / 1e6 for r in missing), 0.5)
    return short > full - 0.5 * call


def _share_p(k1: int, n1: int, k0: int, n0: int, seen: float, more: bool) -> float:
    """proportion_p against the baseline share scaled by how much of it every pair kept."""
    if seen == 1.0:
        return proportion_p(k1, n1, k0, n0, more=more)
    p0 = min(max((k0 + 0.5) / (n0 + 1) * seen, 1e-6), 1 - 1e-6)
    return binom_sf(k1, n1, p0) if more else binom_sf(n1 - k1, n1, 1 - p0)


def _stopped_after(missing: list[Request]) -> str | None:
    """The callee most of these requests called last before they stopped, if most agree."""
    lasts = Counter(r.last_callee for r in missing)
    if not missing or not lasts:
        return None
    callee, n = lasts.most_common(1)[0]
    return callee if callee and n >= AGREE * len(missing) else None


def _shares(rs: list[Request], bs: list[Request], sig: str) -> tuple[int, int, float, float]:
    k1 = sum(1 for r in rs if r.calls[sig])
    k0 = sum(1 for r in bs if r.calls[sig])
    return k1, k0, k1 / len(rs), k0 / len(bs)


def _seen_share(now: dict[Op, list[Request]], before: dict[Op, list[Request]]) -> float:
    """How the share of requests making their usual calls moved everywhere at once: a capture
    that lost more (or fewer) spans in one window than the other, not a change of any
    operation. The median over every (operation, call) pair, so one faulty operation among
    several does not move it; 1 when there are too few pairs to tell."""
    ratios = []
    for op, rs in now.items():
        bs = before.get(op, [])
        if len(rs) < MIN_SAMPLE or len(bs) < MIN_SAMPLE:
            continue
        for sig in set().union(*(r.calls for r in bs)) - set().union(*(r.lookups for r in rs + bs)):
            k1, k0, s1, s0 = _shares(rs, bs, sig)
            if s0 >= 0.3:
                ratios.append(s1 / s0)
    if len(ratios) < SEEN_PAIRS:
        return 1.0
    ratios.sort()
    return min(max(_quantile(ratios, 0.5), 0.5), 1.5)


def shape_changes(cur: Sample, base: Sample) -> list[ShapeChange]:
    """Every significant change of an operation's call pattern, surest first."""
    now, before = requests(cur), requests(base)
    seen = _seen_share(now, before)
    out: list[ShapeChange] = []
    for op, rs in now.items():
        bs = before.get(op, [])
        n1, n0 = len(rs), len(bs)
        if n1 < MIN_SAMPLE or n0 < MIN_SAMPLE:
            continue
        examples = sorted((r.span for r in rs), key=lambda s: s.start_time_unix_nano)
        sigs = set().union(*(r.calls for r in rs), *(r.calls for r in bs))
        # Whether a request looks a name up depends on the resolver's cache (its TTL), not
        # on how the request went: lookups coming and going are no change of shape. A failed
        # lookup still shows, in the calls that stop after it.
        sigs -= set().union(*(r.lookups for r in rs), *(r.lookups for r in bs))
        for sig in sorted(sigs):
            k1, k0, s1, s0 = _shares(rs, bs, sig)
            # measured against what the baseline share would be with this window's capture
            e0 = min(s0 * seen, 1.0)
            if s0 >= 0.3 and e0 - s1 >= DROP_DELTA:
                sure = confidence(_share_p(k1, n1, k0, n0, seen, more=False))
                missing = [r for r in rs if not r.calls[sig]]
                if sure >= (SURE if s1 <= DROP_SHARE * e0 else SURER) and \
                        not _made_unseen(missing, [r for r in rs if r.calls[sig]] or
                                         [r for r in bs if r.calls[sig]], sig):
                    out.append(ShapeChange(op[0], op[1], "dropped", sig, s0, s1, (n0, n1), sure,
                                           [r.span for r in missing[:5]], _stopped_after(missing)))
                continue
            if s1 - e0 >= NEW_SHARE and k1 >= 2 and s0 < NEW_BEFORE:
                sure = confidence(_share_p(k1, n1, k0, n0, seen, more=True))
                if sure >= SURE:
                    ex = [r.span for r in rs if r.calls[sig]]
                    out.append(ShapeChange(op[0], op[1], "new", sig, s0, s1, (n0, n1), sure, ex[:5]))
                continue
            c1 = [r.calls[sig] for r in rs if r.calls[sig]]
            c0 = [r.calls[sig] for r in bs if r.calls[sig]]
            if len(c1) >= MIN_SAMPLE and len(c0) >= MIN_SAMPLE:
                m1, m0 = sum(c1) / len(c1), sum(c0) / len(c0)
                if m1 >= 1.5 * m0 or m1 <= m0 / 1.5:
                    p = mann_whitney_p(c1, c0) if m1 > m0 else mann_whitney_p(c0, c1)
                    if confidence(p) >= SURE:
                        out.append(ShapeChange(op[0], op[1], "fanout", sig, m0, m1, (n0, n1),
                                               confidence(p), examples[:5]))
        d1 = sorted(r.span.duration_ns / 1e6 for r in rs)
        d0 = sorted(r.span.duration_ns / 1e6 for r in bs)
        p50 = (_quantile(d0, 0.5), _quantile(d1, 0.5))
        if p50[1] <= EARLY * p50[0] and p50[0] - p50[1] >= 0.5:
            sure = confidence(mann_whitney_p(d0, d1))
            if sure >= SURE:
                ex = sorted(rs, key=lambda r: r.span.duration_ns)
                out.append(ShapeChange(op[0], op[1], "early", "", p50[0], p50[1], (n0, n1), sure,
                                       [r.span for r in ex[:5]]))
    out.sort(key=lambda c: (-c.sure, -abs(c.now - c.before)))
    return out
