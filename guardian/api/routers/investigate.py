"""POST /v1/investigate (report, or a job id with {"async": true}), GET /v1/investigations/{id} and
its steps as they run (GET /v1/investigations/{id}/events, Server-Sent Events)."""
from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from guardian.api.deps import require_token
from guardian.api.jobs import Busy, Job
from guardian.api.stream import job_events
from guardian.api.validate import window_or_400
from guardian.investigate.engine import llm_configured

router = APIRouter(prefix="/v1", tags=["investigate"], dependencies=[Depends(require_token)])


class InvestigateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    question: str = Field(min_length=1, max_length=4000, examples=["why is checkout failing?"])
    since: str | None = Field(None, examples=["15m"], description="relative window, e.g. 90s, 15m, 2h")
    start: str | int | None = Field(None, description="ISO-8601 or unix time; with end, an absolute window")
    end: str | int | None = None
    engine: Literal["auto", "deterministic", "llm"] | None = None
    run_async: bool = Field(False, alias="async", description="return a job id to poll instead of waiting")


def _submit(request: Request, body: InvestigateRequest) -> Job:
    state = request.app.state
    window = window_or_400(state.store, body.since, body.start, body.end)
    engine = body.engine or state.settings.api.engine
    if engine == "llm" and not llm_configured():
        # Otherwise the findings (and the host's OPENAI_API_KEY) would go to OpenAI's default endpoint.
        raise HTTPException(400, 'engine "llm" needs an LLM configured on the server (GUARDIAN_LLM or the '
                                 'llm section of the config); use "auto" or "deterministic"')
    try:
        return state.jobs.submit(body.question, window, engine)
    except Busy as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "10"}) from None


@router.post("/investigate", responses={202: {"description": "job accepted (async)"}})
async def investigate(body: InvestigateRequest, request: Request):
    """Answer a question about the window with a report; `Accept: text/markdown` for markdown."""
    job = _submit(request, body)
    if body.run_async:
        return JSONResponse({"id": job.id, "status": job.status, "poll": f"/v1/investigations/{job.id}"},
                            status_code=202)
    await asyncio.wrap_future(job.future)
    if job.status != "done":
        raise HTTPException(500, f"investigation {job.id} failed: {job.error}")
    if "text/markdown" in request.headers.get("accept", ""):
        return PlainTextResponse(job.report.to_markdown(), media_type="text/markdown")
    return job.report.model_dump(mode="json")


@router.get("/investigations")
def recent(request: Request, limit: int = Query(50, ge=1, le=200)) -> dict:
    """Recent investigations, newest first, without their reports (poll one for its report)."""
    jobs = request.app.state.jobs.recent(limit)
    return {"investigations": [{k: v for k, v in j.to_dict().items() if k != "report"} for j in jobs]}


@router.get("/investigations/{job_id}")
def poll(job_id: str, request: Request) -> dict:
    """Status of an investigation: queued, running, done (with report) or failed (with error)."""
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no investigation {job_id!r} (finished ones are kept for a while)")
    return job.to_dict()


@router.get("/investigations/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def events(job_id: str, request: Request) -> StreamingResponse:
    """The investigation's steps as they run (Server-Sent Events: `step`, `status`, then `done`
    with the whole job, report included)."""
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no investigation {job_id!r} (finished ones are kept for a while)")
    return StreamingResponse(job_events(job, request.is_disconnected), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
