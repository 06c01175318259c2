"""How a service held its requests, from when they resumed: on its own CPU's period, all at
once, or one at a time. Span data only.

A service whose CPU quota (CFS cpu.max) is spent runs again at the start of the next period:
the requests it held resume then, all runnable ones together, and the resumptions of the
whole window fall on one lattice (a phase plus multiples of the period, 100 ms by default, up
to 1 s). A stopped process (SIGSTOP, a long GC pause) holds everything for one long stretch
and lets it all go at once. A lock or a pool's queue lets its waiters go one at a time, in the
order they came (FIFO). A fixed delay or a slow network resumes requests whenever they began:
no lattice, no common release.

A request is held when it sat idle (calling nothing) for HELD_NS at least and for most of its
time, or when the call to it waited HELD_NS before the service began to read it. Its resume
point is where that wait ended. Reads a Sample; ranks nothing.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from tools.release import longest_idle
from tools.sampling import Sample
from tools.stats import binom_sf

HELD_NS = 50_000_000  # a wait this long at least holds a request
HELD_SHARE = 0.5  # and, inside a request, at least this share of it
TOGETHER_NS = 5_000_000  # resumptions this close (chained) are one release
MIN_PERIOD_NS = 10_000_000  # CFS periods: 1 ms to 1 s; below 10 ms the lattice is noise
MAX_PERIOD_NS = 1_000_000_000
TOL_NS = 8_000_000  # a release this close to the lattice is on it (a loaded host's wakeup)
MIN_ON = 4  # releases on the lattice, at least
PERIOD_P = 1e-6  # and that many on it by chance, over every period tried, this unlikely
HARMONICS = 3  # periods tried: each interval between releases divided by 1..HARMONICS
MAX_RELEASES = 60  # releases read, at most (spread over the window): bounded work
TIMER_SHARE = 0.5  # held requests sent on the lattice too, at most this share (else a timer's beat)
MORE_HELD = 2.0  # a service's held requests, at least this many times the baseline's (per second)
ONCE_HELD = 3  # one release letting this many requests go at once, after a long hold
ONCE_NS = 500_000_000  # the service seen doing nothing this long before it: stopped, not slow
QUEUE_ORDER = 0.8  # requests held together ending one at a time, this share in arrival order


@dataclass
class Hold:
    service: str
    kind: str  # "period" (its CPU quota), "once" (stopped), "queue" (one at a time), "" (none seen)
    held: int  # requests held
    releases: int  # releases (resumptions within TOGETHER_NS of each other)
    per_release: float  # requests let go per release, on average
    period_ms: float = 0.0  # the lattice's period, when kind is "period"
    on_lattice: int = 0  # releases on it
    p: float = 1.0  # chance of that many on some lattice by accident
    in_order: float = 0.0  # of held requests let go one at a time, the share of pairs in arrival order
    longest_ms: float = 0.0  # the longest hold
    resumes: list[int] = field(default_factory=list)  # the releases' instants

    def own(self) -> bool:
        """Held on its own CPU or stopped: the service is the cause, its callers wait on it."""
        return self.kind in ("period", "once")

    def describe(self) -> str:
        if self.kind == "period":
            read = min(self.releases, MAX_RELEASES)
            # a process stopped and continued by a timer (a pause loop, a GC on a schedule)
            # resumes on a lattice too: the recorded pauses of evals/lab mostly show this way
            return (f"{self.on_lattice} of {read} releases of {self.service}'s held requests fell on a"
                    f" {self.period_ms:.0f} ms period (chance {self.p:.1e}): it ran in"
                    " bursts of a period, its CPU quota spent or stopped and resumed on a timer")
        if self.kind == "once":
            return (f"{self.service} held {self.held} requests for up to {self.longest_ms:.0f} ms and"
                    " let them go at once: it stopped and ran again")
        if self.kind == "queue":
            return (f"{self.service} let its held requests go one at a time, {self.in_order:.0%} in the"
                    " order they came: a queue (a lock, a pool), not its CPU")
        return f"{self.service}: no hold pattern"


def events(sample: Sample) -> dict[str, list[int]]:
    """Per service, the instants it began or ended a span, sorted: when it was seen running."""
    out: dict[str, list[int]] = {}
    for s in sample.spans:
        out.setdefault(s.service, []).extend((s.start_time_unix_nano, s.end_time_unix_nano))
    for v in out.values():
        v.sort()
    return out


def _quiet(seen: list[int], lo: int, hi: int) -> bool:
    """Nothing begun or ended in (lo, hi)."""
    i = bisect_right(seen, lo)
    return i >= len(seen) or seen[i] >= hi


def held_requests(sample: Sample) -> dict[str, list[tuple[int, int, int]]]:
    """Per service, its held requests as (sent: when its caller sent it, else when it began;
    resumed; held ns)."""
    out: dict[str, list[tuple[int, int, int]]] = {}
    for tree in sample.trees:
        for s in tree.spans:
            if s.kind != "SERVER":
                continue
            idle, at = longest_idle(tree, s)
            p = tree.by_id.get(s.parent_span_id or "")
            sent = p.start_time_unix_nano if p is not None and p.kind == "CLIENT" else s.start_time_unix_nano
            if idle >= HELD_NS and idle >= HELD_SHARE * s.duration_ns:
                out.setdefault(s.service, []).append((sent, at, idle))
            if p is not None and p.kind == "CLIENT" and p.service != s.service:
                wait = s.start_time_unix_nano - p.start_time_unix_nano
                if wait >= HELD_NS:  # the call waited before the service read it
                    out.setdefault(s.service, []).append(
                        (p.start_time_unix_nano, s.start_time_unix_nano, wait))
    return out


def _releases(resumed: list[int]) -> list[list[int]]:
    groups: list[list[int]] = []
    for t in sorted(resumed):
        if groups and t - groups[-1][-1] <= TOGETHER_NS:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def _densest(phases: list[int], period: int) -> tuple[int, int]:
    """Most sorted phases within an arc of 2 * TOL_NS (the circle wraps at period), and the
    arc's middle."""
    n = len(phases)
    ring = phases + [p + period for p in phases]
    best, mid = 0, 0
    for i in range(n):
        j = bisect_right(ring, ring[i] + 2 * TOL_NS, i, i + n) - 1
        if j - i + 1 > best:
            best, mid = j - i + 1, (ring[i] + ring[j]) // 2
    return best, mid


def _refit(xs: list[int], period: int, origin: int) -> tuple[int, int]:
    """The period and origin fitted (least squares) to the instants near a lattice: a period
    read from one interval is off by its jitter, which adds up over many periods."""
    pts = []
    for x in xs:
        m = round((x - origin) / period)
        if abs(x - origin - m * period) <= 2 * TOL_NS:
            pts.append((m, x - origin))
    if len(pts) < 2 or len({m for m, _ in pts}) < 2:
        return period, origin
    n = len(pts)
    mm, my = sum(m for m, _ in pts) / n, sum(y for _, y in pts) / n
    slope = sum((m - mm) * (y - my) for m, y in pts) / sum((m - mm) ** 2 for m, _ in pts)
    return int(round(slope)), origin + int(round(my - slope * mm))


@dataclass
class Lattice:
    period_ns: int = 0
    origin_ns: int = 0  # one point of it
    on: int = 0  # instants on it
    p: float = 1.0  # chance of that many on some lattice tried, by accident

    def holds(self, t: int) -> bool:
        if not self.period_ns:
            return False
        d = (t - self.origin_ns) % self.period_ns
        return min(d, self.period_ns - d) <= TOL_NS


def lattice(instants: list[int]) -> Lattice:
    """The period whose lattice (one phase plus its multiples) holds the most instants, least
    likely by chance."""
    best = Lattice()
    if len(instants) < MIN_ON:
        return best
    xs = sorted(instants)
    if len(xs) > MAX_RELEASES:
        xs = [xs[i * len(xs) // MAX_RELEASES] for i in range(MAX_RELEASES)]
    tried = {(b - a) // k for a, b in zip(xs, xs[1:]) for k in range(1, HARMONICS + 1)}
    periods = sorted(p for p in tried if MIN_PERIOD_NS <= p <= MAX_PERIOD_NS)
    for period in periods:
        q = min(1.0, 2 * TOL_NS / period)
        if q >= 0.5:
            continue
        on, mid = _densest(sorted((x - xs[0]) % period for x in xs), period)
        if on < MIN_ON or (on + 1 < best.on and period <= best.period_ns):
            continue  # fewer on it, and likelier by chance, than the best so far
        period, origin = _refit(xs, period, xs[0] + mid)
        if not MIN_PERIOD_NS <= period <= MAX_PERIOD_NS:
            continue
        on, mid = _densest(sorted((x - origin) % period for x in xs), period)
        # the first instant sets the phase for free; the others land within TOL_NS by chance q
        q = min(1.0, 2 * TOL_NS / period)
        p = min(1.0, binom_sf(on - 1, len(xs) - 1, q) * len(periods) * len(xs))
        if p < best.p or (p == best.p and on > best.on):
            best = Lattice(period, origin + mid, on, p)
    return best


def _in_order(held: list[tuple[int, int, int]]) -> tuple[float, int]:
    """Of pairs of held requests waiting at once (the second began while the first was held)
    and let go apart, the share let go in the order they began; with how many pairs."""
    pairs = good = 0
    hs = sorted(held)
    for i, (b0, r0, _) in enumerate(hs):
        for b1, r1, _ in hs[i + 1:i + 6]:
            if b1 >= r0 or abs(r1 - r0) <= TOGETHER_NS:
                continue
            pairs += 1
            good += r1 > r0
    return good / pairs if pairs else 0.0, pairs


def _stopped(groups: list[list[int]], held: list[tuple[int, int, int]], seen: list[int]) -> bool:
    """A release that let ONCE_HELD requests or more go after ONCE_NS, with the service seen
    doing nothing (no span of it begun or ended) from the middle of their arrivals until it:
    stopped. Requests waiting for a pool or a lock wait while it serves others."""
    for g in groups:
        if len(g) < ONCE_HELD:
            continue
        sent = sorted(b for b, r, _ in held if g[0] <= r <= g[-1])
        lo, hi = sent[len(sent) // 2], g[0] - TOGETHER_NS
        if hi - lo >= ONCE_NS and _quiet(seen, lo, hi):
            return True
    return False


def hold(service: str, held: list[tuple[int, int, int]], seen: list[int] | None = None) -> Hold:
    """How service held these requests; seen: when it began or ended spans (events())."""
    groups = _releases([r for _, r, _ in held])
    starts = [g[0] for g in groups]
    longest = max((h for _, _, h in held), default=0)
    out = Hold(service, "", len(held), len(groups), len(held) / max(len(groups), 1),
               longest_ms=longest / 1e6, resumes=starts)
    lat = lattice(starts)
    if lat.p <= PERIOD_P and sum(lat.holds(b) for b, _, _ in held) <= TIMER_SHARE * len(held):
        # held requests that began on the lattice too were sent again as the last came back (a
        # blocking read's timeout, a poller's sleep): a timer's beat, not a quota's
        out.kind, out.period_ms, out.on_lattice, out.p = "period", lat.period_ns / 1e6, lat.on, lat.p
        return out
    if seen is not None and _stopped(groups, held, seen):
        out.kind = "once"
        return out
    out.in_order, pairs = _in_order(held)
    if pairs >= MIN_ON and out.per_release < 1.5 and out.in_order >= QUEUE_ORDER:
        out.kind = "queue"
    return out


def holds(cur: Sample, base: Sample) -> list[Hold]:
    """Services whose requests the window holds far more often than the baseline did, held on
    their own (a period, one stop) or in a queue, where the baseline showed no such pattern;
    surest first."""
    now, before = held_requests(cur), held_requests(base)
    seen, seen_before = events(cur), events(base)
    rate = max(cur.window.end_ns - cur.window.start_ns, 1) / max(base.window.end_ns - base.window.start_ns, 1)
    out = []
    for svc, hs in now.items():
        was = before.get(svc, [])
        if len(hs) < MIN_ON or len(hs) < MORE_HELD * len(was) * rate:
            continue  # held as often before: its way, not a change (and no work spent on it)
        h = hold(svc, hs, seen.get(svc, []))
        if not h.kind or hold(svc, was, seen_before.get(svc, [])).kind == h.kind:
            continue  # its way already: a poller on a timer, a queue it always has
        out.append(h)
    out.sort(key=lambda h: (h.p, -h.held))
    return out
