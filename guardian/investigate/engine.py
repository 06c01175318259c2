"""Engine dispatcher: the one entry point every interface (CLI, HTTP, Slack, evals) calls.

"deterministic" runs the built-in investigator; "llm" runs it too, then hands its findings
to the LLM agent (guardian.llm.agent); "auto" picks llm when one is configured.
"""
from __future__ import annotations

import importlib

from capture.store.api import SpanStore, TimeWindow
from guardian.investigate.deterministic import investigate as deterministic
from guardian.report import Report

ENGINES = ("auto", "deterministic", "llm")


def llm_configured() -> bool:
    """True when the LLM config (the YAML file's `llm` section, then GUARDIAN_LLM* env) selects
    a model; an unreadable config file counts as not configured."""
    from guardian.llm.config import load_config
    try:
        return load_config().enabled
    except (OSError, ValueError):
        return False


def investigate(store: SpanStore, question: str, window: TimeWindow | None = None,
                engine: str = "auto") -> Report:
    """A Report for the question over the window (None = the store's default window)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")
    findings = deterministic(store, question, window)
    if engine == "deterministic" or (engine == "auto" and not llm_configured()):
        return findings
    agent = importlib.import_module("guardian.llm.agent")  # optional: only when an LLM is wanted
    return agent.investigate(store, question, window, findings=findings)
