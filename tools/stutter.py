"""Stutter: a service that works in bursts. A process stopped again and again (SIGSTOP, a GC
pause, a swap storm) or throttled to short slices of CPU reads nothing while it is held, so
the requests that arrived meanwhile all begin together the moment it runs again: its SERVER
spans of different requests start within a few ms of each other far more often than in the
baseline, and more often than its rate makes likely by chance. Each such span is quick; the
wait is its callers' (their requests end right after its releases: `ended_with`).

Reads the bounded samples (tools/sampling.py). Ranks nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from capture.span import Span
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, SURE, binom_sf, confidence

RELEASE_NS = 2_000_000  # SERVER spans of different requests starting this close: released together
MIN_SHARE_GROWTH = 2.0  # the share of such starts at least this many times the baseline's
HOST_WIDE = 3  # this many services stuttering at once: the host, not one of them
END_LAG_NS = 20_000_000  # a caller's request ending this soon after a release waited on it
MIN_BURSTS = 3  # fewer bursts than this are one stall or two (the host's hiccups), not a pattern


@dataclass
class Stutter:
    service: str
    share: tuple[float, float]  # of its SERVER spans, the share released with another (baseline, now)
    count: tuple[int, int]  # its SERVER spans sampled (baseline, now)
    sure: float
    releases: list[int] = field(default_factory=list)  # when each burst of starts began (ns)
    burst_spans: list[Span] = field(default_factory=list)  # spans that began in a burst

    def describe(self) -> str:
        return (f"its requests began in bursts: {self.share[0]:.0%} -> {self.share[1]:.0%} of"
                f" {self.count[0]} -> {self.count[1]} began within {RELEASE_NS / 1e6:.0f} ms of"
                f" another request's, in {len(self.releases)} bursts ({self.sure:.1%} sure): it"
                " reads nothing for stretches, then all that waited at once (stopped, or"
                " throttled, again and again)")


def _server_spans(sample: Sample) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for s in sample.spans:
        if s.kind == "SERVER":
            out.setdefault(s.service, []).append(s)
    return out


def released(spans: list[Span]) -> tuple[int, list[int], list[Span]]:
    """Spans that began within RELEASE_NS of the previous one of another request: their number,
    when each burst began, and the spans."""
    spans = sorted(spans, key=lambda s: s.start_time_unix_nano)
    k, bursts, got, last = 0, [], [], None
    for prev, s in zip(spans, spans[1:]):
        if s.start_time_unix_nano - prev.start_time_unix_nano <= RELEASE_NS and s.trace_id != prev.trace_id:
            k += 1
            got.append(s)
            if last is None or prev.start_time_unix_nano - last > RELEASE_NS:
                bursts.append(prev.start_time_unix_nano)
            last = s.start_time_unix_nano
    return k, bursts, got


def _chance(n: int, seconds: float) -> float:
    """Share of n starts spread at random over `seconds` that fall within RELEASE_NS of the one before."""
    rate = n / max(seconds, 1e-9)
    return 1.0 - math.exp(-rate * RELEASE_NS / 1e9)


def stutters(cur: Sample, base: Sample) -> list[Stutter]:
    """Services whose requests began in bursts far more than in the baseline and than chance;
    none when as many do as the host's stalls make."""
    now, before = _server_spans(cur), _server_spans(base)
    seconds = cur.window.seconds
    out = []
    for svc, spans in now.items():
        bs = before.get(svc, [])
        if len(spans) < 4 * MIN_SAMPLE or len(bs) < 4 * MIN_SAMPLE:
            continue
        k1, bursts, got = released(spans)
        k0, _, _ = released(bs)
        p0 = max((k0 + 0.5) / (len(bs) + 1), _chance(len(spans), seconds))
        if k1 / len(spans) < MIN_SHARE_GROWTH * p0:
            continue
        sure = confidence(binom_sf(k1, len(spans) - 1, p0))
        if sure < SURE or len(bursts) < MIN_BURSTS:
            continue
        out.append(Stutter(svc, (k0 / len(bs), k1 / len(spans)), (len(bs), len(spans)), sure,
                           bursts, got))
    out = _first(out, cur)
    if len(out) >= HOST_WIDE:
        return []
    out.sort(key=lambda x: -x.sure)
    return out


def _first(found: list[Stutter], cur: Sample) -> list[Stutter]:
    """Of services that stutter together, the one that releases first: a request it releases
    goes on to call others, whose spans then begin in bursts too, right after its own in the
    same trace."""
    by_trace: dict[str, list[Span]] = {}
    for s in cur.spans:
        by_trace.setdefault(s.trace_id, []).append(s)

    def follows(b: Stutter, a: Stutter) -> bool:
        led = sum(1 for s in b.burst_spans if any(
            x.service == a.service and 0 <= s.start_time_unix_nano - x.start_time_unix_nano <= END_LAG_NS
            for x in by_trace.get(s.trace_id, [])))
        return 2 * led > len(b.burst_spans)

    return [b for b in found if not any(a is not b and follows(b, a) for a in found)]


def ended_with(releases: list[int], ends: list[int], start_ns: int, end_ns: int) -> float:
    """Confidence that requests ended right after the releases (within END_LAG_NS) more often
    than ends spread at random over [start_ns, end_ns] would."""
    if not releases or len(ends) < MIN_SAMPLE:
        return 0.0
    covered = sum(min(r + END_LAG_NS, end_ns) - max(r, start_ns) for r in releases
                  if r < end_ns and r + END_LAG_NS > start_ns)
    chance = min(max(covered / max(end_ns - start_ns, 1), 1e-6), 1.0)
    k = sum(1 for e in ends if any(0 <= e - r <= END_LAG_NS for r in releases))
    return confidence(binom_sf(k, len(ends), chance)) if k >= MIN_SAMPLE else 0.0
