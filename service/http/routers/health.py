"""Probes: GET /healthz (liveness) and GET /readyz (readiness).

The one router without the key dependency: probes must reach it. /readyz's per-model detail
(ids, states, failure reasons) is given only to a request that carries the key, when one is set.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.http.auth import authorized
from service.http.context import context
from service.http.routers.common import COMMON_ERRORS, error_responses
from service.http.routing import ServiceRoute

router = APIRouter(route_class=ServiceRoute, tags=["health"], responses=error_responses(*COMMON_ERRORS))


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: models loaded and warmed (per-model detail needs the key when one is set)",
    responses=error_responses(503),
)
async def readyz(request: Request) -> JSONResponse:
    ctx = context(request)
    reg = ctx.registry
    states = {i: reg.models[i].state for i in reg.ids()}
    detail = authorized(request)
    # Under --workers, every worker must be ready too (service/worker.py sets this check).
    peers_ready = getattr(request.app.state, "peers_ready", None)
    if peers_ready is not None and not peers_ready():
        return JSONResponse(
            {"error": {"code": "not_ready", "message": "models are still loading in another worker"}},
            status_code=503,
        )
    if reg.loaded and any(state == "ready" for state in states.values()):
        if not detail:
            return JSONResponse({"status": "ready"})
        body: dict[str, object] = {"status": "ready", "models": states}
        if changed := reg.disk_problems():  # still served from the copies loaded at start-up
            body["changed_on_disk"] = changed
        return JSONResponse(body)
    message = "models are still loading" if not reg.loaded else "no model could be loaded"
    error: dict[str, object] = {"code": "not_ready", "message": message}
    if detail:
        error["models"] = states
        error["reasons"] = {i: reg.models[i].reason for i in reg.ids() if reg.models[i].reason}
    return JSONResponse({"error": error}, status_code=503)
