"""The investigation report: one pydantic model for every engine (deterministic or LLM).

`Report.model_dump()` is the JSON shape of `guardian investigate --json` and the HTTP API;
`to_markdown()` is what humans and Slack see.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

Kind = Literal["error", "latency", "saturation", "dependency", "traffic", "network"]
UNVERIFIED_FIX = "Unverified model suggestion (check it before running anything): "

_URL = re.compile(r"\b[a-z][a-z0-9+.-]{1,15}://\S+|\bwww\.\S+", re.I)
_MD_SPECIAL = re.compile(r"([\\\[\]<])")  # "<" alone stops autolinks and HTML; "->" stays readable


def untrusted(text: Any) -> str:
    """Captured or model text made inert in Markdown (and so in Slack): one line, no code-span
    breakouts, brackets and "<" escaped (no links, mentions or HTML), and URLs shown as code so
    that no renderer turns them into live links."""
    t = " ".join(str(text or "").split()).replace("`", "'")
    t = _MD_SPECIAL.sub(r"\\\1", t)
    return _URL.sub(lambda m: f"`{m.group(0)}`", t)


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
    similar: list[dict[str, Any]] = Field(default_factory=list)  # past incidents alike (guardian.memory)
    prior: list[dict[str, Any]] = Field(default_factory=list)  # how their confirmed causes moved the ranking

    def to_markdown(self) -> str:
        """A readable report: summary, ranked causes with evidence, blast radius, fix. Every text that
        came from captured data or a model goes through untrusted(): the headings and marks are ours."""
        from capture.store.window import fmt_ns

        u = untrusted
        out = ["# Guardian investigation", ""]
        if self.question:
            out += [f"**Question:** {u(self.question)}", ""]
        if self.window:
            out += [f"**Window:** {fmt_ns(self.window.start_ns)} to {fmt_ns(self.window.end_ns)}"
                    f" · engine: {self.engine.type}"
                    + (f" ({u(self.engine.model)})" if self.engine.model else ""), ""]
        out += ["## Summary", "", u(self.summary), ""]
        out += ["## Root causes", ""]
        if not self.root_causes:
            out += ["No root cause found.", ""]
        for rc in self.root_causes:
            op = f" ({u(rc.operation)})" if rc.operation else ""
            out.append(f"{rc.rank}. **{u(rc.service)}**{op}: {rc.kind},"
                       f" confidence {rc.confidence:.0%}. {u(rc.description)}")
            for ev in rc.evidence:
                mark = "" if ev.verified else " (unverified id)"
                span = f" span `{_hex(ev.span_id)}`" if ev.span_id else ""
                out.append(f"   - trace `{_hex(ev.trace_id)}`{span}{mark}: {u(ev.description)}")
        out.append("")
        br = self.blast_radius
        out += ["## Blast radius", "",
                f"- services: {', '.join(u(s) for s in br.services) or 'none seen'}",
                f"- endpoints: {', '.join(u(e) for e in br.endpoints) or 'none seen'}", ""]
        out += ["## Suggested fix", "", u(self.suggested_fix) or "None suggested.", ""]
        if self.similar:
            out += ["## Seen before", ""]
            for p in self.similar[:5]:
                c = p.get("cause") or {}
                what = f"{u(c.get('service'))}" + (f" ({u(c.get('operation'))})" if c.get("operation") else "")
                out.append(f"- investigation {_hex(str(p.get('id')))}: marked {p.get('outcome')}, cause {what}"
                           + (f": {u(c.get('note'))}" if c.get("note") else ""))
            out.append("")
        if self.anomalies:
            out += ["## Anomalies seen", ""]
            out += [f"- {u(a.get('description') or a) if isinstance(a, dict) else u(a)}" for a in self.anomalies[:10]]
            out.append("")
        return "\n".join(out)


def _hex(ident: str) -> str:
    """Ids go in code spans; anything but hex (an id a model made up) is shown escaped instead."""
    return ident if re.fullmatch(r"[0-9a-fA-F]{1,64}", ident or "") else untrusted(ident).replace("`", "")
