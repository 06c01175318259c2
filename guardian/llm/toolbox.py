"""The tools as the model sees them: OpenAI function schemas without the window arguments
(the investigation fixes the window), results capped in size, repeated calls refused.

Results go back to the model as tool messages holding JSON: captured text stays quoted
data inside that JSON and never reaches the system prompt.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from capture.store.api import SpanStore, TimeWindow
from tools.registry import call_tool, list_tools

# Filled in from the investigation window; hiding them also keeps small models from
# inventing dates.
WINDOW_ARGS = ("since", "start", "end", "baseline_start", "baseline_end")
# What a small local model gets offered: each schema costs prompt tokens, and prompt
# processing dominates on 2 CPU cores.
SMALL_MODEL_TOOLS = ("errors", "get_trace", "dependencies", "slow_queries")
# Result sizes for brief mode, set by the toolbox instead of the model.
SIZE_ARGS = {"limit": 5, "max_spans": 25}


def _strip(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema minus window arguments and pydantic's titles (tokens the model never needs)."""
    props = {k: {kk: vv for kk, vv in v.items() if kk != "title"}
             for k, v in schema.get("properties", {}).items() if k not in WINDOW_ARGS}
    out: dict[str, Any] = {"type": "object", "properties": props}
    required = [r for r in schema.get("required", []) if r in props]
    if required:
        out["required"] = required
    if "$defs" in schema:
        out["$defs"] = schema["$defs"]
    return out


def _simplify(schema: dict[str, Any]) -> dict[str, Any]:
    """Brief schema: no size arguments (the toolbox sets them), optional-null unions and bounds dropped."""
    props = {}
    for k, v in schema["properties"].items():
        if k in SIZE_ARGS:
            continue
        v = dict(v)
        alts = [a for a in v.pop("anyOf", []) if a.get("type") != "null"]
        if len(alts) == 1:
            v.update(alts[0])
        props[k] = {kk: vv for kk, vv in v.items() if kk in ("type", "description", "enum", "items")}
    return {**schema, "properties": props}


def openai_tools(only: tuple[str, ...] | None = None, brief: bool = False) -> list[dict[str, Any]]:
    """Function-tool schemas in the chat completions format; `brief` keeps two sentences of each description."""
    out = []
    for t in list_tools():
        if only and t["name"] not in only:
            continue
        desc = " ".join(re.split(r"(?<=\.) ", t["description"])[:2]) if brief else t["description"]
        out.append({"type": "function", "function": {
            "name": t["name"], "description": desc,
            "parameters": _simplify(_strip(t["parameters"])) if brief else _strip(t["parameters"])}})
    return out


def cap_json(obj: Any, max_chars: int) -> str:
    """Compact JSON of `obj` within max_chars: long lists are shortened first, then the text is cut."""
    text = json.dumps(obj, separators=(",", ":"), default=str)
    if len(text) <= max_chars or not isinstance(obj, dict):
        return text if len(text) <= max_chars else text[: max_chars - 20] + "…[cut by Guardian]"
    obj = dict(obj)
    while len(text) > max_chars:
        lists = [(len(json.dumps(v, default=str)), k) for k, v in obj.items() if isinstance(v, list) and len(v) > 1]
        if not lists:
            return text[: max_chars - 20] + "…[cut by Guardian]"
        _, key = max(lists)
        obj[key] = obj[key][: len(obj[key]) // 2]
        obj["truncated"] = True
        text = json.dumps(obj, separators=(",", ":"), default=str)
    return text


@dataclass
class Toolbox:
    """Runs the model's tool calls against the store, with the agent's guards."""

    store: SpanStore
    window_args: dict[str, str]  # e.g. start/end (+ baseline_start/end) of the investigation
    max_chars: int = 2500
    names: tuple[str, ...] | None = None
    brief: bool = False  # short descriptions (small local models: fewer prompt tokens)
    seen: set[str] = field(default_factory=set)
    calls: int = 0
    refused: int = 0
    _schemas: list[dict[str, Any]] | None = None

    def schemas(self) -> list[dict[str, Any]]:
        if self._schemas is None:
            self._schemas = openai_tools(self.names, self.brief)
        return self._schemas

    def call(self, name: str, raw_args: str | dict | None) -> str:
        """The tool message content for one call (never raises)."""
        if isinstance(raw_args, str):
            try:
                args = json.loads(raw_args or "{}")
            except json.JSONDecodeError as e:
                return json.dumps({"error": f"arguments are not valid JSON: {e.msg}",
                                   "hint": "pass a JSON object"})
        else:
            args = raw_args or {}
        if not isinstance(args, dict):
            return json.dumps({"error": "arguments must be a JSON object", "hint": "e.g. {}"})
        if self.names and name not in self.names:
            return json.dumps({"error": f"tool {name!r} is not available", "hint": f"use one of {list(self.names)}"})
        args = {k: v for k, v in args.items() if k not in WINDOW_ARGS and v is not None}
        key = json.dumps([name, args], sort_keys=True, default=str)
        if key in self.seen:
            self.refused += 1
            return json.dumps({"error": "refused: this exact call was already made; its result is above",
                               "hint": "call another tool, change the arguments, or answer now"})
        self.seen.add(key)
        self.calls += 1
        if name != "get_trace":  # a trace is looked up by id, not by window
            args.update(self.window_args)
        if self.brief:
            props = next((t["function"]["parameters"]["properties"] for t in openai_tools((name,))), {})
            args = {k: v for k, v in args.items() if k not in SIZE_ARGS}
            args.update({k: v for k, v in SIZE_ARGS.items() if k in props})
        return cap_json(call_tool(self.store, name, args), self.max_chars)


def window_args(window: TimeWindow | None, baseline: TimeWindow | None = None) -> dict[str, str]:
    """Tool window arguments (unix ns as text) for an investigation window and its baseline."""
    if window is None:
        return {}
    out = {"start": str(window.start_ns), "end": str(window.end_ns)}
    if baseline is not None:
        out.update(baseline_start=str(baseline.start_ns), baseline_end=str(baseline.end_ns))
    return out
