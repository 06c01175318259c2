"""Ranking candidate root causes: how much each one costs a request, and propagation (a root
cause explains the symptoms upstream of it: the lowest changed candidate in the call graph
wins). Candidates come from candidates.py; nothing here reads spans.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.span import Span
from capture.store.api import SpanFilter, TimeWindow
from guardian.investigate.samples import Walker
from guardian.investigate.signals import Signals
from guardian.investigate.walk import Key, entry_of
from tools.base import peer_of


@dataclass
class Candidate:
    key: Key
    kind: str
    votes: float = 0.0
    spans: list[Span] = field(default_factory=list)
    excess_ms: list[float] = field(default_factory=list)
    gap_ms: list[float] = field(default_factory=list)  # of each excess, time in the callee's network
    traces: set[str] = field(default_factory=set)
    ops: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    change: str = ""
    fixed_change: float | None = None  # how much it changed, when a test already said so
    walked: bool = False  # sampled requests were walked to it
    answered: list[Span] = field(default_factory=list)  # callers' spans failing on its answers
    changed: float = 1.0  # how much it changed itself (change._change): 0.15 not at all
    shown: bool = False  # a test showed its own failure rate grew (enough to name it alone)
    moved: bool = False  # its typical call (or its tail, by a felt delay) slowed past baseline noise
    stuck: bool = False  # its own calls, calling nothing, were stuck far beyond any baseline call
    stuck_ms: float = 0.0  # the longest such call's excess over its baseline p50
    calls: tuple[int, int] | None = None  # calls its change was read on: baseline, window
    pooled: bool = False  # its requests waited, calling nothing, for its own pool (tools.pool)


FAMILY = {"error": 0, "dependency": 0, "latency": 1, "saturation": 1, "network": 1, "traffic": 2}
EXPLAINS = 0.2  # a changed candidate below with this share of a symptom's score explains it
CHANGED = 0.5  # and changed at least this much itself (a candidate that did not change explains nothing)


def absorb(into: Candidate, c: Candidate) -> None:
    into.votes += c.votes
    for op, w in c.ops.items():
        into.ops[op] = into.ops.get(op, 0.0) + w
    into.traces |= c.traces
    into.spans += c.spans
    into.excess_ms += c.excess_ms
    into.gap_ms += c.gap_ms
    into.walked = into.walked or c.walked
    into.stuck = into.stuck or c.stuck
    into.stuck_ms = max(into.stuck_ms, c.stuck_ms)
    into.answered += c.answered
    into.fixed_change = max(into.fixed_change or 0.0, c.fixed_change or 0.0) or None
    into.calls = into.calls or c.calls
    into.pooled = into.pooled or c.pooled


def reach(walker: Walker, service: str) -> set[str]:
    calls: dict[str, set[str]] = {}
    for w in (walker.window, walker.baseline):
        for e in walker.store.service_map(w):
            calls.setdefault(walker.canon(e.client), set()).add(walker.canon(e.server))
    seen, stack = set(), [service]
    while stack:
        for b in calls.get(stack.pop(), ()):
            if b not in seen:
                seen.add(b)
                stack.append(b)
    return seen


def downstream_bonus(walker: Walker, cands: list[Candidate]) -> None:
    """Of two candidates of one kind where one calls the other, the callee is likelier the
    cause (it matters when calls are not linked into one trace and walks stop early)."""
    calls: dict[str, set[str]] = {}
    for e in walker.store.service_map(walker.window):
        calls.setdefault(walker.canon(e.client), set()).add(walker.canon(e.server))

    def reach(a: str) -> set[str]:
        seen, stack = set(), [a]
        while stack:
            for b in calls.get(stack.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
        return seen

    for c in cands:
        if c.changed < 1.0 and not c.moved:
            continue  # below others but not clearly changed itself: no likelier for being below
        ups = {o.key[0] for o in cands if FAMILY[o.kind] == FAMILY[c.kind]
               and o.key[0] != c.key[0] and c.key[0] in reach(o.key[0])}
        c.score *= 1 + 0.5 * len(ups)


def propagate(walker: Walker, cands: list[Candidate], sig: Signals) -> None:
    """A root cause explains the symptoms upstream of it: a candidate's score goes to the
    lowest changed candidate below it in the call graph. A service that stalls (its requests
    wait unread) is itself below nothing: its calls look slow because it is slow to make and
    read them, so the slowness of its callees, as it saw them, is its own."""
    below_of = {c.key[0]: reach(walker, c.key[0]) for c in cands}
    timeouts: dict[int, bool] = {}

    def timed(y: Candidate) -> bool:  # read once per candidate: it queries the store
        if id(y) not in timeouts:
            timeouts[id(y)] = timed_out(walker, y)
        return timeouts[id(y)]

    for x in sorted(cands, key=lambda c: -c.score):
        if x.score <= 0:
            continue
        if x.key[0] in sig.stalled:
            for y in cands:
                if y.key[0] != x.key[0] and FAMILY[y.kind] == 1 and y.key[0] in below_of[x.key[0]] \
                        and not (below_of[y.key[0]] & sig.stalled):
                    x.score += 0.8 * y.score
                    y.score *= 0.2
            continue
        if x.pooled:
            # Its requests waited for its own pool, calling nothing, while the database's
            # calls were not stuck (pools.add_pools): held on itself, a queue of its own. The
            # calls its other requests made, however long the capture paired them (a
            # connection held idle stretches them), explain nothing of that wait.
            continue
        below = [y for y in cands if y.key[0] != x.key[0] and y.key[0] in below_of[x.key[0]]
                 and (y.score >= EXPLAINS * x.score or gave_up(y) or timed(y))
                 and y.kind != "traffic"
                 and explains(y, x) and y.changed >= CHANGED]
        below = [y for y in below if reached_op(walker, y, x, below_of[x.key[0]])]
        waited = {id(y): waits_on(walker, y, x) for y in below}
        # A small candidate below explains nothing large above, unless its own calls gave up
        # waiting (a lock) and x's requests were seen waiting on it: then x's size is its own.
        below = [y for y in below if y.score >= EXPLAINS * x.score or waited[id(y)]]
        # Shown to be waited on beats merely below: a service x's requests never reached
        # (their calls gave up before) explains nothing they were seen waiting for.
        below = [y for y in below if waited[id(y)]] if any(waited.values()) else \
            [y for y in below if waited[id(y)] is None]
        if not below:
            continue
        # the lowest: one that has no other explaining candidate below it
        low = [y for y in below if not any(z is not y and z.key[0] in below_of[y.key[0]] for z in below)]
        best = max(low or below, key=lambda y: y.score)
        best.score += 0.8 * x.score
        x.score *= 0.2


def gave_up(y: Candidate) -> bool:
    """Some of y's own calls failed after waiting long (cancelled, timed out) while slow:
    something held them there, not spans paired too long by the capture."""
    return FAMILY[y.kind] == 1 and any(
        s.service == y.key[0] and s.kind != "CLIENT" and s.status_code == "ERROR"
        and s.duration_ns >= GAVE_UP_NS for s in y.spans)


TIMEOUT_CALLS = 3  # calls of y ending at one long bound, at least, to read a timeout there
TIMEOUT_SPREAD = 0.01  # within this share of each other: a bound, not the spread of slow work


def timed_out(walker: Walker, y: Candidate) -> bool:
    """Some of y's own calls in its changed operations ended after waiting long, all at one
    bound (a lock or statement timeout gives up at the same instant after it began), where
    its baseline calls did not: they gave up waiting, as a failure's status says where spans
    carry one. Slow work ends anywhere; a timeout ends where it is set. Said on y's change."""
    if FAMILY[y.kind] != 1:
        return False
    ops = [op for op in y.ops if op] or ([y.key[1]] if y.key[1] else [])
    now = _bound(walker, y.key[0], ops, walker.window)
    if not ops or now[0] < TIMEOUT_CALLS or \
            _bound(walker, y.key[0], ops, walker.baseline)[0] >= TIMEOUT_CALLS:
        return False
    text = f"{now[0]} of its calls ended at {now[1]:.0f} ms, as one: they gave up waiting (a timeout)"
    if text not in y.change:
        y.change = f"{y.change}; {text}" if y.change else text
    return True


def _bound(walker: Walker, service: str, ops: list[str], w: TimeWindow) -> tuple[int, float]:
    """The most calls of service's ops in w lasting GAVE_UP_NS or more that ended within
    TIMEOUT_SPREAD of each other's length, and that length (ms)."""
    best = (0, 0.0)
    for op in ops[:3]:
        got = sorted(s.duration_ns for s in walker.store.spans(SpanFilter(
            window=w, service=service, name=op, min_duration_ns=GAVE_UP_NS, limit=200))
            if s.kind in ("SERVER", "CONSUMER"))
        j = 0
        for i, d in enumerate(got):
            j = max(j, i)
            while j + 1 < len(got) and got[j + 1] <= d * (1 + TIMEOUT_SPREAD):
                j += 1
            if j - i + 1 > best[0]:
                best = (j - i + 1, d / 1e6)
    return best


def reached_op(walker: Walker, y: Candidate, x: Candidate, below: set[str]) -> bool:
    """Whether x's requests can reach the operations y changed in: some service at or below x
    calls them. A service below x that slowed in an operation only others call (a queue's
    blocking pop, waiting longer when less work arrives) explains nothing of x's."""
    ops = [op for op in y.ops if op] or ([y.key[1]] if y.key[1] else [])
    if not ops:
        return True
    callers: set[str] = set()
    for op in ops[:3]:
        callers |= walker.op_callers(op)
    return not callers or bool(callers & (below | {x.key[0]}))


def waits_on(walker: Walker, y: Candidate, x: Candidate) -> bool | None:
    """Whether x's slow requests, as sampled, spent their extra time in calls to y. A service
    below x can explain x's slowdown only through the calls x's requests make to it: extra
    time x spent on its own (a sleep, its CPU, its queue) is not y's, however much y changed
    for its other callers. Requests with no call to y seen (spans lost) do not tell; None when
    too few requests tell."""
    if FAMILY[x.kind] != 1 or FAMILY[y.kind] != 1:
        return None
    seen = ok = 0
    held = None
    for s, extra_ms in zip(x.spans, x.excess_ms):
        if s.service != x.key[0] or extra_ms <= 0 or s.kind == "CLIENT":
            continue
        tree = walker.tree(s.trace_id)
        entry = entry_of(tree, s)
        if held is None:
            held = _held_calls(walker, x.key[0], y)
        # Waiting for a pooled connection that x's other requests hold in calls to y, stuck
        # there (a row lock): x waited on y though it made no call while it waited.
        if _overlap_ms(held, entry, SIZE_SHARE * extra_ms) >= SIZE_SHARE * extra_ms:
            seen += 1
            ok += 1
            continue
        in_y, calls = 0, 0
        for d in tree.descendants(entry):
            if d.kind != "CLIENT" or d.service == y.key[0]:
                continue
            linked = [k for k in tree.children[d.span_id] if k.kind == "SERVER"]
            callee = linked[0].service if linked else walker.canon(peer_of(d) or "", d)
            op = linked[0].name if linked else d.name
            # y slowed in some operations: a call to another of its operations is no wait on it
            if walker.canon(callee) == y.key[0] and (not y.ops or op in y.ops):
                in_y += d.duration_ns
                calls += 1
        if not calls:
            continue  # no call to y in it: not made, or its spans lost; it cannot tell
        seen += 1
        ok += in_y / 1e6 >= SIZE_SHARE * extra_ms
    return None if seen < 2 else 2 * ok >= seen


def _held_calls(walker: Walker, service: str, y: Candidate) -> list[Span]:
    """service's calls into y's changed operations during the window, longest first."""
    got = walker.store.spans(SpanFilter(window=walker.window, service=service, kind="CLIENT",
                                        order="duration_desc", limit=200))
    return [d for d in got if walker.canon(peer_of(d) or "", d) == y.key[0]
            and (not y.ops or d.name in y.ops)]


def _overlap_ms(calls: list[Span], s: Span, min_ms: float) -> float:
    """Time of s covered by calls (of other requests) that each lasted min_ms or more."""
    spans = sorted((max(c.start_time_unix_nano, s.start_time_unix_nano),
                    min(c.end_time_unix_nano, s.end_time_unix_nano))
                   for c in calls if c.trace_id != s.trace_id and c.duration_ns >= min_ms * 1e6)
    total, end = 0, s.start_time_unix_nano
    for a, b in spans:
        a = max(a, end)
        if b > a:
            total += b - a
            end = b
    return total / 1e6


SIZE_SHARE = 0.25  # a slowdown below explains one above when it added this share of the time
GAVE_UP_NS = 500_000_000  # a failure after this long waited on something: it may be a timeout


def typical_ms(c: Candidate) -> float:
    extra = sorted(x for x in c.excess_ms if x > 0)
    return extra[len(extra) // 2] if extra else 0.0


def explains(y: Candidate, x: Candidate) -> bool:
    """Whether y, below x in the call graph, can be the cause of x's symptom. A slowdown
    explains a failure above only when the failing requests waited (a timeout gave up on it);
    requests failing fast while their callees answered fail on their own, and it must be of
    the size of that wait. Failures seen only in the shape of traces (no status codes) may be
    either. A slowdown explains a slowdown above only when it is of its size: a few ms below
    cannot add a second above. Time between a call and its answer (x's network) is spent
    before x begins the request or after it answered: nothing x calls can cause it; nor can
    a slowdown cause the wrong value x answered on time with success."""
    if x.kind == "network":
        return False
    if FAMILY[y.kind] == 1 and x.answered and len(x.answered) >= 0.5 * len(x.spans):
        return False  # x answered on time, with success, and its callers failed on the answer
    if FAMILY[y.kind] == 1 and FAMILY[x.kind] == 0:
        if answered_failing(y):
            return True  # it failed x's calls itself (a pool out of connections answers 503)
        failed = sorted(s.duration_ns / 1e6 for s in x.spans if s.status_code == "ERROR")
        if not failed:  # failures seen only in the shape of traces: it cannot be told
            return True
        waited = failed[len(failed) // 2]
        return waited >= GAVE_UP_NS / 1e6 and typical_ms(y) >= SIZE_SHARE * waited
    if FAMILY[y.kind] == 1 and FAMILY[x.kind] == 1:
        tx, ty = typical_ms(x), typical_ms(y)
        return not (tx > 0 and ty > 0) or ty >= SIZE_SHARE * tx
    return True


def answered_failing(y: Candidate) -> bool:
    """Most of y's own sampled answers were failures: saturated, it refused work (a pool out
    of connections, a full queue) rather than only slowing it."""
    own = [s for s in y.spans if s.service == y.key[0] and s.kind != "CLIENT"]
    return bool(own) and 2 * sum(s.status_code == "ERROR" for s in own) > len(own)


IMPACT_MS = 20.0  # added time per request at which a slowdown counts half


def impact(c: Candidate) -> float:
    """How much a slowdown costs each request it touches: a few ms of extra time on a loaded
    host is noise next to hundreds of ms a user feels. Failures and drops count whole."""
    if FAMILY[c.kind] != 1:
        return 1.0
    extra = sorted(x for x in c.excess_ms if x > 0)
    if not extra:
        return 0.5
    typical = extra[len(extra) // 2]
    if c.stuck:  # a call held for seconds costs its request that, however few such calls
        typical = max(typical, c.stuck_ms)
    return typical / (typical + IMPACT_MS) + 0.1
