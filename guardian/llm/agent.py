"""The LLM investigator: a LangGraph graph over the same tools as the deterministic one.

    model ──tool calls──▶ tools ──budget left──▶ model
      │                     └──budget spent / stuck──▶ final
      └──plain answer──▶ final (one turn, tool calls off, asks for the JSON answer) ──▶ report

It starts from the deterministic findings, talks to any OpenAI-compatible endpoint
through the openai client, and hands its answer to guardian.llm.answer, which checks
every cited id in the store before the report leaves.

Rule 1: captured text (service and operation names, error messages, SQL, paths: all in
the findings and the tool results) reaches the model only in tool-role messages, under the
system rule that tool results are data. The user-role messages hold the asker's question,
the window and our own instructions, nothing captured.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import openai
from langgraph.graph import END, START, StateGraph

from capture.store.api import SpanStore, TimeWindow
from guardian.llm.answer import build_report, parse_answer
from guardian.llm.config import LLMConfig, load_config
from guardian.llm.toolbox import SMALL_MODEL_TOOLS, Toolbox, window_args
from guardian.report import Report
from capture.store.window import fmt_ns

log = logging.getLogger(__name__)

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
LOCAL_TOOL_CHARS = 1500  # a local model reads its prompt slowly on a few cores
LOCAL_MAX_STEPS = 3  # small models repeat themselves; more turns cost minutes, not accuracy
MAX_STALLED = 2  # turns in a row whose calls were all refused repeats: the model is looping


def prompt(name: str, **values: Any) -> str:
    return (PROMPTS / f"{name}.md").read_text().format(**values).strip()


class State(TypedDict, total=False):
    messages: list[dict[str, Any]]
    steps: int  # model turns that were offered tools
    stalled: int
    answer: str | None
    error: str | None


@dataclass
class AgentResult:
    report: Report
    steps: int
    tool_calls: int
    native_tool_calls: int  # parsed by the server into tool_calls (the rest came as JSON text)
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    error: str | None = None
    answer: dict[str, Any] | None = None  # the model's parsed final answer, before any check

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _findings_brief(findings: Report) -> str:
    """The deterministic report, compact: what the model needs to check, with its ids."""
    brief = {
        "summary": findings.summary,
        "root_causes": [
            {"rank": rc.rank, "service": rc.service, "operation": rc.operation, "kind": rc.kind,
             "confidence": rc.confidence, "description": rc.description,
             "trace_ids": [e.trace_id for e in rc.evidence[:2]]}
            for rc in findings.root_causes[:3]],
    }
    return json.dumps(brief)


FINDINGS_TOOL = "deterministic_findings"


def _findings_messages(findings: Report) -> list[dict[str, Any]]:
    """The findings as the result of a call the agent made itself: a tool-role message."""
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    return [{"role": "assistant", "content": "",
             "tool_calls": [{"id": call_id, "type": "function",
                             "function": {"name": FINDINGS_TOOL, "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": call_id, "content": _findings_brief(findings)}]


def _top(findings: Report) -> str:
    """Which finding to keep, by rank only: its names are captured text and stay in tool results."""
    if not findings.root_causes:
        return "none (the deterministic investigator found no root cause)"
    return f"rank 1 in the {FINDINGS_TOOL} result"


class _Run:
    """One investigation: the client, the toolbox, counters, and the graph's nodes."""

    def __init__(self, cfg: LLMConfig, toolbox: Toolbox, findings: Report):
        self.cfg, self.toolbox, self.findings = cfg, toolbox, findings
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=cfg.api_key,
                                    timeout=cfg.timeout_s, max_retries=0)
        self.prompt_tokens = self.completion_tokens = 0
        self.native_calls = 0

    def _chat(self, messages: list[dict], tool_choice: str = "auto") -> Any:
        # The final turn keeps the tools but forbids calls (tool_choice "none"): the prompt
        # prefix stays identical, so a local server reuses its cache instead of re-reading it.
        kwargs: dict[str, Any] = dict(model=self.cfg.model, messages=messages,
                                      temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens,
                                      tools=self.toolbox.schemas(), tool_choice=tool_choice)
        resp = self.client.chat.completions.create(**kwargs)
        if resp.usage:
            self.prompt_tokens += resp.usage.prompt_tokens or 0
            self.completion_tokens += resp.usage.completion_tokens or 0
        return resp.choices[0].message

    def _as_tool_call(self, text: str | None) -> dict | None:
        """A call the model wrote as JSON text instead of a tool call (small models do)."""
        obj = parse_answer(text)
        names = {t["function"]["name"] for t in self.toolbox.schemas()}
        if obj and obj.get("name") in names and isinstance(obj.get("arguments", {}), dict):
            return {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                    "function": {"name": obj["name"], "arguments": json.dumps(obj.get("arguments") or {})}}
        return None

    # -- nodes --
    def model(self, state: State) -> State:
        try:
            msg = self._chat(state["messages"])
        except openai.OpenAIError as e:
            return {"error": f"model call failed: {e}"}
        calls = [{"id": c.id, "type": "function",
                  "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"}}
                 for c in (msg.tool_calls or [])]
        self.native_calls += len(calls)
        if not calls and (fallback := self._as_tool_call(msg.content)):
            calls = [fallback]
        out: dict[str, Any] = {"role": "assistant", "content": msg.content or ""}
        if calls:
            out["tool_calls"] = calls
            out["content"] = ""  # the call itself is the message; the JSON text would repeat it
        return {"messages": [*state["messages"], out], "steps": state.get("steps", 0) + 1,
                "answer": None if calls else (msg.content or "")}

    def tools(self, state: State) -> State:
        last = state["messages"][-1]
        refused_before = self.toolbox.refused
        results = [{"role": "tool", "tool_call_id": c["id"],
                    "content": self.toolbox.call(c["function"]["name"], c["function"]["arguments"])}
                   for c in last["tool_calls"]]
        all_refused = self.toolbox.refused - refused_before == len(results)
        return {"messages": [*state["messages"], *results],
                "stalled": state.get("stalled", 0) + 1 if all_refused else 0}

    def final(self, state: State) -> State:
        ask = {"role": "user", "content": prompt("agent_final", top=_top(self.findings))}
        try:
            msg = self._chat([*state["messages"], ask], tool_choice="none")
        except openai.OpenAIError as e:
            return {"error": f"model call failed: {e}"}
        return {"messages": [*state["messages"], ask, {"role": "assistant", "content": msg.content or ""}],
                "answer": msg.content or ""}

    # -- edges --
    def after_model(self, state: State) -> str:
        if state.get("error"):
            return END
        if state["messages"][-1].get("tool_calls"):
            return "tools"
        ans = parse_answer(state.get("answer"))
        return END if ans and ans.get("service") else "final"

    def after_tools(self, state: State) -> str:
        if state.get("steps", 0) >= self.cfg.max_steps or state.get("stalled", 0) >= MAX_STALLED:
            return "final"
        return "model"

    def graph(self):
        g = StateGraph(State)
        g.add_node("model", self.model)
        g.add_node("tools", self.tools)
        g.add_node("final", self.final)
        g.add_conditional_edges(START, lambda s: "model" if self.cfg.max_steps > 0 else "final")
        g.add_conditional_edges("model", self.after_model, ["tools", "final", END])
        g.add_conditional_edges("tools", self.after_tools, ["model", "final"])
        g.add_edge("final", END)
        return g.compile()


def run(store: SpanStore, question: str, window: TimeWindow | None, findings: Report,
        cfg: LLMConfig | None = None) -> AgentResult:
    """Investigate with the configured model; always returns a report in the common shape."""
    cfg = cfg or load_config()
    local = cfg.local_key is not None
    cfg = cfg.resolved()
    if local and "max_steps" not in cfg.model_fields_set:
        cfg.max_steps = min(cfg.max_steps, LOCAL_MAX_STEPS)
    t0 = time.monotonic()
    fw = findings.window
    win = TimeWindow(fw.start_ns, fw.end_ns) if fw else window
    base = TimeWindow(findings.baseline.start_ns, findings.baseline.end_ns) if findings.baseline else None
    toolbox = Toolbox(store, window_args(win, base),
                      max_chars=min(cfg.max_tool_chars, LOCAL_TOOL_CHARS) if local else cfg.max_tool_chars,
                      names=tuple(cfg.tools) if cfg.tools else (SMALL_MODEL_TOOLS if local else None),
                      brief=local)
    r = _Run(cfg, toolbox, findings)
    window_text = f"{fmt_ns(win.start_ns)} to {fmt_ns(win.end_ns)}" if win else "the default window"
    messages = [
        {"role": "system", "content": prompt("agent_system")},
        {"role": "user", "content": prompt("agent_task", question=question or "What is broken and why?",
                                           window=window_text, findings_tool=FINDINGS_TOOL)},
        *_findings_messages(findings),
    ]
    # Each model turn is one or two graph steps; the limit only guards against a bug looping.
    state = r.graph().invoke({"messages": messages, "steps": 0, "stalled": 0},
                             {"recursion_limit": 4 * cfg.max_steps + 10})
    answer = parse_answer(state.get("answer"))
    report = build_report(store, answer, findings, cfg.model, question)
    if state.get("error"):
        report.summary += f" [{state['error']}]"
    seconds = time.monotonic() - t0
    report.duration_s = round(seconds, 3)
    return AgentResult(report=report, steps=state.get("steps", 0), tool_calls=toolbox.calls,
                       native_tool_calls=r.native_calls, prompt_tokens=r.prompt_tokens,
                       completion_tokens=r.completion_tokens, seconds=seconds, error=state.get("error"),
                       answer=answer)


def investigate(store: SpanStore, question: str, window: TimeWindow | None, findings: Report,
                cfg: LLMConfig | None = None) -> Report:
    """The engine hook (guardian.investigate.engine): the agent's report for the question.

    With the local model selected and no server up, one is started for this call only.
    """
    cfg = cfg or load_config()
    key = cfg.local_key
    if key is None:
        return run(store, question, window, findings, cfg).report
    from guardian.llm.server import LocalServer

    with LocalServer(key, cfg.local_port):
        return run(store, question, window, findings, cfg).report
