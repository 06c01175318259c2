"""Memory in the investigation path: after the engine, look up similar past incidents, apply
their confirmed causes as a prior (guardian.memory.prior), attach both to the report, record it.

Called by the job pool (guardian.api.jobs.Jobs.after) for every investigation the API, Slack
and alerts run; does not run the engine itself.
"""
from __future__ import annotations

import logging
from typing import Any

from guardian.memory.prior import apply_prior
from guardian.memory.store import MemoryStore, symptoms_of

log = logging.getLogger(__name__)


class Memory:
    def __init__(self, store: MemoryStore, prior_weight: float = 0.15, use_prior: bool = True):
        self.store, self.weight, self.use_prior = store, prior_weight, use_prior

    def after_investigation(self, job: Any, report: Any) -> Any:
        services = list((job.meta or {}).get("services") or [])
        remember(self, job.id, job.source, job.question, job.window, report, services)
        job.step("memory", f"{len(report.similar)} similar past incident(s)"
                 + (f", prior moved {len(report.prior)} cause(s)" if report.prior else ""))
        return report


def remember(memory: Memory, inv_id: str, source: str, question: str, window: Any, report: Any,
             services: list[str] | None = None) -> Any:
    """Similar incidents + prior on `report` (in place), then record it; returns the report."""
    names, symptoms = symptoms_of(report, services)
    similar = memory.store.similar(names, symptoms, exclude=inv_id)
    report.similar = similar
    report.prior = apply_prior(report, similar, memory.weight) if memory.use_prior else []
    memory.store.record(inv_id, source, question, window, report, services)
    return report
