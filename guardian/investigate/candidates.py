"""Candidate root causes for the deterministic investigator: votes from the walks of sampled
requests and from the per-call signals (gaps, stuck calls, own time, silences, call patterns),
merged per service and kind. Nothing here scores or ranks them (deterministic.py, rank.py).
"""
from __future__ import annotations

from capture.store.api import SpanFilter, TimeWindow
from guardian.investigate.coverage import covered_s
from guardian.investigate.loss import add_loss
from guardian.investigate.pools import add_pools
from guardian.investigate.rank import FAMILY as _FAMILY
from guardian.investigate.rank import Candidate
from guardian.investigate.rank import absorb as _absorb
from guardian.investigate.rank import reach as _reach
from guardian.investigate.rare import add_rare
from guardian.investigate.samples import Walker
from guardian.investigate.signals import Signals
from tools.anomalies import Anomaly
from tools.silence import SILENT_SHARE, takes_from
from tools.stats import MIN_SAMPLE, RedStats, from_row

SYMPTOMS = 6  # anomalies walked
LOW_SYMPTOMS = 2  # and at most this many more, at services below every other symptom
FAILED_SYMPTOMS = 4  # and at most this many more failures of any size
FAILED = ("error_rate", "new_error", "saturation")
WALKED = ("error_rate", "latency", "saturation", "new_error")
GAP_VOTES = 1.5  # a gap shift tested on every sampled call weighs more than a walk of a few
SHAPE_VOTES = 1.0  # per operation whose call pattern changed (spans without status only)
STUCK_VOTES = 1.5  # per operation with calls stuck far beyond its baseline
OWN_VOTES = 1.0  # a service whose own time grew, alone among the services
SILENT_VOTES = 2.0  # a service that stopped for the shortest silence counted, more the longer
SUSTAINED = 0.25  # one stuck call is a fault, not a hiccup, when it lasts this share of the window
HICCUP_MS = 10_000.0  # or longer than a busy host stalls a call


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
    add_loss(walker, sig, cands)  # answers a retransmission timeout late: the callee's network
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
        c.calls = c.calls or g.count
        if not slow_caller:
            c.ops[g.operation] = c.ops.get(g.operation, 0.0) + 0.5
        for call in g.examples[:3]:
            if call.client.trace_id not in c.traces:
                c.spans.append(call.client)
                c.excess_ms.append(call.gap_ms - g.p50_ms[0])
                c.traces.add(call.client.trace_id)
        c.change = c.change or _gap_text(g)
    held_ms = SUSTAINED * covered_s(walker, walker.window) * 1e3  # a share of the covered time
    for st in sig.stuck:
        if st.few:
            # on fewer than MIN_SAMPLE baseline calls (tools.stuck raises the bar): said, not
            # ranked; one such 19 s query of a jitter case ranks as a lock does (evals/lab)
            continue
        # One call stuck for seconds where the operation never took more than a few ms is its
        # size's evidence, not a test's: it counts less than several. A lock held through the
        # fault holds its waiter for much of the window; one call stuck for a moment of it is
        # a hiccup of the host, not a change.
        if len(st.stuck_ms) == 1 and st.stuck_ms[0] < min(held_ms, HICCUP_MS):
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
        if st.stuck_ms[0] >= held_ms and not _reach(walker, svc) and all(
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
        # work stops going through; a server's callers wait on it. Stopped inside the call
        # that always came next and never answered, it waits on that callee's operation.
        if x.waiting is not None:
            svc, op = walker.canon(x.waiting[0]), x.waiting[1]
            c = cands.setdefault((svc, "latency"), Candidate(key=(svc, op), kind="latency"))
            votes = SILENT_VOTES * x.sure * min(x.share / SILENT_SHARE, 4.0)
            c.votes += votes
            c.ops[op] = c.ops.get(op, 0.0) + votes
            c.fixed_change = max(c.fixed_change or 0.0, x.sure)
            c.stuck, c.stuck_ms = True, max(c.stuck_ms, x.seconds * 1e3)
            c.change = (f"{x.service} stopped right where it calls {svc} `{op}` and never resumed:"
                        f" {x.describe()}; that call never answered")
            if x.last is not None and x.last.trace_id not in c.traces:
                c.spans.append(x.last)
                c.excess_ms.append(x.seconds * 1e3)
                c.gap_ms.append(0.0)
                c.traces.add(x.last.trace_id)
            continue
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
        # Requests that stop right after one callee answered failed on that answer (quit: on
        # that call's answer, the callee's operation).
        who = (walker.canon(ch.after), "") if ch.change == "dropped" and ch.after \
            else (walker.canon(ch.after), ch.what.split(" ", 1)[-1]) if ch.change == "quit" \
            else (ch.service, ch.operation)
        by_op.setdefault(who, []).append(ch)
    for (svc, op), changes in by_op.items():
        c = cands.setdefault((svc, "error"), Candidate(key=(svc, op), kind="error"))
        c.votes += SHAPE_VOTES * max(ch.sure for ch in changes)
        if op:
            c.ops[op] = c.ops.get(op, 0.0) + SHAPE_VOTES
        c.fixed_change = max(c.fixed_change or 0.0, max(ch.sure for ch in changes))
        c.calls = c.calls or min((ch.count for ch in changes), key=min)
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
