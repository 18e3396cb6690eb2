"""GET /docs, GET /openapi.json and the playground page GET /: behind the key, like the API.

The OpenAPI is FastAPI's own, from the routers' parameter and body models, with the served
model ids, families, datasets and class names filled in as enums (known only once the
repository is scanned), so a schema-driven client or fuzzer reaches image generation.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from service.auth import SECURITY_SCHEMES, require_key
from service.context import Ctx
from service.registry import Registry
from service.routers.common import KEYED_ERRORS, error_responses

router = APIRouter(
    dependencies=[Depends(require_key)], responses=error_responses(*KEYED_ERRORS), include_in_schema=False
)


@router.get("/openapi.json")
async def openapi(request: Request, ctx: Ctx) -> JSONResponse:
    return JSONResponse(with_enums(with_security(request.app.openapi()), ctx.registry))


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="imagegen API")


@router.get("/")
async def playground(ctx: Ctx) -> HTMLResponse:
    return HTMLResponse(ctx.playground)


def with_security(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of the OpenAPI declaring the key on every operation that may answer 401."""
    spec = copy.deepcopy(spec)
    spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            if "401" in operation.get("responses", {}):
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
    return spec


def with_enums(spec: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """A copy of the OpenAPI with `model`, `dataset` and `class` as enums of what is served."""
    manifests = [m.manifest for m in registry.models.values() if m.manifest is not None]
    if not manifests:
        return spec
    models = sorted({*registry.ids(), *(m.family for m in manifests)})
    datasets = sorted({m.dataset for m in manifests})
    classes = sorted({name for m in manifests for name in m.class_names})
    enums = {"model": models, "dataset": datasets, "class": classes}
    spec = copy.deepcopy(spec)
    for path in ("/generate", "/sample"):
        for param in spec.get("paths", {}).get(path, {}).get("get", {}).get("parameters", []):
            if param["name"] in enums:
                param["schema"] = _with_enum(param["schema"], enums[param["name"]])
    body = spec.get("paths", {}).get("/v1/images", {}).get("post", {}).get("requestBody", {})
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    for name in ("model", "dataset"):
        if name in schema.get("properties", {}):
            schema["properties"][name] = _with_enum(schema["properties"][name], enums[name])
    return spec


def _with_enum(schema: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """`{"type": "string", ...}` or `anyOf: [string, null]` -> the same with the string an enum."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [_with_enum(s, values) for s in schema["anyOf"]]}
    if schema.get("type") == "string":
        return {**schema, "enum": values}
    return schema
