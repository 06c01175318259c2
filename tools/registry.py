"""The tool registry: TOOLS by name, their schemas, and `call_tool` that never raises on bad input.

Adding a tool: a module in tools/ with a TOOLS list, named in MODULES below, and its tests.
`grep -rn "REGISTRY:tools"` finds every place.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

from pydantic import ValidationError

from capture.store.api import SpanStore
from tools.base import Tool, ToolError

log = logging.getLogger(__name__)

# REGISTRY:tools — modules whose TOOLS lists make up the registry, in listing order.
MODULES = ("tools.anomalies", "tools.services", "tools.red", "tools.errors", "tools.search",
           "tools.trace", "tools.queries")

TOOLS: dict[str, Tool] = {t.name: t for m in MODULES for t in importlib.import_module(m).TOOLS}


def list_tools() -> list[dict[str, Any]]:
    """name, description and JSON schema of the arguments (an OpenAI function-tool schema)."""
    return [{"name": t.name, "description": t.description,
             "parameters": t.args_model.model_json_schema()} for t in TOOLS.values()]


def _validation_hint(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        where = ".".join(str(x) for x in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def call_tool(store: SpanStore, name: str, args: dict[str, Any] | None) -> dict[str, Any]:
    """Run a tool by name with JSON arguments; errors come back as {"error", "hint"}."""
    tool = TOOLS.get(name)
    if tool is None:
        return {"error": f"unknown tool {name!r}", "hint": f"tools: {', '.join(TOOLS)}"}
    if args is not None and not isinstance(args, dict):
        return {"error": "arguments must be a JSON object", "hint": "e.g. {\"since\": \"15m\"}"}
    try:
        parsed = tool.args_model.model_validate(args or {})
    except ValidationError as e:
        return {"error": f"invalid arguments for {name}", "hint": _validation_hint(e),
                "parameters": sorted(tool.args_model.model_json_schema().get("properties", {}))}
    try:
        return tool.fn(store, parsed).model_dump(mode="json")
    except ToolError as e:
        return {"error": e.error, "hint": e.hint}
    except (ValueError, OverflowError) as e:
        # Values that validate but make no sense together (e.g. absurd timestamps).
        log.debug("tool %s failed", name, exc_info=True)
        return {"error": f"{name} could not run: {e}", "hint": "check the values of the arguments"}
