"""The registry: GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from service.auth import require_key
from service.context import Ctx
from service.routers.common import KEYED_ERRORS, error_responses

router = APIRouter(
    tags=["registry"], dependencies=[Depends(require_key)], responses=error_responses(*KEYED_ERRORS)
)


@router.get("/v1/models", summary="All models with their state")
async def list_models(ctx: Ctx) -> dict[str, Any]:
    reg = ctx.registry
    return {
        "models": [reg.models[i].describe() for i in reg.ids()],
        "loaded": reg.loaded,
        "provider": ctx.provider,
        "default_dataset": ctx.settings.default_dataset,
    }


@router.get(
    "/v1/models/{model_id}",
    summary="One model: manifest, state, provider",
    responses=error_responses(404, 422),
)
async def one_model(request: Request, ctx: Ctx, model_id: str) -> dict[str, Any]:
    served = ctx.registry.known(model_id)
    request.scope["state"]["model"] = served.id
    return served.describe()
