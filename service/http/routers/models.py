"""The registry: GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.http.auth import require_key
from service.http.context import context
from service.http.routers.common import KEYED_ERRORS, error_responses
from service.http.routing import guarded_route

router = APIRouter(
    tags=["registry"], route_class=guarded_route(require_key), responses=error_responses(*KEYED_ERRORS)
)


@router.get("/v1/models", summary="All models with their state")
async def list_models(request: Request) -> dict[str, Any]:
    ctx = context(request)
    reg = ctx.registry
    ids = reg.ids()
    return {
        "models": [reg.models[i].describe() for i in ids],
        "loaded": reg.loaded,
        "provider": ctx.provider,
        "default_dataset": ctx.settings.default_dataset,
        # OpenAI's list shape beside ours, so its SDK's models.list() reads the same answer.
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 0, "owned_by": "imagegen"} for i in ids],
    }


@router.get(
    "/v1/models/{model_id}",
    summary="One model: manifest, state, provider",
    responses=error_responses(404, 422),
)
async def one_model(request: Request, model_id: str) -> dict[str, Any]:
    ctx = context(request)
    served = ctx.registry.known(model_id)
    request.scope["state"]["model"] = served.id
    return served.describe()
