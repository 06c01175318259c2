"""Structural anomalies: how each operation's requests are shaped (the calls and steps it
makes, how many of each, how long it runs), baseline vs window.

Without status codes an exception or a wrong return value shows only so: calls an operation
used to make and no longer makes, new calls, a changed fan-out, a span ending early. Each
change carries how sure a test (binomial / Mann-Whitney) is of it and on how many requests.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from capture.span import Span
from tools.base import peer_of
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, SURE, _quantile, confidence, hypergeom_sf, mann_whitney_p
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
UNLINKED_COVER = 0.5  # calls seen unlinked covering this share of the missing ones: made unseen
SHORT_SURE = 0.95  # a drop this sure counts when the requests lacking the call also ended early
QUIT = 0.5  # a request quit after its last call when its time after it fell below this share of
QUIT_MS = 0.5  # the baseline's shortest (and by this many ms at least)
STRAY_NS = 1_000_000  # a call this far outside its request's span was linked to the wrong request
STRAY_SHARE = 0.1  # an operation with this share of such requests: its call pattern is not read


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
    stray: bool = False  # a call of it lies outside its own span: linked to the wrong request


@dataclass
class ShapeChange:
    service: str
    operation: str
    change: str  # dropped | new | fanout | early | quit
    what: str  # the call or step signature, or "" for early
    before: float  # share of requests (dropped/new), calls per request (fanout), p50 ms (early)
    now: float
    count: tuple[int, int]  # requests in baseline, window
    sure: float
    examples: list[Span] = field(default_factory=list)  # the operation's spans in the window
    after: str | None = None  # dropped, quit: the callee whose answer most requests stopped after

    def describe(self) -> str:
        where = f"{self.service} `{self.operation}`"
        n = f"({self.count[0]} -> {self.count[1]} requests, {self.sure:.0%} sure)"
        if self.change == "dropped":
            stop = f", stopping right after {self.after} answered" if self.after else ""
            return (f"{where} no longer calls {self.what}: {self.before:.0%} -> {self.now:.0%} of"
                    f" requests{stop} {n}")
        if self.change == "quit":
            return (f"{where} ends right after {self.after} answered `{self.what.split(' ', 1)[-1]}`"
                    f" in {self.now:.0%} of requests, sooner than nearly any baseline request did"
                    f" ({self.before:.1f} ms or more after its last call) {n}")
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
                    r.stray |= c.start_time_unix_nano < s.start_time_unix_nano - STRAY_NS or \
                        c.end_time_unix_nano > s.end_time_unix_nano + STRAY_NS
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
    """One-sided p-value that the share k1/n1 is above (more) or below the baseline's k0/n0 as
    this window's capture would have seen it (k0 scaled by `seen`). Fisher's exact test: the
    baseline's share is itself a sample, so 2 of 9 against 13 of 21 is a chance of about 5 %,
    not the near certainty a test against a known share of 2/9 says."""
    k0 = min(n0, max(0, round(k0 * seen)))
    if more:
        return hypergeom_sf(k1, n1, k1 + k0, n1 + n0)
    return hypergeom_sf(n1 - k1, n1, (n1 - k1) + (n0 - k0), n1 + n0)


def unlinked(sample: Sample) -> Counter:
    """Calls seen without the request they were made for, per (service, call signature): the
    capture saw the call but could not link it to its caller's request (its parent span lost,
    or a thread it could not follow). A request lacking such a call made it unseen."""
    out: Counter = Counter()
    for tree in sample.trees:
        for s in tree.spans:
            if s.kind in ("CLIENT", "PRODUCER") and tree.by_id.get(s.parent_span_id or "") is None:
                out[(s.service, f"{_callee(tree, s)} {s.name}")] += 1
    return out


def _unseen_cover(missing: float, loose: float) -> bool:
    """Whether calls seen unlinked (beyond the other window's share of them) account for at
    least UNLINKED_COVER of the calls missing from requests: made, not skipped."""
    return missing > 0 and loose >= UNLINKED_COVER * missing


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


def _skipped_work(op: Op, rs: list[Request], bs: list[Request], found: list[ShapeChange]) -> bool:
    """Whether an operation ending sooner may have skipped work: it stopped making a call (found),
    or it calls nothing (only its length can tell). One that makes every call it made and only
    got faster is faster, not failing; nor is a query answered sooner (a cache, a plan)."""
    if "db.system" in rs[0].span.attributes:
        return False
    return not any(r.calls for r in bs) or any(
        c.change == "dropped" and (c.service, c.operation) == op for c in found)


def _strays(rs: list[Request]) -> bool:
    """Whether the capture linked the operation's calls to the wrong requests often enough
    (calls outside their request's span) that which request made which call cannot be read."""
    return sum(r.stray for r in rs) >= STRAY_SHARE * len(rs)


def _cut_short(p_share: float, missing: list[Request], having: list[Request]) -> float:
    """How sure that requests lacking a call stopped before it: the share making it fell (p_share)
    and the requests lacking it ended sooner than those making it (Mann-Whitney), two tests that
    a capture losing spans at random passes only by chance, combined by Fisher's method."""
    if len(missing) < 2 or len(having) < MIN_SAMPLE:
        return confidence(p_share)
    short, full = ([r.span.duration_ns / 1e6 for r in x] for x in (missing, having))
    if _quantile(sorted(short), 0.5) > EARLY * _quantile(sorted(full), 0.5):
        return confidence(p_share)
    both = max(p_share * mann_whitney_p(full, short), 1e-300)
    return confidence(both * (1 - math.log(both)))


def _quit(op: Op, rs: list[Request], bs: list[Request]) -> ShapeChange | None:
    """Requests that ended right after their last call answered, sooner than any baseline request
    ended after its last call (its work after the call, skipped): they quit on that answer, as a
    caller does on a wrong value. Fisher's exact test on how many did against the baseline, and
    most must agree on the callee (its answer is what they quit on)."""
    def tail(r: Request) -> float:
        return (r.span.end_time_unix_nano - r.last_end) / 1e6

    # a call ending after its request did was linked to the wrong request: it tells nothing
    now, before = ([r for r in x if r.last and r.last_end <= r.span.end_time_unix_nano] for x in (rs, bs))
    if len(now) < MIN_SAMPLE or len(before) < MIN_SAMPLE:
        return None
    b = sorted(tail(r) for r in before)
    low = b[int(0.01 * len(b))]  # the baseline's shortest (its 1 % quantile past 100 requests)
    line = min(QUIT * low, low - QUIT_MS)
    quit = [r for r in now if tail(r) < line]
    k0 = sum(1 for x in b if x < line)
    if len(quit) < 2 or len(quit) < NEW_SHARE * len(now):
        return None
    sure = confidence(hypergeom_sf(len(quit), len(now), len(quit) + k0, len(now) + len(before)))
    last = Counter(r.last for r in quit).most_common(1)[0]
    if sure < SURE or last[1] < AGREE * len(quit):
        return None
    callee = next(r.last_callee for r in quit if r.last == last[0])
    return ShapeChange(op[0], op[1], "quit", last[0], low, len(quit) / len(now), (len(bs), len(rs)),
                       sure, [r.span for r in quit[:5]], callee)


def shape_changes(cur: Sample, base: Sample) -> list[ShapeChange]:
    """Every significant change of an operation's call pattern, surest first."""
    now, before = requests(cur), requests(base)
    seen = _seen_share(now, before)
    loose1, loose0 = unlinked(cur), unlinked(base)
    out: list[ShapeChange] = []
    for op, rs in now.items():
        bs = before.get(op, [])
        n1, n0 = len(rs), len(bs)
        if n1 < MIN_SAMPLE or n0 < MIN_SAMPLE or _strays(rs) or _strays(bs):
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
                p = _share_p(k1, n1, k0, n0, seen, more=False)
                sure = confidence(p)
                missing = [r for r in rs if not r.calls[sig]]
                if sure < SURE and sure >= SHORT_SURE:
                    sure = _cut_short(p, missing, [r for r in rs + bs if r.calls[sig]])
                loose = loose1[(op[0], sig)] - loose0[(op[0], sig)] * n1 / n0
                if sure >= (SURE if s1 <= DROP_SHARE * e0 else SURER) and \
                        not _unseen_cover((e0 - s1) * n1, loose) and \
                        not _made_unseen(missing, [r for r in rs if r.calls[sig]] or
                                         [r for r in bs if r.calls[sig]], sig):
                    out.append(ShapeChange(op[0], op[1], "dropped", sig, s0, s1, (n0, n1), sure,
                                           [r.span for r in missing[:5]], _stopped_after(missing)))
                continue
            if s1 - e0 >= NEW_SHARE and k1 >= 2 and s0 < NEW_BEFORE:
                sure = confidence(_share_p(k1, n1, k0, n0, seen, more=True))
                # the baseline's requests lacking it, where its calls were seen unlinked: made then too
                loose = loose0[(op[0], sig)] - loose1[(op[0], sig)] * n0 / n1
                if sure >= SURE and not _unseen_cover((s1 - e0) * n0, loose):
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
        if p50[1] <= EARLY * p50[0] and p50[0] - p50[1] >= 0.5 and _skipped_work(op, rs, bs, out):
            sure = confidence(mann_whitney_p(d0, d1))
            if sure >= SURE:
                ex = sorted(rs, key=lambda r: r.span.duration_ns)
                out.append(ShapeChange(op[0], op[1], "early", "", p50[0], p50[1], (n0, n1), sure,
                                       [r.span for r in ex[:5]]))
        q = _quit(op, rs, bs)
        if q is not None:
            out.append(q)
    out.sort(key=lambda c: (-c.sure, -abs(c.now - c.before)))
    return out
