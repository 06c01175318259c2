"""How much a candidate changed itself against the baseline (its operation, or its callers'
calls when its time is spent outside its own spans), with the small-sample tests that say how
sure. Reads the store; ranks nothing.
"""
from __future__ import annotations

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore, TimeWindow
from guardian.investigate.bar import BURST_MIN
from guardian.investigate.coverage import per_s
from guardian.investigate.rank import Candidate
from guardian.investigate.samples import Walker
from guardian.investigate.walk import entry_of, responsible
from tools.anomalies import quiet_tail
from tools.base import spread_spans
from tools.stats import (LATENCY_DELTA_MS, MIN_SAMPLE, SURE, TAIL_ONLY_COUNT, RedStats, confidence,
                         from_row, from_spans, mann_whitney_p, proportion_p)

STAT_SAMPLE = 2000  # calls read to size a non-endpoint culprit's change
P50_FLOOR_MS = 1.0  # a median shift smaller than this is no change (timer, scheduler)
SPREAD_SHARE = 0.5  # nor one under this share of the baseline's p50-p95 distance
TRIPLED_SPREAD = 0.1  # unless it tripled and moved by this share of that distance
TAIL_FLOOR_MS = 100.0  # a tail-only shift counts whole when its p95 grew by this much
TAIL_RATIO = 10.0  # or when its p95 grew this many times
TAIL_CALLS = 20  # on this many calls at least (a p95 of fewer is one call's time)


def _change(walker: Walker, c: Candidate) -> float:
    """How much the candidate itself changed vs baseline (1 clear, 0.15 not at all); sets c.change."""
    if c.kind == "error" and len(c.answered) >= 0.5 * len(c.spans):
        f = c.answered[0]
        failed = len({s.trace_id for s in c.answered})
        c.change = (f"{f.service} `{f.name}` fails right after {c.key[0]} answered with success,"
                    f" where its requests used to go on ({failed} of {len(c.traces)}"
                    f" sampled requests): {c.key[0]}'s answer is what it fails on")
        # failures of an operation that did not fail before, each right after the same
        # answer: an exact test on the failing operation says how sure, however few calls
        cur, base = (_op_stats(walker.store, f, w) for w in (walker.window, walker.baseline))
        c.calls = (base.count, cur.count)
        sure = confidence(proportion_p(cur.errors, cur.count, base.errors, base.count))
        c.change += (f" ({f.name}: {base.errors} of {base.count} failed before, {cur.errors} of"
                     f" {cur.count} now; {sure:.1%} sure)")
        c.shown = sure >= SURE and cur.errors >= 2
        # a few failures after its answers, no more than the baseline's share allows, are a
        # calm day's failures: not a change of what it answers
        return 1.0 if c.shown else 0.5 if sure >= 0.9 else 0.15
    top_op = max(c.ops, key=c.ops.get)
    matches = [s for s in c.spans if responsible(walker.tree(s.trace_id), s)[1] == top_op]
    tmpl = matches[0] if matches else c.spans[0]
    if tmpl.service == c.key[0] and tmpl.kind not in ("SERVER", "CONSUMER"):
        # A step or call inside the candidate's own request (its longest span under the
        # operation it was named for): the operation's change is read on the request itself;
        # a call's own time may be the capture's pairing, not the service's.
        entry = entry_of(walker.tree(tmpl.trace_id), tmpl)
        if entry.kind in ("SERVER", "CONSUMER") and entry.name == top_op:
            tmpl = entry
    cur, base = (_op_stats(walker.store, tmpl, w) for w in (walker.window, walker.baseline))
    own = True
    if c.kind in ("latency", "saturation") and _seen_by_callers(c):
        # A stalled service (paused, starved of CPU) or lost packets: the time is spent before
        # its own spans begin, or on calls it never answered; its callers' calls show it.
        callers = [s.service for s in c.spans if s.kind == "CLIENT" and s.service != c.key[0]]
        edge = _edge_stats(walker, c.key[0], max(sorted(set(callers)), key=callers.count) if callers else None)
        if edge is not None:
            cur, base = edge
            own = False  # read on its callers' calls, not on spans like tmpl
    c.calls = (base.count, cur.count)
    few = min(cur.count, base.count) < MIN_SAMPLE
    err_delta = cur.error_rate - base.error_rate
    p50 = cur.p50_ms / base.p50_ms if base.p50_ms else 1.0
    p95 = cur.p95_ms / base.p95_ms if base.p95_ms else 1.0
    errors = (f"error rate {base.error_rate:.1%} -> {cur.error_rate:.1%}"
              f" ({cur.errors} of {cur.count} calls)")
    latency = f"p50 {base.p50_ms:.1f} -> {cur.p50_ms:.1f} ms, p95 {base.p95_ms:.1f} -> {cur.p95_ms:.1f} ms"
    if c.kind in ("error", "dependency") or (c.kind == "saturation" and err_delta > 0.02):
        c.change = errors + (f"; {latency}" if c.kind == "saturation" else "")
        if few:
            sure = confidence(proportion_p(cur.errors, cur.count, base.errors, base.count))
            if sure >= SURE and err_delta >= 0.05 and cur.count >= MIN_SAMPLE:
                c.change += (f" (only {cur.count} calls now, {base.count} before, but {sure:.1%}"
                             " sure the rate grew)")
                c.shown = True
                return 1.0
            c.change += f" (only {cur.count} calls now, {base.count} before: too few to be sure)"
            return 0.5 if cur.errors >= 2 and err_delta > 0.01 else 0.15
        # A handful of failures among a few dozen calls happens on a calm day too.
        sure = confidence(proportion_p(cur.errors, cur.count, base.errors, base.count))
        if sure < SURE:
            c.change += f" ({sure:.0%} sure the rate grew)"
            return 0.15
        c.shown = err_delta >= 0.05
        return 1.0 if err_delta >= 0.05 else 0.5 if err_delta > 0.01 else 0.15
    c.change = latency
    c.moved = _typical_moved(cur, base) or _tail_moved(cur, base)
    if few:  # too few calls to rank on alone: said, and weighed down unless a test is sure
        sure = confidence(mann_whitney_p(*_durations(walker, tmpl))) if cur.count >= 2 and p50 >= 1.5 else 0.0
        if sure >= SURE:
            c.change += (f" (only {cur.count} calls now, {base.count} before, but {sure:.1%} sure"
                         " they are slower)")
            return 1.0
        c.change += f" (only {cur.count} calls now, {base.count} before: too few to be sure)"
        return 0.5 if max(p50, p95) >= 1.5 else 0.15
    if own and cur.count < TAIL_ONLY_COUNT and _tail_shown(walker, c, tmpl, cur, base):
        return 1.0
    if c.moved:
        return 1.0
    return 0.5 if max(p50, p95) >= 1.5 else 0.15


def _tail_shown(walker: Walker, c: Candidate, tmpl: Span, cur: RedStats, base: RedStats) -> bool:
    """A quiet operation (a few calls a minute: its percentiles are a few calls' times) whose
    calls now cross its baseline's p99 more often than chance allows (tools.anomalies.quiet_tail),
    and cost a request a delay a user feels on average, is slower: shown however few its calls,
    and named alone. Not one or two stragglers (fewer than BURST_MIN slow calls, the bar cannot
    tell from a burst), not a few ms on some calls (a busy host), and not when its calls more
    than doubled per second of data covered (more work, answered slower)."""
    # rates over the time each window's data covers (a window may run past the data's end)
    if per_s(walker, cur, walker.window) > 2 * per_s(walker, base, walker.baseline) > 0:
        return False
    t = quiet_tail(walker.store, walker.window, walker.baseline, tmpl.service, tmpl.name, tmpl.kind)
    if t.k < BURST_MIN or t.p >= 1 - SURE or not t.before or not t.now:
        return False
    extra = sum(t.now) / len(t.now) - sum(t.before) / len(t.before)
    if extra < LATENCY_DELTA_MS:
        return False
    c.shown = True
    c.change += (f" ({t.k} of {len(t.now)} calls now above the {len(t.before)} baseline calls' p99 of"
                 f" {t.line_ms:.1f} ms, {extra:.0f} ms more per call on average:"
                 f" {confidence(t.p):.1%} sure they are slower)")
    return True


def _typical_moved(cur: RedStats, base: RedStats) -> bool:
    """The typical call slowed beyond the baseline's own spread: a median that moved by less
    than a ms, or by a fraction of the baseline's p50-p95 distance without tripling, is a busy
    host's wobble."""
    shift = cur.p50_ms - base.p50_ms
    if cur.p50_ms < 1.5 * base.p50_ms or shift < P50_FLOOR_MS:
        return False
    spread = base.p95_ms - base.p50_ms
    # a median tripled counts when it moved by a tenth of the baseline's own spread at least:
    # a few ms more on an operation whose calls already ranged over seconds is its usual mix
    return (cur.p50_ms >= 3 * base.p50_ms and shift >= TRIPLED_SPREAD * spread) or \
        shift >= SPREAD_SHARE * spread


def _tail_moved(cur: RedStats, base: RedStats) -> bool:
    """Only the slow calls slowed, on enough calls and by a delay a user feels or by an order
    of magnitude: tails a few times longer come and go with the host's load."""
    return cur.p95_ms >= 2 * base.p95_ms and cur.count >= TAIL_CALLS and (
        cur.p95_ms - base.p95_ms >= TAIL_FLOOR_MS or cur.p95_ms >= TAIL_RATIO * base.p95_ms)


def _durations(walker: Walker, tmpl: Span) -> tuple[list[float], list[float]]:
    """Durations (ms) of calls like tmpl now and in the baseline, for the exact tests of the few."""
    got = [[s.duration_ns / 1e6 for s in walker.store.spans(SpanFilter(
        window=w, service=tmpl.service, name=tmpl.name, kind=tmpl.kind, limit=200))]
        for w in (walker.window, walker.baseline)]
    return got[0], got[1]


def _seen_by_callers(c: Candidate) -> bool:
    """The walks found the candidate's extra time outside its own spans: in the time before
    it began its callers' requests, or on calls no span of it answered."""
    if sum(c.excess_ms) > 0 and sum(c.gap_ms) >= 0.5 * sum(c.excess_ms):
        return True
    return bool(c.spans) and all(s.kind == "CLIENT" and s.service != c.key[0] for s in c.spans)


def _edge_stats(walker: Walker, service: str, caller: str | None
                ) -> tuple[RedStats, RedStats] | None:
    """RED of caller's calls into service (else its busiest caller's), now and in the baseline."""
    def rows(w: TimeWindow) -> dict:
        return {(walker.canon(e.client), walker.canon(e.server)): e
                for e in walker.store.service_map(w) if walker.canon(e.server) == service
                and walker.canon(e.client) != service}

    now, before = rows(walker.window), rows(walker.baseline)
    both = [k for k in before if k in now]
    if not both:
        return None
    k = (caller, service) if (caller, service) in both else max(both, key=lambda k: before[k].count)
    return from_row(now[k]), from_row(before[k])


def _op_stats(store: SpanStore, tmpl: Span, w: TimeWindow) -> RedStats:
    """RED of spans like tmpl: exact for endpoints, else from samples spread over the window."""
    if tmpl.kind in ("SERVER", "CONSUMER"):
        rows = [r for r in store.red(w, by="operation", service=tmpl.service)
                if r.operation == tmpl.name]
        return from_row(rows[0] if rows else None)
    got = spread_spans(store, SpanFilter(window=w, service=tmpl.service, name=tmpl.name,
                                         kind=tmpl.kind), STAT_SAMPLE)
    return from_spans(got, w.seconds)
