"""Images: GET /generate, GET /sample (one query model) and POST /v1/images (one body model).

Routes parse (service.http.params), hand a job to the model's batcher and shape the response.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.engine.generation import ImageRequest
from service.errors import (
    InvalidParameter,
)
from service.http.auth import require_key
from service.http.body import read_json
from service.http.context import Context, context
from service.http.delivery import MeteredResponse, http_call, metered_json, response_bytes
from service.http.etag import etag_matches, image_etag
from service.http.handlers import validated
from service.http.images_body import ImagesBody, body_request, check_item_count
from service.http.params import ImageQuery, query_request, read_query
from service.http.routers.common import KEYED_ERRORS, ErrorBody, error_responses, query_parameters
from service.http.routing import guarded_route
from service.store.served import ServedModel

log = logging.getLogger("imagegen.routes")

router = APIRouter(
    tags=["images"],
    route_class=guarded_route(require_key),
    responses=error_responses(*KEYED_ERRORS, 404, 422, 503),
)

# What Swagger UI previews and ReDoc shows as the sample answers (tests compare their keys with
# real answers, so they cannot drift). The base64 is a real 28x28 PNG's start, shortened.
PNG_CONTENT = {"schema": {"type": "string", "format": "binary"}}
_IMAGE_ENTRY = {
    "seed": 42,
    "label": 2,
    "class_name": "2",
    "png_base64": "iVBORw0KGgoAAAANSUhEUgAAABwAAAAc...",
}
GET_JSON_EXAMPLE = {
    "model": "gan-mnist",
    "version": 2,
    "seed": 42,
    "n": 1,
    "scale": 1,
    "images": [_IMAGE_ENTRY],
}
POST_JSON_EXAMPLE = {"model": "gan-mnist", "version": 2, "scale": 1, "images": [_IMAGE_ENTRY]}
_GET_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A PNG (a grid when n > 1), or JSON with format=json.",
        "content": {"image/png": PNG_CONTENT, "application/json": {"example": GET_JSON_EXAMPLE}},
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
}
# The parameters are read by params.read_query (the ImageQuery model, without FastAPI's per-request
# query-model machinery: ~150 us less CPU per request, measured in docs/service.md); the same
# model documents them here.
_GET_DOC = {"parameters": query_parameters(ImageQuery)}


@router.get("/generate", summary="Image(s) of a class", responses=_GET_RESPONSES, openapi_extra=_GET_DOC)
async def generate(request: Request) -> Response:
    """`/generate?model=label&digit=3`: the class from `digit=`/`class=` (or seed % num_classes)."""
    ctx = context(request)
    return await _get_images(request, ctx)


@router.get("/sample", summary="Image(s) from a seed", responses=_GET_RESPONSES, openapi_extra=_GET_DOC)
async def sample(request: Request) -> Response:
    """`/sample?model=gan&seed=42`: the same parameters as /generate."""
    ctx = context(request)
    return await _get_images(request, ctx)


async def _get_images(request: Request, ctx: Context) -> Response:
    call = http_call(request)
    plane = ctx.plane
    await plane.enter(call)  # a connection back before its Retry-After waits here, unparsed
    try:
        query = read_query(request.query_params.multi_items())
    except InvalidParameter as exc:
        if exc.details.get("parameter") == "model":  # missing or too long: say what exists
            exc.details["models"] = ctx.registry.ids()
        raise
    served = plane.resolve(call, query.model, query.dataset)
    s = ctx.settings
    try:
        get = query_request(served, query, max_n=s.max_n, max_scale=s.max_scale)
    except InvalidParameter as exc:
        if exc.details.get("parameter") == "class" and query.class_ is not None:
            _suggest_models_with(ctx, exc, query.class_)
        raise
    headers = _model_headers(served, get.seed)
    if get.seed_given:
        req = get.request
        etag = image_etag(
            served.id, served.require_manifest().version, served.provider or "", get.seed,
            get.class_index, req.n, req.scale, get.fmt,
        )  # fmt: skip
        headers["ETag"] = etag
        headers["Cache-Control"] = "public, max-age=86400"
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
    else:
        headers["Cache-Control"] = "no-store"
    result, ticket = await plane.execute(call, served, get.request, response_bytes(served, get.request))
    try:
        if get.fmt == "json":
            body = {
                "model": served.id,
                "version": served.require_manifest().version,
                "seed": get.seed,
                "n": get.request.n,
                "scale": get.request.scale,
                "images": _image_entries(served, get.request, result),
            }
            return metered_json(body, ticket, headers)
        return MeteredResponse(result, ticket, media_type="image/png", headers=headers)
    except BaseException:
        ticket.release()
        raise


@router.post(
    "/v1/images",
    summary="Batch of images as JSON or NPY",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ImagesBody.model_json_schema()}},
        }
    },
    responses={
        200: {
            "description": "The images as JSON (base64 PNGs), or one NPY array with format=npy.",
            "content": {
                "application/json": {"example": POST_JSON_EXAMPLE},
                "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **error_responses(400, 413, 415),
        408: {"model": ErrorBody, "description": "The body did not arrive within IMAGEGEN_BODY_TIMEOUT."},
    },
)
async def images(request: Request) -> Response:
    """The body is read by hand (not a FastAPI body parameter) to enforce size and depth limits
    before parsing and to give each failure its own 4xx."""
    ctx = context(request)
    s = ctx.settings
    call = http_call(request)
    plane = ctx.plane
    await plane.enter(call, body=True)  # full: 503 before reading the body
    body = await read_json(
        request, max_bytes=s.max_body_bytes, max_depth=s.max_json_depth, timeout_s=s.body_timeout
    )
    _check_list_lengths(body, s.max_items)
    spec = validated(ImagesBody, body)
    served = plane.resolve(call, spec.model, spec.dataset)
    req = body_request(served, spec, max_items=s.max_items, max_scale=s.max_scale)
    headers = _model_headers(served, req.seeds[0])
    result, ticket = await plane.execute(call, served, req, response_bytes(served, req))
    try:
        if spec.format == "npy":
            return MeteredResponse(result, ticket, media_type="application/x-npy", headers=headers)
        payload = {
            "model": served.id,
            "version": served.require_manifest().version,
            "scale": req.scale,
            "images": _image_entries(served, req, result),
        }
        return metered_json(payload, ticket, headers)
    except BaseException:
        ticket.release()
        raise


def _check_list_lengths(body: Any, max_items: int) -> None:
    """Refuse over-long seeds/labels before validating them item by item: 340,000 bad labels
    made a 61.7 MB error body in 9.5 s (issue 16, row 2)."""
    if isinstance(body, dict):
        for name in ("seeds", "labels"):
            value = body.get(name)
            if isinstance(value, list):
                check_item_count(len(value), max_items)


def _image_entries(served: ServedModel, req: ImageRequest, pngs: list[str]) -> list[dict[str, Any]]:
    manifest = served.require_manifest()
    conditional = manifest.conditional
    return [
        {
            "seed": seed,
            "label": label if conditional else None,
            "class_name": manifest.class_names[label] if conditional else None,
            "png_base64": png,
        }
        for seed, label, png in zip(req.seeds, req.labels, pngs, strict=True)
    ]


def _suggest_models_with(ctx: Context, exc: InvalidParameter, name: str) -> None:
    """`model=gan&class=bag` on MNIST: name the dataset and the ready models that have the class."""
    having = [
        served
        for i in ctx.registry.ready_ids()
        if (served := ctx.registry.models[i]).manifest is not None
        and not served.manifest.baseline
        and served.lookup_class(name) is not None
    ]
    if having:
        dataset = having[0].require_manifest().dataset
        exc.details["suggest"] = {"dataset": dataset, "models": [m.id for m in having]}
        exc.message += f"; {name!r} is a class of the {dataset} models: add dataset={dataset} or use one"


def _model_headers(served: ServedModel, seed: int) -> dict[str, str]:
    version = served.require_manifest().version
    return {"X-Model-Id": served.id, "X-Model-Version": str(version), "X-Seed": str(seed)}
