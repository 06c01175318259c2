"""LLM engines for `guardian eval`: "llm" (the configured endpoint), "llm:local-0.5b" and
"llm:local-1.5b" (a local server started once for the whole engine run).

A session yields a function (store, question, window) -> Outcome with the report and the
agent's steps and tokens, so the runner can score them next to the deterministic engine.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from capture.store.api import SpanStore, TimeWindow
from guardian.llm.agent import run
from guardian.llm.config import load_config
from guardian.llm.models import MODELS
from guardian.report import Report

LOCAL_ENGINES = tuple(f"llm:local-{k}" for k in MODELS)


@dataclass
class Outcome:
    report: Report
    steps: int | None = None
    tokens: int | None = None


Investigate = Callable[[SpanStore, str, "TimeWindow | None"], Outcome]


def is_llm_engine(engine: str) -> bool:
    return engine == "llm" or engine in LOCAL_ENGINES


@contextmanager
def session(engine: str) -> Iterator[Investigate]:
    """The investigate function of one LLM engine, with its local server up meanwhile."""
    from guardian.investigate.deterministic import investigate as deterministic

    if not is_llm_engine(engine):
        raise ValueError(f"not an LLM engine: {engine!r} (llm, {', '.join(LOCAL_ENGINES)})")
    cfg = load_config()
    server = None
    if engine in LOCAL_ENGINES:
        from guardian.llm.server import LocalServer

        key = engine.removeprefix("llm:local-")
        server = LocalServer(key).start()  # a free port: never clashes with a user's server
        cfg = cfg.model_copy(update={"provider": f"local:{key}", "base_url": None, "model": None,
                                     "local_port": server.port})

    def investigate(store: SpanStore, question: str, window: TimeWindow | None) -> Outcome:
        findings = deterministic(store, question, window)
        res = run(store, question, window, findings, cfg)
        return Outcome(res.report, res.steps, res.tokens)

    try:
        yield investigate
    finally:
        if server:
            server.stop()
