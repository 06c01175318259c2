"""POST /v1/alerts/alertmanager (Alertmanager's webhook), POST /v1/alerts/generic (configurable
mapping) and GET /v1/alerts (what was received and what became of it). Answers at once (202);
the investigations run on the job pool and show in GET /v1/investigations."""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from guardian.alerts.payloads import AlertError, parse_alertmanager, parse_generic
from guardian.api.deps import require_token

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], dependencies=[Depends(require_token)])


async def _json(request: Request):
    body = await request.body()
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"expected a JSON body: {e}") from None


async def _receive(request: Request, alerts) -> JSONResponse:
    outcomes = await run_in_threadpool(request.app.state.alerts.receive, alerts)
    return JSONResponse({"received": len(alerts), "alerts": outcomes}, status_code=202)


@router.post("/alertmanager", status_code=202)
async def alertmanager(request: Request):
    """Alertmanager's webhook_config target (JSON version 4). Firing alerts start investigations
    over their window; repeats are deduplicated by fingerprint; resolved ones are noted."""
    try:
        alerts = parse_alertmanager(await _json(request))
    except AlertError as e:
        raise HTTPException(400, f"bad Alertmanager payload: {e}") from None
    return await _receive(request, alerts)


@router.post("/generic", status_code=202)
async def generic(request: Request):
    """A PagerDuty/Opsgenie-style alert, read through alerts.generic's field mapping."""
    try:
        alerts = parse_generic(await _json(request), request.app.state.settings.alerts.generic)
    except AlertError as e:
        raise HTTPException(400, f"bad alert payload: {e}") from None
    return await _receive(request, alerts)


@router.get("")
def received(request: Request, limit: int = 100) -> dict:
    """Alerts received, newest first, with what became of each (started, duplicate, resolved...)."""
    events = list(request.app.state.alerts.events)[::-1]
    return {"alerts": events[: max(1, min(limit, 500))]}
