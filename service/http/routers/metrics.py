"""GET /metrics (Prometheus text). Behind the key unless IMAGEGEN_PUBLIC_METRICS=1."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.http.auth import require_key_unless_public_metrics
from service.http.context import context
from service.http.routers.common import KEYED_ERRORS, error_responses
from service.http.routing import guarded_route
from service.metrics import CONTENT_TYPE

router = APIRouter(
    tags=["health"],
    route_class=guarded_route(require_key_unless_public_metrics),
    responses=error_responses(*KEYED_ERRORS),
)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    ctx = context(request)
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
