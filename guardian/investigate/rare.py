"""Failures too few for any rate test: a service answered a request with an error of its own
(an exception: an HTTP 5xx it raised, not a gateway's 502/504 passing on a callee's failure;
a gRPC INTERNAL/UNKNOWN/UNAVAILABLE), the request it served failed with it, and that operation
never failed in the baseline. On a service called a few times a minute an exception or a wrong
value makes one or two such failures: no test can be sure of them, but nothing on a calm day
looks like them (calm days fail on transport: closed connections, unanswered lookups, the
gateway errors those cause). Each is a candidate that says how unsure it is; a wrong value is
blamed on the callee whose answer the service failed on (Walker._answered).
"""
from __future__ import annotations

from capture.span import Span
from capture.store.api import SpanFilter
from guardian.investigate.rank import Candidate
from guardian.investigate.samples import Walker
from guardian.investigate.walk import Vote, _failure_kind, responsible
from tools.anomalies import Anomaly
from tools.base import peer_of
from tools.stats import RedStats, confidence, error_p, from_row, from_spans
from tools.trace import Tree

RARE_SPANS = 200  # failed spans read in the window
RARE_TREES = 20  # traces read for them, at most (one query each)
RARE_VOTES = 1.0  # per failed request: its size, not a test, is behind it
GATEWAY = {"502", "504"}  # a proxy passing on its callee's failure: not its own
GRPC_OWN = {"2", "13", "14"}  # UNKNOWN, INTERNAL, UNAVAILABLE: the server's own failure
FAILED = ("error_rate", "new_error", "saturation")


def own_answer(s: Span) -> bool:
    """The span carries an error answer its server raised itself (HTTP 5xx but gateway codes,
    gRPC INTERNAL/UNKNOWN/UNAVAILABLE). Transport failures (no answer) and database errors
    (answers to what a caller sent) are not."""
    http = str(s.attributes.get("http.response.status_code") or "")
    grpc = str(s.attributes.get("rpc.grpc.status_code") or "")
    return (http.startswith("5") and len(http) == 3 and http not in GATEWAY) or grpc in GRPC_OWN


def felt(tree: Tree, s: Span) -> bool:
    """The request s was part of failed: a span above it, in another service, failed too, or s
    answered a client we do not see (a request entering here). A failure under a request
    that succeeded anyway (retried, done without) was felt by no one."""
    p = tree.by_id.get(s.parent_span_id or "")
    if p is None:
        return s.kind in ("SERVER", "CONSUMER")
    while p is not None:
        if p.service != s.service and p.status_code == "ERROR":
            return True
        p = tree.by_id.get(p.parent_span_id or "")
    return False


def _baseline(walker: Walker, s: Span) -> tuple[RedStats, RedStats] | None:
    """Calls like s now and in the baseline: its operation's RED, or for a call no span of the
    server answered, the caller's calls to that peer and operation."""
    if s.kind in ("SERVER", "CONSUMER"):
        got = []
        for w in (walker.window, walker.baseline):
            rows = [r for r in walker.store.red(w, by="operation", service=s.service) if r.operation == s.name]
            got.append(from_row(rows[0] if rows else None))
        return got[0], got[1]
    peer = peer_of(s)
    if not peer:
        return None
    got = []
    for w in (walker.window, walker.baseline):
        calls = [c for c in walker.store.spans(SpanFilter(window=w, service=s.service, name=s.name,
                                                          kind=s.kind, limit=500)) if peer_of(c) == peer]
        got.append(from_spans(calls, w.seconds))
    return got[0], got[1]


def rare_votes(walker: Walker, found: list[Anomaly]) -> list[tuple[Vote, RedStats, RedStats]]:
    """One vote per request that failed on a service's own error answer, in an operation no
    anomaly reports failing and whose baseline calls never failed."""
    reported = {(a.service, a.operation) for a in found if a.kind in FAILED}
    reported |= {(a.caller, None) for a in found if a.kind in FAILED and a.caller}
    out, seen, read = [], set(), 0
    for s in walker.store.spans(SpanFilter(window=walker.window, status_code="ERROR", limit=RARE_SPANS)):
        if s.trace_id in seen or not own_answer(s) or (s.service, s.name) in reported \
                or (s.service, None) in reported:
            continue
        read += 1
        if read > RARE_TREES:
            break  # more than a few: not rare, and the anomalies' tests speak for them
        tree = walker.tree(s.trace_id)
        kids = tree.children[s.span_id]
        if any(k.status_code == "ERROR" for k in kids) or (
                s.kind == "CLIENT" and any(k.kind == "SERVER" for k in kids)):
            continue  # not the deepest failure: the one below is
        if not felt(tree, s):
            continue
        got = _baseline(walker, s)
        if got is None or got[1].count == 0 or got[1].errors > 0:
            continue  # new, or it failed before too: nothing says this is a change
        seen.add(s.trace_id)
        v = Vote(responsible(tree, s), _failure_kind(s), s, RARE_VOTES)
        out += [(x, *got) for x in walker._answered(tree, v)]
    return out


def add_rare(walker: Walker, found: list[Anomaly], cands: dict) -> None:
    """The rare failures as candidates (or votes for candidates the walks found already)."""
    for v, cur, base in rare_votes(walker, found):
        svc = walker.canon(v.key[0], v.span)
        c = cands.get((svc, v.kind))
        fresh = c is None
        if fresh:
            c = cands[(svc, v.kind)] = Candidate(key=(svc, v.key[1]), kind=v.kind)
            c.fixed_change = 1.0
        c.votes += v.weight
        c.ops[v.key[1]] = c.ops.get(v.key[1], 0.0) + v.weight
        if v.failed_after is not None:
            c.answered.append(v.failed_after)
        if v.span.trace_id not in c.traces:
            c.spans.append(v.span)
            c.excess_ms.append(0.0)
            c.gap_ms.append(0.0)
            c.traces.add(v.span.trace_id)
        if fresh or not c.change:
            c.change = describe(v, cur, base)


def describe(v: Vote, cur: RedStats, base: RedStats) -> str:
    f = v.failed_after or v.span
    how = f"{v.span.status_message or 'an error'}"
    if v.failed_after is not None:
        head = (f"{f.service} `{f.name}` failed right after {v.span.service} answered with"
                f" success, where its requests used to go on")
    elif f.kind == "CLIENT":  # no span of the server: its answer is seen on the call
        head = (f"{v.key[0]} answered {f.service}'s call `{f.name}` with {how} of its own, and the"
                " request it was made for failed with it")
    else:
        head = f"{f.service} `{f.name}` answered {how} of its own, and its caller's request failed with it"
    sure = confidence(error_p(cur, base))
    return (f"{head}; {cur.errors} of {cur.count} calls failed now, none of {base.count} in the"
            f" baseline: too few to test ({sure:.0%} sure the rate grew), but a calm day's failures"
            " are closed connections, not answers like this")
