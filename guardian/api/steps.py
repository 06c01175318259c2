"""What an investigation does as it runs, for the console: a store wrapper that notes each query
the engine makes (which call, on what, how many rows) as a step of its job.

Read-only pass-through: results are returned unchanged; only a bounded note is kept (repeats
of the same call are counted, not listed again). Does not change what the engine decides.
"""
from __future__ import annotations

from typing import Any

NOTED = ("red", "spans", "service_map", "services", "trace", "traces")
MAX_STEPS = 80
_ARGS = ("service", "name", "kind", "status_code", "by", "peer", "trace_id")


def _describe(method: str, args: tuple, kwargs: dict) -> str:
    parts = []
    for a in list(args) + list(kwargs.values()):
        for key in _ARGS:
            v = getattr(a, key, None) if not isinstance(a, (str, int, float)) else None
            if v:
                parts.append(f"{key}={v}")
        if isinstance(a, str) and method in ("red", "trace"):
            parts.append(a)
    return f"{method}({', '.join(dict.fromkeys(parts))})"


class StepStore:
    def __init__(self, store: Any, job: Any):
        self._store, self._job = store, job

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in NOTED or not callable(attr):
            return attr

        def noted(*args, **kwargs):
            result = attr(*args, **kwargs)
            call = _describe(name, args, kwargs)
            n = len(result) if isinstance(result, list) else None
            steps = self._job.steps
            if steps and steps[-1].get("call") == call:
                steps[-1]["times"] = steps[-1].get("times", 1) + 1
            elif len(steps) < MAX_STEPS:
                self._job.step("query", f"{call} -> {n} rows" if n is not None else call)
                steps[-1]["call"] = call
            return result
        return noted
