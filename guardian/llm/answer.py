"""From the model's final text to a Report: parse it leniently, check every cited id in the
store, and merge it with the deterministic findings it started from.

Rule 1: an id the store does not hold is never presented as evidence (verified=false, and
it adds nothing to confidence). Rule 2: the model may overrule the deterministic top cause
only with a verified trace from the investigated window in which its cause is where the
failure or the time starts, and only for a service that changed against the baseline (not a
red herring failing all along). A trace from before the incident shows how things were, not
what broke.
Rule 3: a fix the model suggests is marked as an unverified model suggestion; rendering
(guardian.report.untrusted) keeps its links and markup inert.
Rule 4: when the findings name no cause (nothing changed), an unsupported answer names none.
"""
from __future__ import annotations

import json
import re
from typing import Any

from capture.span import Span
from capture.store.api import SpanStore
from guardian.report import UNVERIFIED_FIX, EngineInfo, Evidence, Report, ReportWindow, RootCause
from tools.base import peer_of

KINDS = ("error", "latency", "saturation", "dependency", "traffic", "network")
_ID = re.compile(r"\b(?:[0-9a-f]{32}|[0-9a-f]{16})\b")
_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.S)


def parse_answer(text: str | None) -> dict[str, Any] | None:
    """The first JSON object in the text (fenced or bare), or None."""
    if not text:
        return None
    candidates = [m.group(1) for m in _FENCED.finditer(text)]
    start = text.find("{")
    if start >= 0:
        candidates.append(text[start: text.rfind("}") + 1])
    for c in candidates:
        try:
            obj = json.loads(c)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


class IdChecker:
    """Looks ids up in the store once each."""

    def __init__(self, store: SpanStore):
        self.store = store
        self._traces: dict[str, list[Span]] = {}

    def trace(self, trace_id: str) -> list[Span]:
        if trace_id not in self._traces:
            self._traces[trace_id] = self.store.trace(trace_id) if _ID.fullmatch(trace_id or "") else []
        return self._traces[trace_id]

    def verified(self, trace_id: str, span_id: str | None = None) -> bool:
        spans = self.trace(trace_id)
        return bool(spans) and (span_id is None or any(s.span_id == span_id for s in spans))

    def mark_text(self, text: str) -> str:
        """Free text with every id-looking token the store does not hold marked as unverified."""
        def sub(m: re.Match) -> str:
            tok = m.group(0)
            ok = self.verified(tok) if len(tok) == 32 else self._span_known(tok)
            return tok if ok else f"{tok} (unverified)"
        return _ID.sub(sub, text or "")

    def _span_known(self, span_id: str) -> bool:
        return any(s.span_id == span_id for spans in self._traces.values() for s in spans)


def _origin(spans: list[Span], kind: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Who a trace blames, as (service, operation): owners of the deepest error spans, and of
    the span with most own time. A CLIENT span's own time is its callee's only when the callee
    has no span of its own here; beside the callee's SERVER span it is the gap between them,
    the callee's network or ingress (kind "network") or the caller's own delay, never the
    callee's processing."""
    children: dict[str | None, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent_span_id, []).append(s)

    def names(s: Span) -> set[tuple[str, str]]:
        mine = {(s.service, s.name)}
        if s.kind not in ("CLIENT", "PRODUCER"):
            return mine
        served = [c for c in children.get(s.span_id, []) if c.kind in ("SERVER", "CONSUMER")]
        if not served:
            peer = peer_of(s)
            return mine | ({(peer, s.name)} if peer else set())
        return mine | ({(c.service, c.name) for c in served} if kind == "network" else set())

    err: set[tuple[str, str]] = set()
    for s in spans:
        if s.status_code == "ERROR" and not any(c.status_code == "ERROR" for c in children.get(s.span_id, [])):
            err |= names(s)
    slow: set[tuple[str, str]] = set()
    if spans:
        own = {s.span_id: s.duration_ns - sum(c.duration_ns for c in children.get(s.span_id, [])) for s in spans}
        top = max(spans, key=lambda s: own[s.span_id])
        slow = names(top)
    return err, slow


def _during(spans: list[Span], window: ReportWindow | None) -> bool:
    return window is None or any(s.start_time_unix_nano < window.end_ns and s.end_time_unix_nano > window.start_ns
                                 for s in spans)


def supported(checker: IdChecker, service: str, kind: str, trace_ids: list[str],
              window: ReportWindow | None = None, operation: str | None = None) -> bool:
    """True when a verified cited trace in `window` shows `service` (and `operation`, when
    named) where the failure (or the time) starts."""
    for tid in trace_ids:
        spans = checker.trace(tid)
        if not spans or not _during(spans, window):
            continue
        err, slow = _origin(spans, kind)
        blamed = slow if kind in ("latency", "network") else err | (slow if not err else set())
        if any(_host(svc) == _host(service) and (not operation or op.lower() == operation.lower())
               for svc, op in blamed):
            return True
    return False


def _host(name: str) -> str:
    """'coredns:53' -> 'coredns': models drop ports the store keeps."""
    host, _, port = name.strip().lower().rpartition(":")
    return host if host and port.isdigit() else name.strip().lower()


def _same(a: RootCause, service: str, operation: str | None) -> bool:
    return _host(a.service) == _host(service) and (not operation or not a.operation or a.operation == operation)


def changed(findings: Report) -> set[str]:
    """Services (and dependencies) that changed against the baseline, per the findings.
    Red herrings fail before and during, so they are not in it."""
    names = {rc.service for rc in findings.root_causes}
    names |= {str(a["service"]) for a in findings.anomalies if isinstance(a, dict) and a.get("service")}
    return {_host(n) for n in names}


def build_report(store: SpanStore, answer: dict[str, Any] | None, findings: Report, model: str,
                 question: str = "") -> Report:
    """The agent's report: the findings, confirmed, refined or overruled by a checked answer."""
    checker = IdChecker(store)
    report = findings.model_copy(deep=True)
    report.engine = EngineInfo(type="llm", model=model)
    report.question = question or findings.question
    # The findings' own ids are checked too: nothing unverifiable leaves the agent.
    for rc in report.root_causes:
        for ev in rc.evidence:
            ev.verified = checker.verified(ev.trace_id, ev.span_id)
    if not answer or not isinstance(answer.get("service"), str) or not answer["service"].strip():
        report.summary = (findings.summary + " (The model gave no usable answer; these are the"
                          " deterministic findings, ids checked.)").strip()
        return report

    service = answer["service"].strip()
    operation = answer.get("operation") if isinstance(answer.get("operation"), str) else None
    operation = None if operation in ("", "null", "None") else operation
    kind = answer.get("kind") if answer.get("kind") in KINDS else (
        report.root_causes[0].kind if report.root_causes else "error")
    cited = [t for t in answer.get("trace_ids") or [] if isinstance(t, str)][:5]
    evidence = [Evidence(trace_id=t, description="cited by the model", verified=checker.verified(t)) for t in cited]
    n_ok = sum(e.verified for e in evidence)
    description = checker.mark_text(str(answer.get("description") or ""))
    # Overruling needs both: the traces show it starting there, and it changed vs the baseline.
    is_supported = _host(service) in changed(findings) and supported(
        checker, service, kind, [e.trace_id for e in evidence if e.verified], findings.window, operation)

    causes = report.root_causes
    top = causes[0] if causes else None
    if top and _same(top, service, operation):
        top.evidence += [e for e in evidence if e.verified and e.trace_id not in {x.trace_id for x in top.evidence}]
        if is_supported:
            top.confidence = round(min(1.0, top.confidence + 0.05), 3)
        if description:
            top.description = f"{top.description} Model: {description}".strip()
        ordered = causes
    else:
        base = top.confidence if top else 0.6
        conf = base * (n_ok / len(evidence)) if evidence else 0.0
        mine = RootCause(rank=0, service=service, operation=operation, kind=kind,
                         confidence=round(min(conf, 1.0) if is_supported else min(conf, 0.1), 3),
                         description=description if is_supported else
                         f"Model's hypothesis, not supported by the traces it cited: {description}".strip(),
                         evidence=evidence)
        rest = [c for c in causes if not _same(c, service, operation)]
        # With no finding to rank against (nothing changed), an unsupported story adds no cause.
        ordered = [mine, *rest] if is_supported else [*causes, mine] if causes else []
    for i, rc in enumerate(ordered, 1):
        rc.rank = i
    report.root_causes = ordered
    if not ordered and not causes:
        report.summary = (f"{findings.summary} The model suggested {service}, but the traces it"
                          " cited do not show the failure starting there.").strip()
    elif ordered and ordered[0].service != service:
        # The model's story lost to the evidence: keep the findings' summary and say so.
        report.summary = (f"{findings.summary} The model suggested {service}, but the traces it"
                          " cited do not show the failure starting there.").strip()
    elif isinstance(answer.get("summary"), str) and answer["summary"].strip():
        report.summary = checker.mark_text(answer["summary"].strip())
    if isinstance(answer.get("suggested_fix"), str) and answer["suggested_fix"].strip():
        # A model's fix (a command, a config change) was never checked by anything: say so.
        report.suggested_fix = UNVERIFIED_FIX + checker.mark_text(answer["suggested_fix"].strip())
    return report
