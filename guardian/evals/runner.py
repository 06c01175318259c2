"""Score investigators on scenarios: top-1/top-3 accuracy of the root cause, seconds per case.

A root cause matches when its service is the expected one (or an alias; ':port' ignored),
its kind is the expected one (or an accepted alias), and, when the scenario names an
operation, its operation is that one (or not given). A healthy scenario (kind "none")
passes when no cause is claimed with confidence.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, Field

from guardian.evals.scenarios import Scenario, load_scenarios, load_store
from guardian.report import Report, RootCause


def _norm(name: str) -> str:
    host, _, port = name.strip().lower().rpartition(":")
    return host if host and port.isdigit() else name.strip().lower()


MAX_CONFIDENCE_WHEN_HEALTHY = 0.3


def matches(rc: RootCause, expected: dict[str, Any]) -> bool:
    services = {_norm(expected["service"])} | {_norm(a) for a in expected.get("aliases", [])}
    kinds = {expected["kind"], *expected.get("kind_aliases", [])}
    op = expected.get("operation")
    op_ok = not op or not rc.operation or rc.operation.lower() == op.lower()
    return _norm(rc.service) in services and rc.kind in kinds and op_ok


class CaseResult(BaseModel):
    scenario: str
    engine: str
    rank: int | None = Field(None, description="rank of the first matching root cause")
    top1: bool
    top3: bool
    red_herring_top1: bool
    seconds: float
    answer: str = Field(description="the top-1 root cause, as service/operation/kind")
    error: str | None = None
    steps: int | None = Field(None, description="LLM engines: model turns")
    tokens: int | None = Field(None, description="LLM engines: prompt + completion tokens")
    graded: int = Field(0, description="100 service+operation, 65 service, 35 a neighbour, 0")
    abstained: bool = Field(False, description="no root cause named")
    fault_class: str = "scenario"
    topology: str = "scenarios"


class EngineScore(BaseModel):
    engine: str
    cases: int
    top1: float
    top3: float
    mean_seconds: float
    max_seconds: float
    mean_steps: float | None = None
    mean_tokens: float | None = None


class GroupScore(BaseModel):
    cases: int
    top1: float
    top3: float
    graded: float


class EvalResult(BaseModel):
    """`cases` and `scores` per engine; the top-level figures are the first engine's."""
    cases: list[CaseResult]
    scores: list[EngineScore]
    n_cases: int = 0
    top1: float = 0.0
    top3: float = 0.0
    graded: float = 0.0
    abstain: float | None = Field(None, description="share of no-fault cases with no root cause")
    p50_s: float = 0.0
    p95_s: float = 0.0
    per_class: dict[str, GroupScore] = Field(default_factory=dict)
    per_topology: dict[str, GroupScore] = Field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)


def graded(rc: RootCause | None, expected: dict[str, Any]) -> int:
    """100 right service and operation, 65 right service, 35 a direct neighbour of it, else 0."""
    if expected.get("kind") == "none":
        return 100 if rc is None else 0
    if rc is None:
        return 0
    services = {_norm(expected["service"])} | {_norm(a) for a in expected.get("aliases", [])}
    if _norm(rc.service) in services:
        op = expected.get("operation")
        return 100 if not op or (rc.operation or "").lower() == op.lower() else 65
    return 35 if _norm(rc.service) in {_norm(n) for n in expected.get("neighbours", [])} else 0


def case_window(expected: dict[str, Any]):
    """The window the question is about, when the case says so (lab cases); None = default."""
    from capture.store.api import TimeWindow

    lo, hi = expected.get("window_start_ns"), expected.get("window_end_ns")
    return TimeWindow(int(lo), int(hi)) if lo and hi and int(hi) > int(lo) else None


def run_case(sc: Scenario, engine: str, llm: Callable | None = None) -> CaseResult:
    """One scenario through one engine; `llm` is an LLM engine's session (guardian.llm.evalhook)."""
    from guardian.investigate.engine import investigate

    store = load_store(sc.path)
    steps = tokens = None
    window = case_window(sc.expected)
    try:
        t0 = time.perf_counter()
        if llm:
            outcome = llm(store, sc.question, window)
            report, steps, tokens = outcome.report, outcome.steps, outcome.tokens
        else:
            report: Report = investigate(store, sc.question, window, engine=engine)
        seconds = time.perf_counter() - t0
    finally:
        store.close()
    top = report.root_causes[0] if report.root_causes else None
    if sc.expected.get("kind") == "none":
        calm = all(rc.confidence < MAX_CONFIDENCE_WHEN_HEALTHY for rc in report.root_causes)
        rank = 1 if calm else None
    else:
        rank = next((rc.rank for rc in report.root_causes if matches(rc, sc.expected)), None)
    herrings = {_norm(h) for h in sc.red_herrings}
    return CaseResult(
        scenario=sc.name, engine=engine, rank=rank, top1=rank == 1,
        top3=rank is not None and rank <= 3,
        red_herring_top1=bool(top and _norm(top.service) in herrings), seconds=round(seconds, 3),
        answer=f"{top.service}/{top.operation or '*'}/{top.kind}" if top else "(none)",
        steps=steps, tokens=tokens, graded=graded(top, sc.expected), abstained=top is None,
        fault_class=sc.expected.get("fault_class") or ("none" if sc.expected.get("kind") == "none"
                                                       else "scenario"),
        topology=str(sc.expected.get("topology") or "scenarios"))


@contextmanager
def _engine_session(engine: str) -> Iterator[Callable | None]:
    """LLM engines ("llm", "llm:local-0.5b", ...) run through guardian.llm.evalhook."""
    if not engine.startswith("llm"):
        yield None
        return
    from guardian.llm.evalhook import session

    with session(engine) as llm:
        yield llm


def run_eval(root: Path, engines: list[str], only: list[str] | None = None) -> EvalResult:
    """Every scenario under root through every engine."""
    scenarios = [s for s in load_scenarios(root) if not only or s.name in only]
    cases = []
    for engine in engines:
        with _engine_session(engine) as llm:
            for sc in scenarios:
                try:
                    cases.append(run_case(sc, engine, llm))
                except (OSError, ValueError, RuntimeError) as e:  # one broken case must not stop the run
                    cases.append(CaseResult(scenario=sc.name, engine=engine, top1=False, top3=False,
                                            red_herring_top1=False, seconds=0.0, answer="(failed)",
                                            fault_class=sc.expected.get("fault_class") or "scenario",
                                            topology=str(sc.expected.get("topology") or "scenarios"),
                                            error=f"{type(e).__name__}: {e}"))
    scores = []
    for engine in engines:
        mine = [c for c in cases if c.engine == engine]
        if mine:
            secs = [c.seconds for c in mine]
            scores.append(EngineScore(
                engine=engine, cases=len(mine), top1=round(sum(c.top1 for c in mine) / len(mine), 3),
                top3=round(sum(c.top3 for c in mine) / len(mine), 3),
                mean_seconds=round(sum(secs) / len(secs), 3), max_seconds=round(max(secs), 3),
                mean_steps=_mean([c.steps for c in mine]), mean_tokens=_mean([c.tokens for c in mine])))
    summaries = {e: summarize([c for c in cases if c.engine == e]) for e in engines}
    first = summaries[engines[0]] if engines else {}
    return EvalResult(cases=cases, scores=scores, engines=summaries, **first)


def _group(cs: list[CaseResult]) -> GroupScore:
    n = max(len(cs), 1)
    return GroupScore(cases=len(cs), top1=round(sum(c.top1 for c in cs) / n, 3),
                      top3=round(sum(c.top3 for c in cs) / n, 3),
                      graded=round(sum(c.graded for c in cs) / n, 1))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3)


def summarize(cs: list[CaseResult]) -> dict[str, Any]:
    """The figures of one engine's cases: accuracy, graded score, abstention, latency, groups."""
    if not cs:
        return {}
    calm = [c for c in cs if c.fault_class == "none"]
    g = _group(cs)
    return {
        "n_cases": len(cs), "top1": g.top1, "top3": g.top3, "graded": g.graded,
        "abstain": round(sum(c.abstained for c in calm) / len(calm), 3) if calm else None,
        "p50_s": _pct([c.seconds for c in cs], 0.5), "p95_s": _pct([c.seconds for c in cs], 0.95),
        "per_class": {k: _group([c for c in cs if c.fault_class == k])
                      for k in sorted({c.fault_class for c in cs})},
        "per_topology": {k: _group([c for c in cs if c.topology == k])
                         for k in sorted({c.topology for c in cs})},
    }


def _mean(values: list[int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 1) if known else None


def table(result: EvalResult) -> str:
    """Plain-text table of cases and scores."""
    lines = [f"{'scenario':<34} {'engine':<13} {'rank':>4} {'top1':>4} {'top3':>4} {'sec':>7}  answer"]
    for c in result.cases:
        lines.append(f"{c.scenario:<34} {c.engine:<13} {c.rank or '-':>4} {'y' if c.top1 else 'n':>4}"
                     f" {'y' if c.top3 else 'n':>4} {c.seconds:>7.2f}  {c.answer}"
                     + (f"  [{c.steps} steps, {c.tokens} tokens]" if c.steps is not None else "")
                     + (f"  ERROR {c.error}" if c.error else ""))
    lines.append("")
    for s in result.scores:
        lines.append(f"{s.engine}: top-1 {s.top1:.0%}, top-3 {s.top3:.0%} over {s.cases} cases;"
                     f" {s.mean_seconds:.2f} s mean, {s.max_seconds:.2f} s max per case"
                     + (f"; {s.mean_steps} steps, {s.mean_tokens:.0f} tokens mean" if s.mean_steps is not None else ""))
    for engine, summary in result.engines.items():
        if not summary:
            continue
        abstain = summary["abstain"]
        lines.append(f"{engine}: graded {summary['graded']:.1f}, p50 {summary['p50_s']:.2f} s,"
                     f" p95 {summary['p95_s']:.2f} s"
                     + (f", no-fault abstained {abstain:.0%}" if abstain is not None else ""))
        for label, key in (("class", "per_class"), ("topology", "per_topology")):
            groups = summary[key]
            if len(groups) > 1:
                lines += [f"  {label} {name:<22} {g.cases:>4} cases  top-1 {g.top1:>4.0%}  top-3"
                          f" {g.top3:>4.0%}  graded {g.graded:5.1f}" for name, g in groups.items()]
    return "\n".join(lines)
