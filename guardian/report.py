"""The investigation report: one pydantic model for every engine (deterministic or LLM).

`Report.model_dump()` is the JSON shape of `guardian investigate --json` and the HTTP API;
`to_markdown()` is what humans and Slack see.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Kind = Literal["error", "latency", "saturation", "dependency", "traffic", "network"]


class Evidence(BaseModel):
    trace_id: str
    span_id: str | None = None
    description: str
    verified: bool = True  # False when an LLM cited an id the store does not hold


class RootCause(BaseModel):
    rank: int
    service: str
    operation: str | None = None
    kind: Kind
    confidence: float = Field(ge=0.0, le=1.0)
    description: str = ""
    evidence: list[Evidence] = Field(default_factory=list)


class BlastRadius(BaseModel):
    services: list[str] = Field(default_factory=list)
    endpoints: list[str] = Field(default_factory=list)


class EngineInfo(BaseModel):
    type: Literal["deterministic", "llm"] = "deterministic"
    model: str | None = None


class ReportWindow(BaseModel):
    start_ns: int
    end_ns: int


class Report(BaseModel):
    summary: str
    root_causes: list[RootCause] = Field(default_factory=list)
    blast_radius: BlastRadius = Field(default_factory=BlastRadius)
    suggested_fix: str = ""
    engine: EngineInfo = Field(default_factory=EngineInfo)
    question: str = ""
    window: ReportWindow | None = None
    baseline: ReportWindow | None = None
    anomalies: list[dict[str, Any]] = Field(default_factory=list)  # what triggered it
    duration_s: float | None = None

    def to_markdown(self) -> str:
        """A readable report: summary, ranked causes with evidence, blast radius, fix."""
        from guardian.window import fmt_ns

        out = ["# Guardian investigation", ""]
        if self.question:
            out += [f"**Question:** {self.question}", ""]
        if self.window:
            out += [f"**Window:** {fmt_ns(self.window.start_ns)} to {fmt_ns(self.window.end_ns)}"
                    f" · engine: {self.engine.type}"
                    + (f" ({self.engine.model})" if self.engine.model else ""), ""]
        out += ["## Summary", "", self.summary, ""]
        out += ["## Root causes", ""]
        if not self.root_causes:
            out += ["No root cause found.", ""]
        for rc in self.root_causes:
            op = f" `{rc.operation}`" if rc.operation else ""
            out.append(f"{rc.rank}. **{rc.service}**{op}: {rc.kind},"
                       f" confidence {rc.confidence:.0%}. {rc.description}")
            for ev in rc.evidence:
                mark = "" if ev.verified else " (unverified id)"
                span = f" span `{ev.span_id}`" if ev.span_id else ""
                out.append(f"   - trace `{ev.trace_id}`{span}{mark}: {ev.description}")
        out.append("")
        br = self.blast_radius
        out += ["## Blast radius", "",
                f"- services: {', '.join(br.services) or 'none seen'}",
                f"- endpoints: {', '.join(br.endpoints) or 'none seen'}", ""]
        out += ["## Suggested fix", "", self.suggested_fix or "None suggested.", ""]
        if self.anomalies:
            out += ["## Anomalies seen", ""]
            out += [f"- {a.get('description') or a}" for a in self.anomalies[:10]]
            out.append("")
        return "\n".join(out)
