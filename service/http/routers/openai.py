"""OpenAI's Images API: `POST /v1/images/generations`, as the official `openai` SDK sends it.

A thin adapter over the one data plane (admission, batching, metrics and the API key as on every
image route): `model` is an id or a family, `prompt` names the class in words
(service/http/prompts.py; an unconditional model takes any prompt), `n` images, `size` `WxH` an
integer multiple of the model's size (nearest-neighbour), `response_format` `b64_json` or `url`,
and `seed` as an extension. A `url` is the deterministic `GET /sample` link of that image, so it
can be fetched later and cached. Errors come in OpenAI's shape with the statuses its SDK maps to
its own exceptions: 400 BadRequestError (our 422s), 401 AuthenticationError, 404 NotFoundError,
429 RateLimitError (our 503 overloaded, with Retry-After).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from imagegen.contract.manifest import ImageSpec
from imagegen.contract.sampling import MAX_SEED
from service.engine.generation import ImageRequest
from service.errors import InvalidParameter, LimitExceeded, ServiceError
from service.http.auth import require_key
from service.http.body import read_json
from service.http.context import context
from service.http.delivery import http_call, metered_json, response_bytes
from service.http.handlers import validated
from service.http.params import MAX_ID_CHARS, check_output_size, draw_seed, item_labels
from service.http.prompts import prompt_class
from service.http.routers.common import KEYED_ERRORS, error_responses
from service.http.routing import guarded_route

router = APIRouter(
    tags=["OpenAI-compatible"],
    route_class=guarded_route(require_key),
    responses=error_responses(*KEYED_ERRORS, 400, 404),
)

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")
# Our statuses the SDK has no exception for, as the ones it raises for the same meaning.
_OPENAI_STATUS = {422: 400, 503: 429}


class GenerationsBody(BaseModel):
    """OpenAI's image generation request; its other fields (quality, style, user, ...) are accepted
    and have no effect here."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(max_length=MAX_ID_CHARS, description="Model id or family.")
    prompt: StrictStr = Field(
        "", max_length=1000, description="The class in words; any text for an unconditional model."
    )
    n: Annotated[StrictInt, Field(ge=1)] = 1
    size: StrictStr | None = Field(
        None, max_length=16, description="WxH, an integer multiple of the model's size."
    )
    response_format: Literal["b64_json", "url"] | None = "b64_json"
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = Field(
        None, description="Extension: first seed."
    )
    dataset: StrictStr | None = Field(
        None, max_length=MAX_ID_CHARS, description="Extension: dataset of a family."
    )


@router.post(
    "/v1/images/generations",
    summary="OpenAI-compatible image generation",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": GenerationsBody.model_json_schema()}},
        }
    },
)
async def generations(request: Request) -> Response:
    try:
        return await _generate(request)
    except ServiceError as exc:
        return openai_error(exc)


async def _generate(request: Request) -> Response:
    ctx = context(request)
    s = ctx.settings
    call = http_call(request)
    plane = ctx.plane
    await plane.enter(call, body=True)
    body = await read_json(
        request, max_bytes=s.max_body_bytes, max_depth=s.max_json_depth, timeout_s=s.body_timeout
    )
    spec = validated(GenerationsBody, body)
    served = plane.resolve(call, spec.model, spec.dataset)
    manifest = served.require_manifest()
    if spec.n > s.max_n:
        raise LimitExceeded(f"n must be in [1, {s.max_n}], got {spec.n}", parameter="n", max=s.max_n)
    scale = size_scale(spec.size, manifest.image, s.max_scale)
    check_output_size(manifest, spec.n, scale)
    label = prompt_class(served, spec.prompt) if manifest.conditional else None
    start = spec.seed if spec.seed is not None else draw_seed()
    seeds = tuple(range(start, start + spec.n))
    labels = item_labels(served, seeds, label)
    created = int(time.time())
    if spec.response_format == "url":
        base = str(request.base_url).rstrip("/")
        data = [{"url": _sample_url(base, served.id, seed, lab if label is not None else None, scale)}
                for seed, lab in zip(seeds, labels, strict=True)]  # fmt: skip
        return JSONResponse({"created": created, "data": data})
    req = ImageRequest(seeds, labels, scale, "png_base64_list")
    pngs, ticket = await plane.execute(call, served, req, response_bytes(served, req))
    names = manifest.class_names
    data = [{"b64_json": png, "revised_prompt": names[lab] if manifest.conditional else spec.prompt}
            for png, lab in zip(pngs, labels, strict=True)]  # fmt: skip
    try:
        return metered_json({"created": created, "data": data}, ticket, {"X-Model-Id": served.id})
    except BaseException:
        ticket.release()
        raise


def size_scale(size: str | None, image: ImageSpec, max_scale: int) -> int:
    """`WxH` -> the nearest-neighbour scale it asks of a model drawing image.width x image.height."""
    if size is None or size == "auto":
        return 1
    match = _SIZE.match(size)
    allowed = [f"{image.width * k}x{image.height * k}" for k in range(1, min(max_scale, 8) + 1)]
    if match is not None:
        w, h = int(match.group(1)), int(match.group(2))
        if w % image.width == 0 and w // image.width == h // image.height and h % image.height == 0:
            scale = w // image.width
            if 1 <= scale <= max_scale:
                return scale
    raise InvalidParameter(
        f"size must be WxH, an integer multiple of the model's {image.width}x{image.height} up to "
        f"{max_scale}x, e.g. {', '.join(allowed[:4])}; got {size[:20]!r}",
        parameter="size",
        allowed=allowed,
    )


def _sample_url(base: str, model: str, seed: int, label: int | None, scale: int) -> str:
    query: dict[str, Any] = {"model": model, "seed": seed}
    if label is not None:
        query["class"] = label
    if scale != 1:
        query["scale"] = scale
    return f"{base}/sample?{urlencode(query)}"


def openai_error(exc: ServiceError) -> JSONResponse:
    """Our error in OpenAI's shape (`message`, `type`, `param`, `code`), our details kept beside."""
    status = _OPENAI_STATUS.get(exc.status, exc.status)
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    error = exc.body()["error"]
    body = {"error": {**error, "type": kind, "param": exc.details.get("parameter")}}
    return JSONResponse(body, status_code=status, headers=exc.headers)
