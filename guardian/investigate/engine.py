"""Engine dispatcher: the one entry point every interface (CLI, HTTP, Slack, evals) calls.

"deterministic" runs the built-in investigator; "llm" runs it too, then hands its findings
to the LLM agent (guardian.llm.agent); "auto" picks llm when one is configured.
"""
from __future__ import annotations

import importlib
import os

from capture.store.api import SpanStore, TimeWindow
from guardian.investigate.deterministic import investigate as deterministic
from guardian.report import Report

ENGINES = ("auto", "deterministic", "llm")
_OFF = ("", "off", "none", "0", "false", "deterministic")


def llm_configured() -> bool:
    """True when GUARDIAN_LLM (not 'off') or GUARDIAN_LLM_BASE_URL is set."""
    return (os.environ.get("GUARDIAN_LLM", "").strip().lower() not in _OFF
            or bool(os.environ.get("GUARDIAN_LLM_BASE_URL", "").strip()))


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
