"""GET /healthz (open: for probes) and GET /metrics (Prometheus text, behind the token)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guardian.api.deps import require_token

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request) -> dict:
    """Liveness: the process serves and the store answers."""
    return {"status": "ok", "spans": request.app.state.store.count()}


@router.get("/metrics", dependencies=[Depends(require_token)], response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
