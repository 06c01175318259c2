"""The investigation tools over HTTP: GET /v1/tools, GET and POST /v1/tools/{name}."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from capture.store.api import SpanStore
from guardian.api.deps import get_store, require_token
from guardian.api.validate import check_attribute_keys

router = APIRouter(prefix="/v1/tools", tags=["tools"], dependencies=[Depends(require_token)])


def _spec(name: str) -> dict:
    from tools.registry import list_tools

    for spec in list_tools():
        if spec["name"] == name:
            return spec
    raise HTTPException(404, f"unknown tool {name!r}; GET /v1/tools lists them")


@router.get("")
def list_all() -> dict:
    """Every tool: name, description (when to use it), JSON schema of its arguments."""
    from tools.registry import list_tools

    return {"tools": list_tools()}


@router.get("/{name}")
def describe(name: str) -> dict:
    return _spec(name)


@router.post("/{name}")
async def call(name: str, args: dict[str, Any] = Body(default_factory=dict),
               store: SpanStore = Depends(get_store)) -> Any:
    """Run a tool with JSON arguments. Bad arguments: 400 with {"error", "hint"} to retry with."""
    from tools.registry import call_tool

    _spec(name)
    check_attribute_keys(args)
    result = await run_in_threadpool(call_tool, store, name, args)
    if isinstance(result, dict) and "error" in result:
        return JSONResponse(result, status_code=400)
    return result
