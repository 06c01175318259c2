"""Scheduled anomaly reports: GET /v1/reports (history), GET /v1/reports/{id}, POST /v1/reports/run."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from guardian.api.deps import require_token
from guardian.api.validate import time_or_400

router = APIRouter(prefix="/v1/reports", tags=["reports"], dependencies=[Depends(require_token)])


@router.get("")
def history(request: Request, limit: int = Query(50, ge=1, le=500), since: str | None = None,
            anomalies_only: bool = False) -> dict:
    """Past reports, newest first; `since` is ISO-8601 or unix time."""
    since_ns = time_or_400("since", since) if since else None
    sched = request.app.state.scheduler
    return {"schedule": sched.settings.cron or sched.settings.interval_s,
            "reports": sched.history.list(limit, since_ns, anomalies_only)}


@router.get("/{report_id}")
def one(report_id: str, request: Request) -> dict:
    record = request.app.state.scheduler.history.get(report_id)
    if record is None:
        raise HTTPException(404, f"no report {report_id!r}")
    return record


@router.post("/run")
async def run_now(request: Request) -> dict:
    """Run the anomaly report now (delivered like a scheduled one) and return it."""
    return await run_in_threadpool(request.app.state.scheduler.run_once, "api")
