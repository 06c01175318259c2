"""Anomalies: what changed between a baseline window and now, ranked by impact.

Error-rate and latency shifts per endpoint (SERVER/CONSUMER) and per dependency edge (so
databases and caches count too), new error kinds, saturation errors, traffic drops.
`anomalies()` is also what the scheduler calls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore, TimeWindow
from tools.base import Capped, Tool, WindowArgs, cap, require_data, sample_traces, windows
from tools.errors import error_groups
from tools.services import Edge, compare_edges, edge_samples
from tools.sampling import covered
from tools.stats import (SURE, RedStats, confidence, drop_p, error_p, error_shift, from_row,
                         latency_ratio, latency_shift, scaled, tail_line, tail_p, tail_to_test,
                         traffic_drop)
from tools.trace import Tree

SAMPLED = 10  # anomalies that get sample trace ids (each costs a query or two)
TAIL_CALLS_READ = 1000  # calls read per side to test a quiet operation's tail (it has < 50 now)
AnomalyKind = Literal["error_rate", "latency", "traffic_drop", "new_error", "saturation"]


class Anomaly(BaseModel):
    kind: AnomalyKind
    service: str
    operation: str | None = None
    caller: str | None = Field(None, description="set when seen on calls from this service")
    score: float
    current: RedStats
    baseline: RedStats
    description: str
    trace_ids: list[str] = Field(default_factory=list)


def _score(severity: float, affected: float) -> float:
    return round(max(min(severity, 1.0), 0.0) * math.log1p(max(affected, 0.0)), 4)


def _shifts(service: str, op: str | None, caller: str | None, c: RedStats,
            b: RedStats, tail_sure: float = 0.0) -> list[Anomaly]:
    out = []
    where = f"{service}" + (f" {op}" if op else "") + (f" (called by {caller})" if caller else "")
    if error_shift(c, b):
        out.append(Anomaly(
            kind="error_rate", service=service, operation=op, caller=caller, current=c, baseline=b,
            score=_score((c.error_rate - b.error_rate) * 2, c.errors - b.error_rate * c.count),
            description=f"{where}: error rate {b.error_rate:.1%} -> {c.error_rate:.1%}"
                        f" ({c.errors} errors of {c.count}" + (
                            f"; {confidence(error_p(c, b)):.1%} sure)" if b.count else ")")))
    if latency_shift(c, b, tail_sure):
        r = latency_ratio(c, b)
        out.append(Anomaly(
            kind="latency", service=service, operation=op, caller=caller, current=c, baseline=b,
            score=_score(math.log2(r) / 3, c.count),
            description=f"{where}: p95 {b.p95_ms:.1f} ms -> {c.p95_ms:.1f} ms (x{r:.1f}),"
                        f" p50 {b.p50_ms:.1f} -> {c.p50_ms:.1f} ms"))
    return out


def anomalies(store: SpanStore, window: TimeWindow, baseline: TimeWindow,
              samples: bool = True) -> list[Anomaly]:
    """Every anomaly in window vs baseline, highest score first (trace ids if samples)."""
    found: list[Anomaly] = []
    cur = {(r.service, r.operation): r for r in store.red(window, by="operation")}
    base = {(r.service, r.operation): r for r in store.red(baseline, by="operation")}
    for key in cur:
        c, b = from_row(cur[key]), from_row(base.get(key))
        sure = 0.0
        if tail_to_test(c, b):  # a quiet operation's tail: the test on its calls says (two at least)
            t = quiet_tail(store, window, baseline, key[0], key[1])
            sure = 1.0 - t.p if t.k >= 2 else 0.0  # unrounded: 98.95 % is not 99 %
        found += _shifts(key[0], key[1], None, c, b, sure)
    served = {k[0] for k in cur} | {k[0] for k in base}
    svc_cur = {r.service: r for r in store.red(window)}
    # Rates per second of data: a window running past the data's end is not a drop.
    cov, cov_b = covered(store, window), covered(store, baseline)
    for r in store.red(baseline):
        c = scaled(from_row(svc_cur.get(r.service)), window.seconds, cov)
        b = scaled(from_row(r), baseline.seconds, cov_b)
        # One request makes several spans at a service (a publish, its get and ack): spans
        # come in bunches, so chance is judged on its busiest operation's requests alone.
        ops = [k for k in base if k[0] == r.service]
        top = max(ops, key=lambda k: base[k].count) if ops else None
        unit = (scaled(from_row(cur.get(top)), window.seconds, cov),
                scaled(from_row(base[top]), baseline.seconds, cov_b)) if top else (c, b)
        if traffic_drop(c, b, tested=False) and drop_p(*unit) < 1 - SURE:
            found.append(Anomaly(
                kind="traffic_drop", service=r.service, current=c, baseline=b,
                score=_score(1 - c.rate_per_s / b.rate_per_s, b.count),
                description=f"{r.service}: traffic {b.rate_per_s:.2f}/s -> {c.rate_per_s:.2f}/s"))
    flagged = {(a.service, a.kind) for a in found}
    edges = compare_edges(store, window, baseline)
    for e in edges:
        e.current = scaled(e.current, window.seconds, cov)
        e.baseline = scaled(e.baseline, baseline.seconds, cov_b)
    for e in edges:
        for a in _shifts(e.server, None, e.client, e.current, e.baseline):
            # An observed server already reports its own shift; the edge adds nothing.
            if e.server not in served or (e.server, a.kind) not in flagged:
                found.append(a)
    found += _caller_drops(edges, served)
    erroring = {(a.service, a.operation) for a in found if a.kind == "error_rate"}
    # A failing service's outgoing calls that fail are its callees' errors seen again.
    erroring |= {(a.service, None) for a in found if a.kind == "error_rate"}
    for g in error_groups(store, window, baseline=baseline):
        kind = "saturation" if g.error_class == "saturation" else "new_error"
        if kind == "saturation" and g.baseline_count * 2 >= g.count:
            continue
        if kind == "new_error" and (not g.new or g.count < 3 or (g.service, g.operation) in erroring
                                    or (g.kind == "CLIENT" and (g.service, None) in erroring)):
            continue
        found.append(Anomaly(
            kind=kind, service=g.service, operation=g.operation,
            current=RedStats(count=g.count, errors=g.count),
            baseline=RedStats(count=g.baseline_count, errors=g.baseline_count),
            score=_score(0.5, g.count - g.baseline_count), trace_ids=g.sample_trace_ids[:3],
            description=f"{g.service} {g.operation}: {g.count} x {g.code} {g.message!r}"
                        f" ({g.baseline_count} in baseline)"))
    found.sort(key=lambda a: -a.score)
    if samples:
        for a in found[:SAMPLED]:
            if not a.trace_ids:
                a.trace_ids = _samples(store, window, baseline, a)
    return found


@dataclass
class Tail:
    """tools.stats.tail_p on one quiet operation's calls, as quiet_tail read them."""
    p: float
    k: int  # calls now above the line
    line_ms: float  # the baseline's p99, or its service's over every operation when higher
    now: list[float]  # durations (ms) now, calls made for new work left out
    before: list[float]


def quiet_tail(store: SpanStore, window: TimeWindow, baseline: TimeWindow, service: str,
               name: str | None, kind: str | None = None) -> Tail:
    """Whether a quiet operation's calls cross its baseline's p99 (and its service's: a service
    already that slow in other operations is not new to slowness) more often than chance
    allows. Calls made for a client the baseline never saw (a batch job, a script someone ran)
    are new work, which a busy service answers slowly: not counted."""
    def calls(w: TimeWindow) -> list[Span]:
        return [s for s in store.spans(SpanFilter(window=w, service=service, name=name, kind=kind,
                                                  limit=TAIL_CALLS_READ))
                if kind is not None or s.kind in ("SERVER", "CONSUMER")]

    now, before = calls(window), [s.duration_ns / 1e6 for s in calls(baseline)]
    floor = max((r.p99_ms for r in store.red(baseline) if r.service == service), default=0.0)
    line = max(tail_line(before), floor)
    if sum(1 for s in now if s.duration_ns / 1e6 > line) >= 2:
        seen = set(store.services(baseline))
        now = [s for s in now if s.duration_ns / 1e6 <= line
               or not new_work(Tree(store.trace(s.trace_id)).roots, seen)]
    durations = [s.duration_ns / 1e6 for s in now]
    p, k = tail_p(durations, before, floor)
    return Tail(p=p, k=k, line_ms=line, now=durations, before=before)


def new_work(roots: list[Span], before: set[str]) -> bool:
    """A request started by a client that made no request in the baseline (a batch job, a
    script someone ran): new work, which a busy service answers slowly, not a change of the
    service."""
    return bool(before) and any(r.kind in ("CLIENT", "PRODUCER", "INTERNAL") and r.service not in before
                                for r in roots)


def _caller_drops(edges: list[Edge], served: set[str]) -> list[Anomaly]:
    """Traffic drops of services seen only as callers (workers, consumers that fetch, jobs):
    the calls they make are their traffic, and a stopped one makes none. Not when its calls
    got slow or fail (it waits on its callees), nor when the work it takes stopped arriving
    (a service it calls lost traffic from its other callers too: fewer publishes)."""
    def total(of: list[Edge]) -> tuple[RedStats, RedStats]:
        c, b = RedStats(), RedStats()
        for e in of:
            for acc, s in ((c, e.current), (b, e.baseline)):
                acc.count += s.count
                acc.rate_per_s += s.rate_per_s
        return c, b

    out = []
    for svc in sorted({e.client for e in edges} - served):
        mine = [e for e in edges if e.client == svc]
        c, b = total(mine)
        # Each piece of work makes one call to each callee: chance is judged per callee.
        k = len(mine)
        unit = (c.model_copy(update={"count": round(c.count / k), "rate_per_s": c.rate_per_s / k}),
                b.model_copy(update={"count": round(b.count / k), "rate_per_s": b.rate_per_s / k}))
        if not traffic_drop(c, b, tested=False) or drop_p(*unit) >= 1 - SURE or any(error_shift(e.current, e.baseline) or
                                         latency_shift(e.current, e.baseline) for e in mine):
            continue
        if any(_arrivals_explain(c, b, *total([o for o in edges if o.server == e.server
                                                and o.client != svc])) for e in mine):
            continue
        out.append(Anomaly(kind="traffic_drop", service=svc, current=c, baseline=b,
                           score=_score(1 - c.rate_per_s / b.rate_per_s, b.count),
                           description=f"{svc}: calls it makes {b.rate_per_s:.2f}/s ->"
                                       f" {c.rate_per_s:.2f}/s (it serves no requests: its calls"
                                       " are its work)"))
    return out


def _arrivals_explain(c: RedStats, b: RedStats, others_c: RedStats, others_b: RedStats) -> bool:
    """Fewer publishes explain a worker's fewer calls when they fell about as far: work that
    stopped arriving, not a worker that stopped taking it."""
    if not traffic_drop(others_c, others_b, tested=False):
        return False
    arrived = others_c.rate_per_s / others_b.rate_per_s
    return c.rate_per_s >= 0.5 * arrived * b.rate_per_s


def _samples(store: SpanStore, window: TimeWindow, baseline: TimeWindow, a: Anomaly) -> list[str]:
    failing = a.kind == "error_rate"
    if a.caller:
        return edge_samples(store, window, a.caller, a.service, failing)
    if a.kind == "traffic_drop":
        return sample_traces(store, SpanFilter(window=baseline, service=a.service), 2)
    return sample_traces(store, SpanFilter(
        window=window, service=a.service, name=a.operation,
        status_code="ERROR" if failing else None,
        order="start" if failing else "duration_desc"), 3)


class AnomaliesArgs(WindowArgs):
    service: str | None = Field(None, description="only anomalies of this service")
    limit: int = Field(20, ge=1, le=100)


class AnomaliesResult(Capped):
    window: dict[str, int]
    baseline: dict[str, int]
    anomalies: list[Anomaly]


def anomalies_tool(store: SpanStore, args: AnomaliesArgs) -> AnomaliesResult:
    window, baseline = windows(store, args)
    require_data(store, window)
    found = anomalies(store, window, baseline)
    if args.service:
        found = [a for a in found if args.service in (a.service, a.caller)]
    found, trunc, sugg = cap(found, args.limit, "pass service=<name> to see one service's anomalies")
    return AnomaliesResult(window={"start_ns": window.start_ns, "end_ns": window.end_ns},
                           baseline={"start_ns": baseline.start_ns, "end_ns": baseline.end_ns},
                           anomalies=found, truncated=trunc, suggestion=sugg)


TOOLS = [
    Tool("anomalies",
         "What changed vs the baseline window, ranked by impact: error-rate and latency shifts per "
         "endpoint and per dependency (databases, caches, brokers via their callers), new error "
         "kinds, saturation errors (pools, limits), traffic drops (stopped consumers). Use it first "
         "when asked 'what is wrong'. trace_ids are sample requests showing each anomaly.",
         AnomaliesArgs, AnomaliesResult, anomalies_tool),
]
