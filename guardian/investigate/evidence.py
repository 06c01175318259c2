"""What a report cites for a root cause: its operation, the example spans, their one-line
descriptions and the blast radius. Reads trace trees; judges nothing.
"""
from __future__ import annotations

from capture.span import Span
from capture.store.api import SpanFilter, TimeWindow
from guardian.investigate.rank import Candidate
from guardian.investigate.samples import Walker
from guardian.investigate.walk import peer_wait, responsible
from guardian.report import BlastRadius, Evidence
from capture.store.window import fmt_ns
from tools.anomalies import Anomaly
from tools.trace import Tree

EVIDENCE = 5  # examples cited per root cause


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
