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


class EngineScore(BaseModel):
    engine: str
    cases: int
    top1: float
    top3: float
    mean_seconds: float
    max_seconds: float
    mean_steps: float | None = None
    mean_tokens: float | None = None


class EvalResult(BaseModel):
    cases: list[CaseResult]
    scores: list[EngineScore]


def run_case(sc: Scenario, engine: str, llm: Callable | None = None) -> CaseResult:
    """One scenario through one engine; `llm` is an LLM engine's session (guardian.llm.evalhook)."""
    from guardian.investigate.engine import investigate

    store = load_store(sc.path)
    steps = tokens = None
    try:
        t0 = time.perf_counter()
        if llm:
            outcome = llm(store, sc.question, None)
            report, steps, tokens = outcome.report, outcome.steps, outcome.tokens
        else:
            report: Report = investigate(store, sc.question, None, engine=engine)
        seconds = time.perf_counter() - t0
    finally:
        store.close()
    if sc.expected.get("kind") == "none":
        calm = all(rc.confidence < MAX_CONFIDENCE_WHEN_HEALTHY for rc in report.root_causes)
        rank = 1 if calm else None
    else:
        rank = next((rc.rank for rc in report.root_causes if matches(rc, sc.expected)), None)
    top = report.root_causes[0] if report.root_causes else None
    herrings = {_norm(h) for h in sc.red_herrings}
    return CaseResult(
        scenario=sc.name, engine=engine, rank=rank, top1=rank == 1,
        top3=rank is not None and rank <= 3,
        red_herring_top1=bool(top and _norm(top.service) in herrings), seconds=round(seconds, 3),
        answer=f"{top.service}/{top.operation or '*'}/{top.kind}" if top else "(none)",
        steps=steps, tokens=tokens)


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
    return EvalResult(cases=cases, scores=scores)


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
    return "\n".join(lines)
