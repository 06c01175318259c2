"""Confirmed causes of similar past incidents as a prior on a new report's ranking.

A post-ranking adjustment, applied after the engine ranked its causes (the engine is not
changed): for each root cause, every similar past incident whose confirmed cause is the same
service (and operation, when both name one) lifts its confidence by
    weight * similarity            (half that when the confirmed kind differs: a past error at
                                    a service is weaker evidence for a latency cause there)
and every past incident marked wrong whose reported cause it repeats (and whose real cause was
elsewhere) lowers it by half that. Confidences stay in [0, 1]; causes are re-ranked by the
adjusted confidence (ties keep the engine's order). A confirmed cause the engine did not rank
is never invented: memory only reorders what the traces support, and says what it did.
"""
from __future__ import annotations

from typing import Any

from guardian.report import Report


def _host(name: str | None) -> str:
    host, _, port = (name or "").strip().lower().rpartition(":")
    return host if host and port.isdigit() else (name or "").strip().lower()


def _same(service: str, operation: str | None, other: dict[str, Any]) -> bool:
    if not other.get("service") or _host(service) != _host(other["service"]):
        return False
    return not operation or not other.get("operation") or operation.lower() == str(other["operation"]).lower()


def apply_prior(report: Report, similar: list[dict[str, Any]], weight: float) -> list[dict[str, Any]]:
    """Adjust `report` in place; returns the adjustments made ({service, operation, delta, because})."""
    if not similar or not report.root_causes or weight <= 0:
        return []
    adjustments = []
    order = {id(rc): i for i, rc in enumerate(report.root_causes)}
    for rc in report.root_causes:
        delta, because = 0.0, []
        for past in similar:
            sim = float(past.get("similarity") or 0)
            cause, reported = past.get("cause") or {}, past.get("reported") or {}
            if _same(rc.service, rc.operation, cause):
                delta += weight * sim * (1.0 if not cause.get("kind") or cause["kind"] == rc.kind else 0.5)
                because.append(past["id"])
            elif past.get("outcome") == "wrong" and _same(rc.service, rc.operation, reported):
                delta -= weight * sim / 2
                because.append(past["id"])
        if delta:
            before = rc.confidence
            rc.confidence = round(min(1.0, max(0.0, rc.confidence + delta)), 3)
            adjustments.append({"service": rc.service, "operation": rc.operation, "from": before,
                                "to": rc.confidence, "because": because})
    report.root_causes.sort(key=lambda rc: (-rc.confidence, order[id(rc)]))
    for i, rc in enumerate(report.root_causes, 1):
        rc.rank = i
    return adjustments
