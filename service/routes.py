"""HTTP routes: images (GET /generate, /sample, POST /v1/images), registry, health, metrics, playground.

Routes parse and check what the client sent (service.params), hand a job to the model's
batcher and shape the response; every failure is a ServiceError rendered by one handler.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from imagegen.contract.sampling import MAX_SEED
from service.batching import BatcherStopped, Job, QueueFull
from service.errors import (
    InferenceFailed,
    InvalidParameter,
    InvalidRequest,
    LimitExceeded,
    MalformedJson,
    Overloaded,
    ParameterNotSupported,
    PayloadTooLarge,
    ServiceError,
    ShuttingDown,
    Unauthorized,
    UnknownParameter,
    UnsupportedMediaType,
)
from service.generation import ImageRequest
from service.metrics import CONTENT_TYPE, Metrics
from service.params import GetRequest, check_output_size, draw_seed, image_request, item_labels
from service.registry import Registry, ServedModel
from service.settings import Settings

log = logging.getLogger("imagegen.routes")

MAX_BODY_BYTES = 1 << 20
GET_PARAMS = frozenset(["model", "dataset", "seed", "n", "scale", "format", "digit", "class"])


@dataclass
class Context:
    """What the routes share; built by create_app, one per app."""

    settings: Settings
    registry: Registry
    metrics: Metrics
    provider: str
    playground: bytes


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


def _authorize(ctx: Context, request: Request) -> None:
    secret = ctx.settings.api_key
    if secret is None:
        return
    key = secret.get_secret_value()
    given = request.headers.get("x-api-key")
    if given is None:
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise Unauthorized(
            "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _check_query(request: Request) -> None:
    """Unknown or repeated query parameters are errors: a typo (`digt=3`) must not be ignored silently."""
    keys = [k for k, _ in request.query_params.multi_items()]
    unknown = sorted(set(keys) - GET_PARAMS)
    if unknown:
        raise UnknownParameter(
            f"unknown query parameter(s) {unknown}", parameters=unknown, allowed=sorted(GET_PARAMS)
        )
    if len(keys) != len(set(keys)):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise InvalidParameter(f"query parameter(s) {repeated} given more than once", parameters=repeated)


async def _run(served: ServedModel, image_request: ImageRequest) -> Any:
    assert served.batcher is not None
    try:
        future = served.batcher.submit(Job(size=image_request.n, payload=image_request))
    except QueueFull as exc:
        raise Overloaded(
            f"model {served.id!r} is at its queue limit ({exc}); retry shortly",
            headers={"Retry-After": "1"},
            model=served.id,
        ) from None
    except BatcherStopped:
        raise ShuttingDown("the service is shutting down", headers={"Retry-After": "1"}) from None
    try:
        return await future
    except Exception as exc:
        log.error("inference failed for %s: %s", served.id, exc, exc_info=exc)
        raise InferenceFailed(f"inference failed for model {served.id!r}", model=served.id) from None


def _etag(served: ServedModel, get: GetRequest) -> str:
    req = get.request
    klass = "auto" if get.class_index is None else str(get.class_index)
    key = f"{served.id}|{served.manifest.version}|{get.seed}|{klass}|{req.n}|{req.scale}|{get.fmt}"
    return '"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _image_entries(served: ServedModel, req: ImageRequest, pngs: list[str]) -> list[dict[str, Any]]:
    manifest = served.manifest
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


def _model_headers(served: ServedModel, seed: int) -> dict[str, str]:
    return {"X-Model-Id": served.id, "X-Model-Version": str(served.manifest.version), "X-Seed": str(seed)}


def _query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": name == "model",
        "description": description,
        "schema": schema,
    }


# Query parameters are read from request.query_params by service.params (FastAPI's per-parameter
# validation costs more than the rest of the request); they are documented for /docs here.
_GET_PARAMETERS = [
    _query_param(
        "model",
        "A model id (`gan-mnist`) or a family (`gan`), resolved with `dataset=` "
        "(default from settings) to the family's non-baseline model.",
        {"type": "string"},
    ),
    _query_param(
        "dataset", "Dataset when `model` is a family: mnist, fashion, emoji, ...", {"type": "string"}
    ),
    _query_param(
        "seed",
        "Integer in [0, 2^63-1]; image i of n uses seed+i. Omitted: the server draws one "
        "(returned in X-Seed).",
        {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
    ),
    _query_param(
        "n",
        "Number of images (1..max_n); n > 1 returns one grid PNG, ceil(sqrt(n)) columns.",
        {"type": "integer", "minimum": 1, "default": 1},
    ),
    _query_param(
        "scale",
        "Nearest-neighbour upscale factor (1..max_scale).",
        {"type": "integer", "minimum": 1, "default": 1},
    ),
    _query_param(
        "format",
        "png (default) or json (base64 PNGs with seeds and labels).",
        {"type": "string", "enum": ["png", "json"], "default": "png"},
    ),
    _query_param(
        "digit", "Class index 0..num_classes-1 (conditional models only).", {"type": "integer", "minimum": 0}
    ),
    _query_param(
        "class",
        "Class name, case-insensitive (`bag`, `Ankle boot`, `smileys-emotion`), or its "
        "index (conditional models only).",
        {"type": "string"},
    ),
]
_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A PNG (a grid when n > 1), or JSON with format=json.",
        "content": {"image/png": {}, "application/json": {}},
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
}


class ImagesBody(BaseModel):
    """POST /v1/images. Give `seeds` and/or `labels`; when both, the same length."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(description="Model id or family.")
    dataset: StrictStr | None = Field(None, description="Dataset when `model` is a family.")
    seeds: list[Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]] | None = Field(
        None, description="One seed per image. Omitted: the server draws s and uses s, s+1, ..."
    )
    labels: list[StrictInt | StrictStr] | None = Field(
        None, description="One class (index or name) per image. Omitted: seed % num_classes."
    )
    format: Literal["png_base64", "npy"] = Field(
        "png_base64",
        description="png_base64: JSON with one base64 PNG per image; npy: application/x-npy, float32 "
        "array (N, C, H*scale, W*scale) with values in [0, 1].",
    )
    scale: Annotated[StrictInt, Field(ge=1)] = Field(1, description="Nearest-neighbour upscale factor.")


def build_router() -> APIRouter:
    router = APIRouter()

    async def get_images(request: Request) -> Response:
        ctx = _ctx(request)
        _authorize(ctx, request)
        _check_query(request)
        q = request.query_params
        model = q.get("model")
        if model is None:
            raise InvalidParameter(
                "model is required (a model id or a family)", parameter="model", models=ctx.registry.ids()
            )
        served = ctx.registry.resolve(model, q.get("dataset"))
        request.scope["state"]["model"] = served.id
        s = ctx.settings
        get = image_request(
            served,
            seed=q.get("seed"),
            n=q.get("n"),
            scale=q.get("scale"),
            fmt=q.get("format"),
            digit=q.get("digit"),
            class_=q.get("class"),
            max_n=s.max_n,
            max_scale=s.max_scale,
        )
        headers = _model_headers(served, get.seed)
        if get.seed_given:
            etag = _etag(served, get)
            headers["ETag"] = etag
            headers["Cache-Control"] = "public, max-age=86400"
            if _etag_matches(request.headers.get("if-none-match"), etag):
                return Response(status_code=304, headers=headers)
        else:
            headers["Cache-Control"] = "no-store"
        result = await _run(served, get.request)
        if get.fmt == "json":
            body = {
                "model": served.id,
                "version": served.manifest.version,
                "seed": get.seed,
                "n": get.request.n,
                "scale": get.request.scale,
                "images": _image_entries(served, get.request, result),
            }
            return JSONResponse(body, headers=headers)
        return Response(result, media_type="image/png", headers=headers)

    # The hot routes, registered first as plain Starlette routes so they match before the
    # documented APIRoutes below: no dependency solving, ~0.06 ms less CPU per request. The
    # APIRoutes (same handler) only feed /docs and /openapi.json.
    router.add_route("/generate", get_images, methods=["GET"], include_in_schema=False)
    router.add_route("/sample", get_images, methods=["GET"], include_in_schema=False)

    @router.get(
        "/generate",
        tags=["images"],
        summary="Image(s) of a class",
        openapi_extra={"parameters": _GET_PARAMETERS},
        responses=_IMAGE_RESPONSES,
    )
    async def generate(request: Request) -> Response:
        """`/generate?model=label&digit=3`: the class from `digit=`/`class=` (or seed % num_classes)."""
        return await get_images(request)

    @router.get(
        "/sample",
        tags=["images"],
        summary="Image(s) from a seed",
        openapi_extra={"parameters": _GET_PARAMETERS},
        responses=_IMAGE_RESPONSES,
    )
    async def sample(request: Request) -> Response:
        """`/sample?model=gan&seed=42`: same parameters as /generate."""
        return await get_images(request)

    @router.post(
        "/v1/images",
        tags=["images"],
        summary="Batch of images as JSON or NPY",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ImagesBody.model_json_schema()}},
            }
        },
        responses={200: {"content": {"application/json": {}, "application/x-npy": {}}}},
    )
    async def images(request: Request) -> Response:
        ctx = _ctx(request)
        _authorize(ctx, request)
        body = await _json_body(request)
        try:
            spec = ImagesBody.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequest("request body does not match the schema", errors=_errors(exc)) from None
        served = ctx.registry.resolve(spec.model, spec.dataset)
        request.scope["state"]["model"] = served.id
        req = _post_request(ctx, served, spec)
        headers = _model_headers(served, req.seeds[0])
        result = await _run(served, req)
        if spec.format == "npy":
            return Response(result, media_type="application/x-npy", headers=headers)
        payload = {
            "model": served.id,
            "version": served.manifest.version,
            "scale": req.scale,
            "images": _image_entries(served, req, result),
        }
        return JSONResponse(payload, headers=headers)

    @router.get("/v1/models", tags=["registry"], summary="All models with their state")
    async def models(request: Request) -> dict[str, Any]:
        ctx = _ctx(request)
        _authorize(ctx, request)
        reg = ctx.registry
        return {
            "models": [reg.models[i].describe() for i in reg.ids()],
            "loaded": reg.loaded,
            "provider": ctx.provider,
            "default_dataset": ctx.settings.default_dataset,
        }

    @router.get("/v1/models/{model_id}", tags=["registry"], summary="One model: manifest, state, provider")
    async def model(request: Request, model_id: str) -> dict[str, Any]:
        ctx = _ctx(request)
        _authorize(ctx, request)
        served = ctx.registry.models.get(model_id)
        if served is None:
            ctx.registry.get(model_id)  # raises UnknownModel listing the ids
        request.scope["state"]["model"] = served.id
        return served.describe()

    @router.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", tags=["health"], summary="Readiness: models loaded and warmed")
    async def readyz(request: Request) -> JSONResponse:
        reg = _ctx(request).registry
        states = {i: reg.models[i].state for i in reg.ids()}
        ready = [i for i, s in states.items() if s == "ready"]
        if reg.loaded and ready:
            return JSONResponse({"status": "ready", "models": states})
        message = "models are still loading" if not reg.loaded else "no model could be loaded"
        reasons = {i: reg.models[i].reason for i in reg.ids() if reg.models[i].reason}
        return JSONResponse(
            {"error": {"code": "not_ready", "message": message, "models": states, "reasons": reasons}},
            status_code=503,
        )

    @router.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        return Response(_ctx(request).metrics.render(), media_type=CONTENT_TYPE)

    @router.get("/", include_in_schema=False)
    async def playground(request: Request) -> HTMLResponse:
        return HTMLResponse(_ctx(request).playground)

    return router


async def _json_body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {ctype[:60]!r}", allowed=["application/json"]
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body over {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body over {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"body is not valid JSON: {exc}") from None


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _post_request(ctx: Context, served: ServedModel, spec: ImagesBody) -> ImageRequest:
    manifest = served.manifest
    s = ctx.settings
    if spec.seeds is None and spec.labels is None:
        raise InvalidRequest("give seeds and/or labels", errors=[{"loc": ["seeds"], "msg": "missing"}])
    if spec.seeds is not None and spec.labels is not None and len(spec.seeds) != len(spec.labels):
        raise InvalidRequest(
            f"seeds ({len(spec.seeds)}) and labels ({len(spec.labels)}) differ in length",
            errors=[{"loc": ["labels"], "msg": "length differs from seeds"}],
        )
    count = len(spec.seeds if spec.seeds is not None else spec.labels)
    if count == 0:
        raise InvalidRequest("seeds/labels must not be empty", errors=[{"loc": ["seeds"], "msg": "empty"}])
    if count > s.max_items:
        raise LimitExceeded(
            f"{count} images requested, at most {s.max_items}", parameter="seeds", max=s.max_items
        )
    if spec.scale > s.max_scale:
        raise LimitExceeded(
            f"scale must be in [1, {s.max_scale}], got {spec.scale}",
            parameter="scale",
            min=1,
            max=s.max_scale,
        )
    check_output_size(manifest, count, spec.scale)
    if spec.seeds is not None:
        seeds = tuple(spec.seeds)
    else:
        start = draw_seed()
        seeds = tuple(range(start, start + count))
    if spec.labels is None:
        labels = item_labels(served, seeds, None)
    else:
        if not manifest.conditional:
            raise ParameterNotSupported(
                f"model {served.id!r} is unconditional and takes no labels",
                parameter="labels",
                model=served.id,
            )
        labels = tuple(_label(served, value, i) for i, value in enumerate(spec.labels))
    output = "npy" if spec.format == "npy" else "png_base64_list"
    return ImageRequest(seeds, labels, spec.scale, output)


def _label(served: ServedModel, value: int | str, index: int) -> int:
    manifest = served.manifest
    if isinstance(value, str):
        found = served.lookup_class(value)
        if found is not None:
            return found
        if value.strip().isascii() and value.strip().isdigit() and len(value) < 20:
            value = int(value.strip())  # a class index sent as a string, as `class=3` accepts
    if isinstance(value, int) and 0 <= value < manifest.num_classes:
        return value
    raise InvalidParameter(
        f"labels[{index}] = {str(value)[:60]!r} is not a class of {served.id!r}",
        parameter="labels",
        min=0,
        max=manifest.num_classes - 1,
        allowed=manifest.class_names,
    )


def service_error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
