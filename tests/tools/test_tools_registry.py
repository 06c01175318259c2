"""The registry contract: schemas, structured errors on bad input, bounded results."""
from __future__ import annotations

import json

import pytest

from tools.registry import TOOLS, call_tool, list_tools

EXPECTED = {"list_services", "service_map", "red", "anomalies", "search_spans", "get_trace",
            "slow_queries", "errors", "dependencies"}


def test_list_tools_gives_function_schemas():
    listed = {t["name"]: t for t in list_tools()}
    assert EXPECTED <= set(listed)
    for t in listed.values():
        assert len(t["description"]) > 80  # says when to use it and where ids come from
        assert t["parameters"]["type"] == "object"
        json.dumps(t["parameters"])


@pytest.mark.parametrize("name,args,needle", [
    ("no_such_tool", {}, "unknown tool"),
    ("search_spans", {"limit": -3}, "invalid arguments"),
    ("search_spans", {"limit": "many"}, "invalid arguments"),
    ("search_spans", {"bogus": 1}, "invalid arguments"),
    ("red", {"since": "yesterday-ish"}, "bad duration"),
    ("red", {"start": "not a time"}, "bad time"),
    ("red", {"since": "15m", "start": "2026-01-15T10:00:00Z"}, "either"),
    ("red", {"since": "99999999999999d"}, "out of range"),
    ("errors", {"start": "0", "end": "9999999999999999999999"}, "out of range"),
    ("search_spans", {"min_duration_ms": 1e30}, "invalid arguments"),
    ("get_trace", {}, "invalid arguments"),
    ("get_trace", {"trace_id": "0" * 32}, "unknown trace"),
    ("dependencies", {"service": "nope"}, "unknown service"),
])
def test_bad_input_returns_structured_error(store, name, args, needle):
    out = call_tool(store, name, args)
    assert needle in out["error"]
    assert out["hint"]


def test_non_object_arguments(store):
    out = call_tool(store, "red", ["service"])  # type: ignore[arg-type]
    assert "error" in out and out["hint"]


def test_empty_window_hint_names_the_stored_range(store):
    out = call_tool(store, "list_services", {"start": "2020-01-01T00:00:00Z",
                                             "end": "2020-01-01T00:15:00Z"})
    assert out["error"] == "no spans in the requested window"
    assert "2026-01-15" in out["hint"]


@pytest.mark.parametrize("name", sorted(EXPECTED - {"get_trace", "dependencies"}))
def test_every_tool_runs_on_defaults_and_is_bounded(store, name):
    out = call_tool(store, name, {})
    assert "error" not in out, out
    assert len(json.dumps(out)) < 60_000
    assert "truncated" in out


def test_capped_results_say_so_and_suggest_a_narrower_query(store):
    out = call_tool(store, "search_spans", {"limit": 3})
    assert len(out["spans"]) == 3
    assert out["truncated"] is True and out["suggestion"]


def test_registry_tools_are_typed():
    for t in TOOLS.values():
        assert t.args_model.model_json_schema()
        assert t.result_model.model_json_schema()
