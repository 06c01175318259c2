"""The deterministic investigator: anomalies -> sample requests -> walk each to its culprit ->
rank culprits by votes and by how much they themselves changed -> Report. Beside the walks:
CLIENT/SERVER gaps and call-pattern changes (signals.py); ranking and propagation in rank.py;
nothing named when the best candidate is too weak.

No LLM. Every query is bounded (a few dozen traces at most), so it runs in seconds on
stores of millions of spans; the aggregation is the store's work.
"""
from __future__ import annotations

import re
import time

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore, TimeWindow
from guardian.investigate.bar import BURST_MIN, BURST_WEIGHT
from guardian.investigate.bar import burst as _burst
from guardian.investigate.bar import covered_ns as _covered
from guardian.investigate.bar import not_alone as _not_alone
from guardian.investigate.bar import unanswered_but_absorbed as _absorbed
from guardian.investigate.fixes import suggest_fix
from guardian.investigate.rank import FAMILY as _FAMILY
from guardian.investigate.rank import Candidate
from guardian.investigate.rank import absorb as _absorb
from guardian.investigate.rank import downstream_bonus as _downstream_bonus
from guardian.investigate.rank import impact as _impact
from guardian.investigate.rank import propagate as _propagate
from guardian.investigate.rank import reach as _reach
from guardian.investigate.pools import add_pools
from guardian.investigate.rare import add_rare
from guardian.investigate.samples import Memo, Walker
from guardian.investigate.signals import Signals, read_signals
from guardian.investigate.walk import Key, entry_of, peer_wait, responsible
from guardian.report import BlastRadius, EngineInfo, Evidence, Report, ReportWindow, RootCause
from capture.store.window import default_window, fmt_ns, split_baseline
from tools.anomalies import Anomaly, anomalies, quiet_tail
from tools.silence import SILENT_SHARE, takes_from
from tools.base import spread_spans
from tools.stats import (LATENCY_DELTA_MS, MIN_SAMPLE, SURE, TAIL_ONLY_COUNT, RedStats, confidence,
                         from_row, from_spans, mann_whitney_p, proportion_p)
from tools.trace import Tree

SYMPTOMS = 6  # anomalies walked
LOW_SYMPTOMS = 2  # and at most this many more, at services below every other symptom
FAILED_SYMPTOMS = 4  # and at most this many more failures of any size
FAILED = ("error_rate", "new_error", "saturation")
EVIDENCE = 5  # examples cited per root cause
STAT_SAMPLE = 2000  # calls read to size a non-endpoint culprit's change
WALKED = ("error_rate", "latency", "saturation", "new_error")
GAP_VOTES = 1.5  # a gap shift tested on every sampled call weighs more than a walk of a few
SHAPE_VOTES = 1.0  # per operation whose call pattern changed (spans without status only)
STUCK_VOTES = 1.5  # per operation with calls stuck far beyond its baseline
OWN_VOTES = 1.0  # a service whose own time grew, alone among the services
SILENT_VOTES = 2.0  # a service that stopped for the shortest silence counted, more the longer
P50_FLOOR_MS = 1.0  # a median shift smaller than this is no change (timer, scheduler)
SPREAD_SHARE = 0.5  # nor one under this share of the baseline's p50-p95 distance
TRIPLED_SPREAD = 0.1  # unless it tripled and moved by this share of that distance
TAIL_FLOOR_MS = 100.0  # a tail-only shift counts whole when its p95 grew by this much
TAIL_RATIO = 10.0  # or when its p95 grew this many times
TAIL_CALLS = 20  # on this many calls at least (a p95 of fewer is one call's time)
SUSTAINED = 0.25  # one stuck call is a fault, not a hiccup, when it lasts this share of the window
HICCUP_MS = 10_000.0  # or longer than a busy host stalls a call
MIN_SCORE = 1.0  # below this the best candidate is the noise of a busy host: name nothing


def _mentions(question: str, names: list[str]) -> set[str]:
    words = set(re.findall(r"[\w.:-]+", question.lower()))
    return {n for n in names if n.lower() in words}


def _candidates(walker: Walker, found: list[Anomaly], focus: set[str], sig: Signals) -> dict:
    cands: dict[tuple[str, str], Candidate] = {}
    symptoms = [a for a in found if a.kind in WALKED]
    symptoms.sort(key=lambda a: (a.service not in focus and a.caller not in focus, -a.score))
    top_all = max((a.score for a in symptoms), default=1.0) or 1.0
    walked = symptoms[:SYMPTOMS]
    # Failures of operations not walked yet too: failures are few and cheap to walk, and an
    # operation that fails only now and then (a wrong value on a share of calls) tells which
    # of the calls its failing requests share is the cause, however many slowdowns rank above.
    seen = {(a.service, a.operation, a.caller) for a in walked}
    failed = [a for a in symptoms[SYMPTOMS:] if a.kind in FAILED
              and (a.service, a.operation, a.caller) not in seen]
    walked += failed[:FAILED_SYMPTOMS]
    # The lowest symptoms in the call graph too: a cause deep below shows first as many larger
    # symptoms above it, which alone would fill the walks.
    hit = {a.service for a in symptoms}
    for a in symptoms[SYMPTOMS:]:
        if len(walked) >= SYMPTOMS + LOW_SYMPTOMS + FAILED_SYMPTOMS:
            break
        if not (_reach(walker, a.service) & hit) and a.service not in {w.service for w in walked}:
            walked.append(a)
    got = [(a, walker.votes(a)) for a in walked]
    # Scaled by the largest symptom whose walks led somewhere: a large symptom that led
    # nowhere (the noise of a busy host) does not make the others small.
    top = max((a.score for a, votes in got if votes), default=1.0) or 1.0
    for a, votes in got:
        for v in votes:
            svc = walker.canon(v.key[0], v.span)
            c = cands.setdefault((svc, v.kind), Candidate(key=(svc, v.key[1]), kind=v.kind))
            w = v.weight * (a.score / top) / max(len(votes), 1)
            c.votes += w
            c.walked = True
            if v.failed_after is not None:
                c.answered.append(v.failed_after)
            c.ops[v.key[1]] = c.ops.get(v.key[1], 0.0) + w
            if v.span.trace_id not in c.traces:
                c.spans.append(v.span)
                c.excess_ms.append(v.excess_ms)
                c.gap_ms.append(v.gap_ms)
            c.traces.add(v.span.trace_id)
    _signal_candidates(walker, sig, cands)
    add_rare(walker, found, cands)  # failures too few for a test, each on its service's own answer
    add_pools(sig, cands)  # requests waiting, calling nothing, for a pooled connection
    # A client that serves nothing and takes no work from a queue (a load generator, a user's
    # script) sends what it is asked to: fewer calls from it are less demand, or a symptom of
    # what it calls, never a cause.
    serving = {r.service for r in walker.store.red(walker.baseline, by="service")}
    for a in found:
        if a.kind == "traffic_drop" and (a.service in serving or _takes_work(walker, a.service)) \
                and not _upstream_dropped(walker, a, found, sig) \
                and not _waits_below(walker, a.service, found, sig) \
                and not _less_demand(walker, a.service, found) \
                and not _callers_sent_less(walker, a.service):
            c = cands.setdefault((a.service, "traffic"), Candidate(key=(a.service, ""), kind="traffic"))
            c.votes += a.score / top_all
            c.change = a.description
    return cands


def _takes_work(walker: Walker, service: str) -> bool:
    """Whether a service that answers no calls takes its work from a queue (a worker):
    deliveries it receives from a broker, or blocking pops from a list or stream."""
    return any(takes_from(s) for s in walker.store.spans(SpanFilter(
        window=walker.baseline, service=service, limit=200)))


def _signal_candidates(walker: Walker, sig: Signals, cands: dict) -> None:
    """Gap shifts (the callee's network, or a caller slow to send and read) and changed call
    patterns (failures without status codes) as candidates of their own."""
    for g in sig.gaps:
        slow_caller = sig.callers_own(g)
        svc = g.client if slow_caller else walker.canon(g.server)
        kind = "latency" if slow_caller or svc in sig.slow_callers or not (
            g.every_call or g.after) else "network"
        c = cands.setdefault((svc, kind), Candidate(key=(svc, "" if slow_caller else g.operation),
                                                    kind=kind))
        c.votes += GAP_VOTES * g.sure
        c.fixed_change = max(c.fixed_change or 0.0, g.sure)
        if not slow_caller:
            c.ops[g.operation] = c.ops.get(g.operation, 0.0) + 0.5
        for call in g.examples[:3]:
            if call.client.trace_id not in c.traces:
                c.spans.append(call.client)
                c.excess_ms.append(call.gap_ms - g.p50_ms[0])
                c.traces.add(call.client.trace_id)
        c.change = c.change or _gap_text(g)
    for st in sig.stuck:
        # One call stuck for seconds where the operation never took more than a few ms is its
        # size's evidence, not a test's: it counts less than several. A lock held through the
        # fault holds its waiter for much of the window; one call stuck for a moment of it is
        # a hiccup of the host, not a change.
        if len(st.stuck_ms) == 1 and st.stuck_ms[0] < min(SUSTAINED * walker.window.seconds * 1e3,
                                                          HICCUP_MS):
            continue
        svc = walker.canon(st.service, st.examples[0])
        c = cands.setdefault((svc, "latency"), Candidate(key=(svc, st.operation), kind="latency"))
        c.votes += STUCK_VOTES * (1.0 if len(st.stuck_ms) > 1 else 0.7)
        c.ops[st.operation] = c.ops.get(st.operation, 0.0) + STUCK_VOTES
        c.fixed_change = 1.0
        # held for much of the window inside its own spans at a service that calls nothing (a
        # database): the wait is its own (a row lock held through the fault). A service that
        # calls others may be waiting for them or for a pooled connection, which its spans do
        # not show; a few calls slow for seconds are as likely the host's hiccups.
        if st.stuck_ms[0] >= SUSTAINED * walker.window.seconds * 1e3 and not _reach(walker, svc) and all(
                s.service == svc and s.kind in ("SERVER", "CONSUMER") for s in st.examples):
            c.stuck = True
            c.stuck_ms = max(c.stuck_ms, st.stuck_ms[0] - st.base_p50_ms)
        c.change = c.change or st.describe()
        for s, ms in zip(st.examples, st.stuck_ms):
            if s.trace_id not in c.traces:
                c.spans.append(s)
                c.excess_ms.append(ms - st.base_p50_ms)
                c.traces.add(s.trace_id)
    for o in sig.own:
        # its own time grew, alone among the services: its CPU, its threads (starved, throttled).
        # Where walks or gaps reached it already, it is their evidence seen again.
        if any(k[0] == o.service for k in cands):
            continue
        c = cands.setdefault((o.service, "saturation"), Candidate(key=(o.service, ""), kind="saturation"))
        c.votes += OWN_VOTES * o.sure
        c.fixed_change = max(c.fixed_change or 0.0, o.sure)
        c.change = c.change or (
            f"its own time (outside the calls it makes) p50 {o.p50_ms[0]:.1f} -> {o.p50_ms[1]:.1f} ms,"
            f" p90 {o.p90_ms[0]:.1f} -> {o.p90_ms[1]:.1f} ms over {o.count[0]} -> {o.count[1]} requests"
            f" ({o.operations} operation(s) slower; {o.sure:.1%} sure), alone among the services")
        for s, ms in o.examples[:3]:
            if s.trace_id not in c.traces:
                c.spans.append(s)
                c.excess_ms.append(ms - o.p50_ms[0])
                c.gap_ms.append(0.0)
                c.traces.add(s.trace_id)
    for x in sig.silent:
        # no span of it at all for a stretch its rate does not allow, while work for it went
        # on arriving: the process stopped (paused, stuck, throttled to a trickle). A worker's
        # work stops going through; a server's callers wait on it.
        kind = "traffic" if x.worker else "latency"
        c = cands.setdefault((x.service, kind), Candidate(key=(x.service, ""), kind=kind))
        c.votes += SILENT_VOTES * x.sure * min(x.share / SILENT_SHARE, 4.0)
        c.fixed_change = max(c.fixed_change or 0.0, x.sure)
        c.change = x.describe()
        if not c.spans:  # cite its last span before the silence and its first after
            for sp in (x.last, x.first):
                if sp is not None and sp.trace_id not in c.traces:
                    c.spans.append(sp)
                    c.excess_ms.append(0.0)
                    c.gap_ms.append(0.0)
                    c.traces.add(sp.trace_id)
    by_op: dict[tuple[str, str], list] = {}
    # Where spans say how calls ended, failures show there; a changed mix of calls alone is
    # as likely a changed mix of requests.
    for ch in ([] if sig.has_status else sig.shapes):
        # Requests that stop right after one callee answered failed on that answer.
        who = (walker.canon(ch.after), "") if ch.change == "dropped" and ch.after \
            else (ch.service, ch.operation)
        by_op.setdefault(who, []).append(ch)
    for (svc, op), changes in by_op.items():
        c = cands.setdefault((svc, "error"), Candidate(key=(svc, op), kind="error"))
        c.votes += SHAPE_VOTES * max(ch.sure for ch in changes)
        if op:
            c.ops[op] = c.ops.get(op, 0.0) + SHAPE_VOTES
        c.fixed_change = max(c.fixed_change or 0.0, max(ch.sure for ch in changes))
        c.change = c.change or "; ".join(ch.describe() for ch in changes[:3])
        for ch in changes:
            for s in ch.examples[:2]:
                if s.trace_id not in c.traces:
                    c.spans.append(s)
                    c.excess_ms.append(0.0)
                    c.traces.add(s.trace_id)


def _stuck_text(sig: Signals, c: Candidate) -> str:
    return "; ".join(st.describe() for st in sig.stuck if st.operation in c.ops)


def _gap_text(g) -> str:
    return (f"time between {g.client}'s calls and {g.server}'s answers: p50 {g.p50_ms[0]:.1f} ->"
            f" {g.p50_ms[1]:.1f} ms, p90 {g.p90_ms[0]:.1f} -> {g.p90_ms[1]:.1f} ms over"
            f" {g.count[0]} -> {g.count[1]} calls ({g.sure:.1%} sure)")


def _waits_below(walker: Walker, service: str, found: list[Anomaly], sig: Signals) -> bool:
    """A traffic drop while something below the service got slower or fails is a symptom:
    callers that wait for each answer send less when answers take longer."""
    below = _reach(walker, service)
    slow = {a.service for a in found if a.kind in ("latency", "error_rate", "saturation", "new_error")}
    slow |= {a.caller for a in found if a.caller and a.kind in ("latency", "error_rate")}
    slow |= {g.server for g in sig.gaps} | {g.client for g in sig.gaps}
    return bool(slow & (below | {service}))


def _less_demand(walker: Walker, service: str, found: list[Anomaly]) -> bool:
    """A drop at a service called only by clients that serve nothing themselves (load
    generators, users' scripts), whose calls still succeed as before, is fewer requests
    offered: nothing failed. A front that stopped shows in its clients' failing calls."""
    serving = {r.service for r in walker.store.red(walker.baseline, by="service")}
    callers = {walker.canon(e.client) for e in walker.store.service_map(walker.baseline)
               if walker.canon(e.server) == service}
    troubled = {a.service for a in found if a.kind != "traffic_drop"} | \
        {a.caller for a in found if a.caller}
    return bool(callers) and not (callers & serving) and not (callers | {service}) & troubled


def _callers_sent_less(walker: Walker, service: str) -> bool:
    """A served service's traffic is what its callers send: when the calls they made to it
    fell about as far as what it served, the drop is theirs (their own anomalies say why),
    not requests lost on the way to it."""
    def into(w: TimeWindow) -> int:
        return sum(e.count for e in walker.store.service_map(w) if walker.canon(e.server) == service
                   and walker.canon(e.client) != service)

    def served(w: TimeWindow) -> int:
        return sum(r.count for r in walker.store.red(w, by="service") if r.service == service)

    sent_b, sent_c = into(walker.baseline), into(walker.window)
    got_b, got_c = served(walker.baseline), served(walker.window)
    if sent_b < 2 * MIN_SAMPLE or not got_b:
        return False
    sent, got = sent_c / sent_b, got_c / got_b
    return sent <= 0.5 and got >= 0.5 * sent


def _upstream_dropped(walker: Walker, a: Anomaly, found: list[Anomaly],
                      sig: Signals | None = None) -> bool:
    """A drop explained by a caller that dropped, fails or changed its calls belongs to it."""
    troubled = {x.service for x in found if x.service != a.service}
    troubled |= {ch.service for ch in (sig.shapes if sig else []) if ch.service != a.service}
    return any(e.server == a.service and e.client in troubled
               for e in walker.store.service_map(walker.baseline))


def _queueing(c: Candidate) -> bool:
    """Saturation needs evidence of a queue: failures that say so (pool timeouts, 429s), or
    waits that vary from request to request as queueing for a pool, lock or thread does.
    A steady wait (a sleep, a slow step before the first call), or too few requests to tell,
    is the service's own latency."""
    if any(s.status_code == "ERROR" for s in c.spans):
        return True
    if len(c.excess_ms) < 4:
        return False
    waits = sorted(c.excess_ms)
    cut_ = len(waits) // 10
    return waits[-1 - cut_] - waits[cut_] >= 0.25 * waits[len(waits) // 2]


def _merge(cands: list[Candidate], sig: Signals | None = None) -> list[Candidate]:
    """Latency explained by saturation of the same service is that saturation; a wait with no
    sign of queueing is latency."""
    for c in cands:
        if c.kind == "saturation" and not _queueing(c):
            c.kind = "latency"
    lat: dict[str, Candidate] = {}
    for c in [c for c in cands if c.kind == "latency"]:
        first = lat.setdefault(c.key[0], c)
        if first is not c:
            _absorb(first, c)
    cands = [c for c in cands if c.kind != "latency" or lat[c.key[0]] is c]
    for c in cands:
        g = sig.network(c.key[0]) if sig is not None else None
        if c.kind == "latency" and g is not None and sum(c.excess_ms) > 0 and \
                sum(c.gap_ms) >= 0.5 * sum(c.excess_ms):
            c.kind = "network"
    net = {c.key[0]: c for c in cands if c.kind == "network" and c.votes > 0}
    for c in [c for c in cands if c.kind == "network"]:
        if net.get(c.key[0]) not in (None, c):
            _absorb(net[c.key[0]], c)
    cands = [c for c in cands if c.kind != "network" or net.get(c.key[0]) in (None, c)]
    sat = {c.key[0]: c for c in cands if c.kind == "saturation"}
    out = []
    for c in cands:
        s = sat.get(c.key[0])
        if c.kind == "latency" and s is not None:
            _absorb(s, c)
            continue
        if c.kind in ("latency", "error") and c.spans and all(
                "dns.question.name" in x.attributes for x in c.spans):
            c.kind = "dependency"  # name resolution slow or failing: a dependency of every caller
        out.append(c)
    return out


def _slower(cur: RedStats, base: RedStats) -> bool:
    if min(cur.count, base.count) < MIN_SAMPLE:
        return True  # too few to say it did not slow
    return cur.p50_ms >= 1.5 * base.p50_ms + 1.0 or cur.p95_ms >= 2.0 * base.p95_ms + 2.0


def _callers_own(walker: Walker, cands: list[Candidate]) -> list[Candidate]:
    """Longer calls into a service whose own spans of those operations did not slow, while
    its other callers' calls into it stayed as they were, are the one caller's: it is slow
    to send and read (starved of CPU, its threads busy), not the callee or its network,
    which every caller would see."""
    by_svc = {(c.key[0], c.kind): c for c in cands}
    out = []
    for y in cands:
        callers = {s.service for s in y.spans if s.kind == "CLIENT" and s.service != y.key[0]}
        if _FAMILY[y.kind] != 1 or y.kind == "network" or len(callers) != 1 or \
                any(s.service == y.key[0] for s in y.spans):
            out.append(y)
            continue
        x = next(iter(callers))
        ops = {s.name for s in y.spans} | {op for op in y.ops if op}
        own = {r.operation: r for r in walker.store.red(walker.window, by="operation", service=y.key[0])}
        own_b = {r.operation: r for r in walker.store.red(walker.baseline, by="operation", service=y.key[0])}
        mine = [op for op in ops if op in own and op in own_b]
        now = {walker.canon(e.client): e for e in walker.store.service_map(walker.window)
               if walker.canon(e.server) == y.key[0]}
        before = {walker.canon(e.client): e for e in walker.store.service_map(walker.baseline)
                  if walker.canon(e.server) == y.key[0]}
        others = [k for k in now if k not in (x, y.key[0]) and k in before
                  and min(now[k].count, before[k].count) >= MIN_SAMPLE]
        if not mine or any(_slower(from_row(own[op]), from_row(own_b[op])) for op in mine) or not others \
                or any(_slower(from_row(now[k]), from_row(before[k])) for k in others):
            out.append(y)
            continue
        into = by_svc.get((x, "saturation")) or by_svc.get((x, "latency"))
        if into is None:
            into = Candidate(key=(x, ""), kind="latency")
            by_svc[(x, "latency")] = into
            out.append(into)
        # its votes only: the time is inside x's own requests already, and y's operations are not x's
        into.votes += y.votes
        if not into.walked:  # no request walked to x itself: its change is read on its calls to y
            into.walked, into.fixed_change = y.walked, y.fixed_change
            into.ops = into.ops or {"": 1.0}
        for sp, ms in zip(y.spans, y.excess_ms):
            if sp.trace_id not in into.traces and not into.spans:
                into.spans.append(sp)
                into.excess_ms.append(ms)
                into.gap_ms.append(0.0)
        into.traces |= y.traces
        into.change = into.change or (
            f"{x}'s calls to {y.key[0]} got longer while {y.key[0]}'s own spans and its other"
            f" callers' calls ({', '.join(sorted(others)[:3])}) stayed as they were: {x} is slow"
            " to send and read")
    return out


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
        edge = _edge_stats(walker, c.key[0], max(set(callers), key=callers.count) if callers else None)
        if edge is not None:
            cur, base = edge
            own = False  # read on its callers' calls, not on spans like tmpl
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
    than doubled (more work, answered slower)."""
    if cur.rate_per_s > 2 * base.rate_per_s > 0:
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


def _operation(walker: Walker, c: Candidate) -> str | None:
    if c.kind == "traffic":
        rows = walker.store.red(walker.baseline, by="operation", service=c.key[0])
        return max(rows, key=lambda r: r.count).operation if rows else None
    if not c.ops:
        return None
    top_op = max(c.ops, key=c.ops.get)
    return top_op if c.ops[top_op] >= 0.7 * sum(c.ops.values()) else None


def _pick_evidence(c: Candidate, n: int = EVIDENCE) -> list[tuple[Span, float]]:
    """Failing and slow examples in turn, so both sides of a cause get cited."""
    failing = [(s, x) for s, x in zip(c.spans, c.excess_ms) if s.status_code == "ERROR"]
    slow = [(s, x) for s, x in zip(c.spans, c.excess_ms) if s.status_code != "ERROR"]
    slow.sort(key=lambda p: -p[1])
    out = []
    while (failing or slow) and len(out) < n:
        for pool in (failing, slow):
            if pool and len(out) < n:
                out.append(pool.pop(0))
    return out


def _describe(tree: Tree, s: Span, excess_ms: float, culprit: str) -> str:
    who, op = responsible(tree, s)
    pw = peer_wait(tree, s)
    unread = pw is not None and pw[0][0] == culprit and excess_ms > 0
    if unread:
        who, op = pw[0]
    text = f"{s.service} -> {who} `{op}`" if who != s.service else f"{s.service} `{op}`"
    text += f": {s.duration_ns / 1e6:.1f} ms, {s.status_code}"
    if s.status_message:
        text += f" ({s.status_message})"
    if unread:
        text += (f", {excess_ms:.0f} ms more than baseline requests ({pw[1] / 1e6:.0f} ms of it"
                 f" before {who} began the request)")
    elif excess_ms > 0:
        text += f", {excess_ms:.0f} ms more own time than baseline requests"
        wait = tree.wait_before_children_ns(s) if pw is None else None
        if wait and wait > 0.5 * excess_ms * 1e6:
            text += f" ({wait / 1e6:.0f} ms of it before its first downstream call)"
    for k in ("db.query.text", "dns.question.name", "error.type"):
        if s.attributes.get(k):
            text += f"; {k}: {str(s.attributes[k])[:200]}"
    return text


def _traffic_evidence(walker: Walker, c: Candidate) -> list[Evidence]:
    """Requests the service handled in the baseline, and the same calls now left unanswered."""
    out, callers = [], []
    for tree, s in walker.fetch(SpanFilter(window=walker.baseline, service=c.key[0]), 2):
        did = "made this call" if s.kind in ("CLIENT", "PRODUCER") else "handled this"
        out.append(Evidence(trace_id=s.trace_id, span_id=s.span_id,
                            description=f"{s.service} `{s.name}` {did} in the baseline"))
        p = tree.by_id.get(s.parent_span_id or "")
        if p is not None and p.service != s.service and (p.service, p.name) not in callers:
            callers.append((p.service, p.name))
    w = walker.window
    late = TimeWindow((w.start_ns + w.end_ns) // 2, w.end_ns)
    for caller, name in callers[:2]:
        for tree, s in walker.fetch(SpanFilter(window=late, service=caller, name=name), 5):
            if not any(k.kind in ("SERVER", "CONSUMER") for k in tree.children[s.span_id]):
                out.append(Evidence(trace_id=s.trace_id, span_id=s.span_id, description=(
                    f"{caller} `{name}` at {fmt_ns(s.start_time_unix_nano)}: no {c.key[0]}"
                    " span answered it")))
                break
    return out


def _blast(walker: Walker, c: Candidate, found: list[Anomaly]) -> BlastRadius:
    hit = {a.service for a in found} | {a.caller for a in found if a.caller}
    services, endpoints = {c.key[0]}, []
    for tid in sorted(c.traces)[:20]:
        tree = walker.tree(tid)
        services |= {s.service for s in tree.spans if s.service in hit}
        for r in tree.roots:
            ep = f"{r.service} {r.name}"
            if ep not in endpoints:
                endpoints.append(ep)
    for a in found:
        if a.service in services and a.operation and not a.caller and a.kind != "new_error":
            ep = f"{a.service} {a.operation}"
            if ep not in endpoints:
                endpoints.append(ep)
    return BlastRadius(services=sorted(services)[:20], endpoints=endpoints[:20])


def _score(walker: Walker, cands: list[Candidate], sig: Signals) -> None:
    """Each candidate's score before propagation: its votes, how much it changed itself, and
    how much that costs a request."""
    for c in cands:
        g = sig.network(c.key[0]) if c.kind == "network" else None
        # The network's change is in the gaps, not in the callee's own spans.
        change = g.sure if g is not None else _change(walker, c) if c.walked and c.spans else \
            c.fixed_change if c.fixed_change is not None else 1.0
        if c.stuck and change < 1.0:
            # One call held for much of the window (a row lock) leaves its operation's
            # percentiles where they were: its size says it changed, not the percentiles.
            change = 1.0
            c.change = f"{c.change}; {_stuck_text(sig, c)}" if _stuck_text(sig, c) else c.change
        c.changed = change
        c.score = c.votes * change * _impact(c)
        if g is not None and "answers" not in c.change:
            c.change = f"{_gap_text(g)}; {c.change}"


def _own_slowdown(cands: list[Candidate]) -> list[Candidate]:
    """Longer gaps before a callee's spans while its own spans slowed past their baseline
    noise too are its queue (requests wait for a busy server), not its network: the network
    delays calls, never the server's own work. Its network candidate joins its slowdown."""
    own = {c.key[0]: c for c in cands if c.kind in ("latency", "saturation") and c.moved}
    out = []
    for c in cands:
        into = own.get(c.key[0]) if c.kind == "network" else None
        if into is None:
            out.append(c)
            continue
        _absorb(into, c)
        into.score += c.score
    return out


def investigate(store: SpanStore, question: str, window: TimeWindow | None = None,
                anomaly: dict | None = None) -> Report:
    """From a question (or an anomaly), find and rank root causes with evidence."""
    t0 = time.perf_counter()
    store = Memo(store)  # type: ignore[assignment]
    window = window or default_window(store)
    cur, base = split_baseline(store, window)
    found = anomalies(store, cur, base, samples=False)
    walker = Walker(store, cur, base)
    names = store.services(cur) + [e.server for e in store.service_map(cur)]
    focus = _mentions(question, names) | ({anomaly["service"]} if anomaly and anomaly.get("service") else set())
    sig = read_signals(store, cur, base)
    walker.ports, walker.lone = sig.ports, frozenset(sig.lone)
    cands = _callers_own(walker, _merge(list(_candidates(walker, found, focus, sig).values()), sig))
    _score(walker, cands, sig)
    cands = _own_slowdown(cands)
    _downstream_bonus(walker, cands)
    _propagate(walker, cands, sig)
    cands.sort(key=lambda c: -c.score)
    _bar(walker, cands)
    # Too weak to name, unless a test showed a candidate's own failures grew: a failure rate
    # that surely grew is no noise, however few symptoms led to it.
    if cands and cands[0].score < MIN_SCORE and not any(c.shown for c in cands):
        weak, cands = cands, []  # abstain: nothing changed enough to name a cause
    else:
        weak = []
    total = sum(c.score for c in cands) + 0.25
    causes = []
    for i, c in enumerate(cands[:5]):
        if c.kind == "traffic":
            evidence = _traffic_evidence(walker, c) + [
                Evidence(trace_id=s.trace_id, span_id=s.span_id, description=_describe(
                    walker.tree(s.trace_id), s, 0.0, c.key[0])) for s in c.spans[:2]]
        else:
            evidence = [Evidence(trace_id=s.trace_id, span_id=s.span_id,
                                 description=_describe(walker.tree(s.trace_id), s, x, c.key[0]))
                        for s, x in _pick_evidence(c)]
        causes.append(RootCause(
            rank=i + 1, service=c.key[0], operation=_operation(walker, c) or None, kind=c.kind,
            confidence=round(min(0.95, c.score / total), 2), evidence=evidence,
            description=f"{c.kind} at {c.key[0]}: {c.change}" + (
                f"; reached from {len(c.traces)} sampled request(s)." if c.traces else ".")))
    report = Report(
        summary=_summary(causes, found, cur, weak), root_causes=causes,
        blast_radius=_blast(walker, cands[0], found) if cands else BlastRadius(),
        suggested_fix=suggest_fix(causes[0], cands[0].spans[0] if cands[0].spans else None)
        if causes else "Nothing changed against the baseline: widen the window or compare with"
                       " an earlier baseline.",
        engine=EngineInfo(type="deterministic"), question=question,
        window=ReportWindow(start_ns=cur.start_ns, end_ns=cur.end_ns),
        baseline=ReportWindow(start_ns=base.start_ns, end_ns=base.end_ns),
        anomalies=[a.model_dump(mode="json") for a in found[:10]])
    report.duration_s = round(time.perf_counter() - t0, 3)
    return report


def _bar(walker: Walker, cands: list[Candidate]) -> None:
    """The best candidates must have changed for more than one burst of calls, and failures
    must be more than closed connections nobody felt (bar.py); one that is not keeps a fifth
    of its score and its test's word no longer names it alone. Nor does a quiet operation's
    test when services that do not call it slowed as well (bar.not_alone)."""
    for c in cands:
        others = _not_alone(walker, c, cands)
        if others:
            c.shown = False
            c.change += (f"; {', '.join(others[:3])}, which do not call it, slowed too: the host or"
                         " the load, not it alone")
    covered = None
    for c in cands[:3]:
        if c.score < MIN_SCORE and not c.shown:
            continue
        covered = covered or _covered(walker)  # once, and only where a candidate is judged
        got = _burst(walker, c, covered)
        if got is not None:
            c.score *= BURST_WEIGHT
            c.shown = False
            c.change += (f"; its abnormal calls all fell within {got[0]:.1f} s of the {got[1]:.0f} s"
                         " covered: one burst, not a lasting change")
        elif _absorbed(walker, c):
            c.score *= BURST_WEIGHT
            c.shown = False
            c.change += ("; its callers' calls failed at once with no answer from it (closed"
                         " connections, as after a restart) and their requests succeeded anyway")
    cands.sort(key=lambda c: -c.score)


def _summary(causes: list[RootCause], found: list[Anomaly], window: TimeWindow,
             weak: list[Candidate] | None = None) -> str:
    if weak:
        seen = "; ".join(f"{c.kind} at {c.key[0]}: {c.change}" for c in weak[:2])
        return (f"No significant change between the baseline and {fmt_ns(window.start_ns)} to"
                f" {fmt_ns(window.end_ns)} that explains a symptom: nothing is named as a root cause."
                f" The largest changes are too small or too uncertain to blame ({seen}).")
    if not found and not causes:
        return (f"No significant change between the baseline and {fmt_ns(window.start_ns)} to"
                f" {fmt_ns(window.end_ns)}: error rates, latencies and traffic are within baseline.")
    if not causes:
        return f"{len(found)} anomalies found but no request could be walked to a cause: " + \
            "; ".join(a.description for a in found[:3])
    rc = causes[0]
    op = f" `{rc.operation}`" if rc.operation else ""
    symptoms = "; ".join(a.description for a in found[:3]) or rc.description
    return (f"Most likely root cause: {rc.kind} at {rc.service}{op} ({rc.confidence:.0%} confidence)."
            f" Symptoms: {symptoms}.")
