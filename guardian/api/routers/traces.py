"""GET /v1/traces/{trace_id}: every span of one trace, in the span JSON shape."""
from __future__ import annotations

import re

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool

from capture.store.api import SpanStore
from guardian.api.deps import get_store, require_token

router = APIRouter(prefix="/v1", tags=["traces"], dependencies=[Depends(require_token)])
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


@router.get("/traces/{trace_id}")
async def trace(trace_id: str, store: SpanStore = Depends(get_store)) -> dict:
    """Spans by start time; trace ids are 32 lowercase hex characters (as in reports and tools)."""
    tid = trace_id.lower()
    if not _TRACE_ID.match(tid):
        raise HTTPException(400, f"bad trace id {trace_id!r}: expected 32 hex characters")
    spans = await run_in_threadpool(store.trace, tid)
    if not spans:
        raise HTTPException(404, f"trace {tid} is not in the store (expired or never seen)")
    return {"trace_id": tid, "spans": [s.to_dict() for s in spans]}
