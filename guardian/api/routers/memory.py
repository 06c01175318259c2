"""Incident memory over HTTP: POST /v1/investigations/{id}/outcome (right or wrong, and the real
cause) and GET /v1/incidents (past investigations with their outcomes)."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from guardian.api.deps import require_token
from guardian.report import Kind

router = APIRouter(prefix="/v1", tags=["memory"], dependencies=[Depends(require_token)])


class Cause(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1, max_length=200)
    operation: str | None = Field(None, max_length=300)
    kind: Kind | None = None


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Literal["right", "wrong"]
    cause: Cause | None = Field(None, description="the real cause; 'right' without one confirms the top cause")
    note: str | None = Field(None, max_length=2000)
    by: str | None = Field(None, max_length=200)


@router.post("/investigations/{inv_id}/outcome")
def mark(inv_id: str, body: Outcome, request: Request) -> dict:
    """Mark an investigation right or wrong and give the real cause: it becomes a prior for
    similar incidents."""
    c = body.cause
    row = request.app.state.memory.store.mark(inv_id, body.outcome, c.service if c else None,
                                              c.operation if c else None, c.kind if c else None,
                                              body.note, body.by or "api")
    if row is None:
        raise HTTPException(404, f"no investigation {inv_id!r} in memory")
    return {k: v for k, v in row.items() if k != "report"}


@router.get("/incidents")
def incidents(request: Request, limit: int = Query(50, ge=1, le=500),
              outcome: Literal["right", "wrong"] | None = None) -> dict:
    """Past investigations, newest first, with outcome and confirmed cause (reports left out)."""
    rows = request.app.state.memory.store.list(limit, outcome)
    return {"incidents": [{k: v for k, v in r.items() if k != "report"} for r in rows]}
