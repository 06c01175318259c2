"""Held and released together: requests of one service that sat idle (calling nothing, doing
nothing the spans show) and resumed at the same instant, though they began far apart. A
process stopped (SIGSTOP, a GC pause) or throttled (its CPU quota spent for the period) holds
every request in flight and lets them all go when it runs again; so does a callee that stopped,
for the callers whose next call waits on it. A fixed delay (a sleep, a slow step) does not:
requests that began apart end apart. Nor does a lock: its waiters wait inside their call.

Per request, the resume point is where its longest idle stretch ended. The holder is a callee
the service called right at each release and that nothing was seen busy with (no call to it in
flight or begun, on any connection) while the requests were held; else the service itself.
Reads a Sample; ranks nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.span import Span
from tools.base import peer_of
from tools.sampling import Sample
from tools.trace import Tree

TOGETHER_NS = 5_000_000  # resumed within this of each other: one release
APART_NS = 100_000_000  # and began at least this far apart (a sleep keeps them apart)
IDLE_NS = 50_000_000  # an idle stretch this long at least holds a request
IDLE_SHARE = 0.5  # and at least this share of the request
MIN_HELD = 3  # requests in one release
MIN_RELEASES = 2  # releases in the window: stopped again and again, or for long
BY_SHARE = 2 / 3  # of the releases, this share went on into calls to one silent callee: it held them
EXPECTED = 6.0  # calls its rate would have begun while it was silent, over the releases: no chance
HOST_WIDE = 3  # this many services held at once: the host, not one of them


@dataclass
class Held:
    span: Span  # the request (SERVER span) held
    idle_ns: int
    resume_ns: int


@dataclass
class Release:
    service: str  # whose requests were held
    by: str  # who held them: a callee they resumed into, or the service itself
    releases: int  # releases seen in the window
    held: int  # requests held in them
    base_releases: int  # in the baseline
    idle_ms: float  # the held requests' median idle stretch
    examples: list[Span] = field(default_factory=list)

    def describe(self) -> str:
        who = (f"{self.service}'s requests went on into calls to {self.by}" if self.by != self.service
               else "they ended")
        return (f"{self.held} requests of {self.service} that began at least"
                f" {APART_NS / 1e6:.0f} ms apart sat idle (median {self.idle_ms:.0f} ms) and resumed"
                f" within {TOGETHER_NS / 1e6:.0f} ms of each other, {self.releases} times in the window"
                f" ({self.base_releases} in the baseline); {who} at once: {self.by} stopped and"
                " ran again (paused, or its CPU quota spent), not a fixed delay")


def longest_idle(tree: Tree, s: Span) -> tuple[int, int]:
    """s's longest stretch calling nothing: (its length, where it ended)."""
    lo, hi = s.start_time_unix_nano, s.end_time_unix_nano
    kids = sorted((k for k in tree.children[s.span_id] if k.end_time_unix_nano > lo),
                  key=lambda k: k.start_time_unix_nano)
    best, at, cur = 0, hi, lo
    for k in kids:
        a = max(k.start_time_unix_nano, lo)
        if a - cur > best:
            best, at = a - cur, a
        cur = max(cur, min(k.end_time_unix_nano, hi))
    if hi - cur > best:
        best, at = hi - cur, hi
    return best, at


def _held(tree: Tree, s: Span) -> Held | None:
    """s's longest idle stretch, when it holds s, and where it ended."""
    lo, hi = s.start_time_unix_nano, s.end_time_unix_nano
    best, at = longest_idle(tree, s)
    if best < IDLE_NS or best < IDLE_SHARE * (hi - lo):
        return None
    return Held(s, best, at)


def _releases(held: list[Held]) -> list[list[Held]]:
    """Groups of held requests that resumed together though they began apart."""
    out: list[list[Held]] = []
    held = sorted(held, key=lambda h: h.resume_ns)
    i = 0
    while i < len(held):
        j = i
        while j + 1 < len(held) and held[j + 1].resume_ns - held[i].resume_ns <= TOGETHER_NS:
            j += 1
        group = held[i:j + 1]
        starts = [h.span.start_time_unix_nano for h in group]
        if len({h.span.trace_id for h in group}) >= MIN_HELD and max(starts) - min(starts) >= APART_NS:
            out.append(group)
        i = j + 1
    return out


def _callee(tree: Tree, c: Span) -> str:
    linked = [x for x in tree.children[c.span_id] if x.kind == "SERVER"]
    return linked[0].service if linked else peer_of(c) or c.name


def _traffic(sample: Sample) -> tuple[dict[str, list[Held]], dict[str, list[tuple[int, int]]],
                                      dict[str, list[tuple[int, str, str]]]]:
    """Held requests per service; every service's busy intervals (its SERVER spans and the
    calls made to it); each service's calls, as (start, callee, client port)."""
    held: dict[str, list[Held]] = {}
    busy: dict[str, list[tuple[int, int]]] = {}
    made: dict[str, list[tuple[int, str, str]]] = {}
    for tree in sample.trees:
        for s in tree.spans:
            if s.kind == "SERVER":
                busy.setdefault(s.service, []).append((s.start_time_unix_nano, s.end_time_unix_nano))
                h = _held(tree, s)
                if h is not None:
                    held.setdefault(s.service, []).append(h)
            elif s.kind == "CLIENT":
                to = _callee(tree, s)
                busy.setdefault(to, []).append((s.start_time_unix_nano, s.end_time_unix_nano))
                made.setdefault(s.service, []).append(
                    (s.start_time_unix_nano, to, str(s.attributes.get("client.port", s.span_id))))
    return held, busy, made


def _silent(busy: list[tuple[int, int]], lo: int, hi: int, seconds: float) -> float:
    """Nothing busy with it through [lo, hi]: how many calls its rate would have begun there
    (0 when something was)."""
    if any(a < hi and b > lo for a, b in busy):
        return 0.0
    return len(busy) / seconds * max(hi - lo, 0) / 1e9


def _holder(svc: str, groups: list[list[Held]], busy: dict, made: dict, seconds: float) -> str:
    """Who held svc's requests: a callee that svc's calls went to right at each release, on
    several connections at once (a pool's connections all let go), and that nothing was seen
    busy with (no call to it, on any connection from any caller, in flight or begun) while
    they were held, though its rate says it would have been: it was stopped. Else svc itself.
    A pool that ran out lets its connections go one at a time."""
    votes: dict[str, int] = {}
    expected: dict[str, float] = {}
    for g in groups:
        r = g[0].resume_ns
        starts = sorted(h.span.start_time_unix_nano for h in g)
        lo = starts[len(starts) // 2]
        conns: dict[str, set[str]] = {}
        for t, to, port in made.get(svc, []):
            if r - TOGETHER_NS <= t <= r + TOGETHER_NS:
                conns.setdefault(to, set()).add(port)
        for to, ports in conns.items():
            quiet = _silent(busy.get(to, []), lo, r - TOGETHER_NS, seconds) if to != svc and len(ports) >= 2 else 0.0
            if quiet >= 1.0:
                votes[to] = votes.get(to, 0) + 1
                expected[to] = expected.get(to, 0.0) + quiet
    top = max(votes.items(), key=lambda kv: kv[1]) if votes else None
    return top[0] if top and top[1] >= max(MIN_RELEASES, BY_SHARE * len(groups)) \
        and expected[top[0]] >= EXPECTED else svc


def releases(cur: Sample, base: Sample) -> list[Release]:
    """Services whose requests were held and released together again and again in the window,
    never so in the baseline; most releases first. None when as many services were held as
    a stalled host holds."""
    (now, busy, made), before = _traffic(cur), _traffic(base)[0]
    seconds = max((cur.window.end_ns - cur.window.start_ns) / 1e9, 1e-3)
    out = []
    for svc, held in now.items():
        groups = _releases(held)
        base_groups = _releases(before.get(svc, []))
        if len(groups) < MIN_RELEASES or base_groups:
            continue
        flat = [h for g in groups for h in g]
        idle = sorted(h.idle_ns for h in flat)
        out.append(Release(svc, _holder(svc, groups, busy, made, seconds), len(groups), len(flat), len(base_groups),
                           idle[len(idle) // 2] / 1e6,
                           [h.span for h in sorted(flat, key=lambda h: -h.idle_ns)[:5]]))
    if len(out) >= HOST_WIDE:
        return []
    out.sort(key=lambda r: (-r.releases, -r.held))
    return out
