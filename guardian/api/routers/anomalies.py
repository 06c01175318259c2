"""GET /v1/anomalies: the anomalies tool over a window (since, or start/end), ranked worst first."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from guardian.api.deps import require_token

router = APIRouter(prefix="/v1", tags=["anomalies"], dependencies=[Depends(require_token)])


@router.get("/anomalies")
async def anomalies(request: Request, since: str | None = None, start: str | None = None,
                    end: str | None = None, baseline_start: str | None = None,
                    baseline_end: str | None = None, service: str | None = None, limit: int | None = None):
    """Error-rate and latency shifts, new error kinds, traffic drops, saturation vs the baseline
    (default: the window just before). Bad window: 400 with {"error", "hint"}."""
    from tools.registry import call_tool

    given = {"since": since, "start": start, "end": end, "baseline_start": baseline_start,
             "baseline_end": baseline_end, "service": service, "limit": limit}
    result = await run_in_threadpool(call_tool, request.app.state.store, "anomalies",
                                     {k: v for k, v in given.items() if v is not None})
    if "error" in result:
        return JSONResponse(result, status_code=400)
    return result
