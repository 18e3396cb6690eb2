"""Latent tools: GET /interpolate (a strip between two seeds) and POST /v1/reconstruct (a VAE's
encode-decode of an uploaded image). The engine side is service.engine.latent; the decoder runs through
the model's batcher like every other request, the encoder and image work in the worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from imagegen.contract.sampling import default_label
from service.dataplane.admission import Ticket
from service.engine import latent
from service.engine.generation import TensorRequest
from service.errors import (
    InvalidParameter,
    ModelLoadError,
    ModelUnavailable,
    ParameterNotSupported,
    clip,
)
from service.http.auth import require_key
from service.http.body import read_body
from service.http.context import Context, context
from service.http.delivery import MeteredResponse, estimate_bytes, metered_json, run_admitted
from service.http.etag import etag_matches
from service.http.params import (
    MAX_ID_CHARS,
    CountText,
    FormatText,
    IdText,
    IndexText,
    SeedText,
    check_output_size,
    parse_int,
    parse_seed,
    read_query_as,
    resolve_class,
)
from service.http.routers.common import KEYED_ERRORS, ErrorBody, error_responses, query_parameters
from service.http.routing import guarded_route
from service.store.registry import ServedModel

router = APIRouter(
    tags=["latent"],
    route_class=guarded_route(require_key),
    responses=error_responses(*KEYED_ERRORS, 404, 422, 503),
)

T = TypeVar("T")
log = logging.getLogger("imagegen.routes")


class _ModelQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(max_length=MAX_ID_CHARS, description="A model id (`gan-mnist`) or a family (`gan`).")
    dataset: IdText = Field(None, description="Dataset when `model` is a family: mnist, fashion, emoji.")
    digit: IndexText = Field(None, description="Class index 0..num_classes-1 (conditional models only).")
    class_: IdText = Field(None, alias="class", description="Class name or index (conditional models only).")
    scale: CountText = Field(None, description="Nearest-neighbour upscale factor (1..max_scale).")
    format: FormatText = Field(None, description="png (default) or json.")


class InterpolateQuery(_ModelQuery):
    """GET /interpolate: the latents of seed_a and seed_b, walked by spherical interpolation."""

    seed_a: SeedText = Field(description="Seed of the strip's first image (its latent, as /sample's).")
    seed_b: SeedText = Field(description="Seed of the strip's last image.")
    steps: CountText = Field(
        None, description=f"Images in the strip, {latent.MIN_STEPS}..{latent.MAX_STEPS} (default 8)."
    )


class ReconstructQuery(_ModelQuery):
    """POST /v1/reconstruct: the query; the body is the image."""


# -- GET /interpolate -------------------------------------------------------------------------


@router.get(
    "/interpolate",
    summary="A strip walking the latent between two seeds",
    openapi_extra={"parameters": query_parameters(InterpolateQuery)},
    responses={
        200: {
            "description": "A PNG strip (left to right), or JSON with format=json.",
            "content": {"image/png": {}, "application/json": {}},
        },
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
    },
)
async def interpolate(request: Request) -> Response:
    """`/interpolate?model=gan-mnist&seed_a=1&seed_b=2&steps=8`: images of the slerp between the
    two seeds' latents (image 0 is /sample's image of seed_a, the last one seed_b's), one class."""
    ctx = context(request)
    await ctx.registry.admission.hold_early_retry(request.scope.get("client"))
    query = _read(ctx, InterpolateQuery, request)
    served = _served(ctx, request, query.model, query.dataset)
    manifest = served.require_manifest()
    if "z" not in manifest.inputs:
        raise ParameterNotSupported(
            f"model {served.id!r} has no latent (it takes only a class); interpolate works with "
            "models that take z",
            parameter="model",
            models=_ready_ids(ctx, lambda m: "z" in m.require_manifest().inputs),
        )
    seed_a, seed_b = parse_seed(query.seed_a), parse_seed(query.seed_b)
    assert seed_a is not None and seed_b is not None  # required by the query model
    steps = (
        8
        if query.steps is None
        else parse_int("steps", query.steps, low=latent.MIN_STEPS, high=latent.MAX_STEPS)
    )
    scale, fmt = _scale_and_format(ctx, query)
    check_output_size(manifest, steps, scale)
    klass = resolve_class(served, query.digit, query.class_)
    label = klass if klass is not None else default_label(seed_a, manifest.num_classes)
    headers = _headers(served) | {"X-Seed": str(seed_a)}
    etag = _etag(served, "interpolate", seed_a, seed_b, steps, label, scale, fmt)
    headers |= {"ETag": etag, "Cache-Control": "public, max-age=86400"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    feeds = {"z": latent.interpolation_latents(seed_a, seed_b, manifest.latent_dim, steps)}
    if "label" in manifest.inputs:
        feeds["label"] = np.full(steps, label, dtype=np.int64)
    ticket = _admit(request, ctx, served, steps, _response_bytes(served, steps, scale, fmt))
    try:
        images = await _decode(request, served, TensorRequest(feeds), ticket)
        if fmt == "png":
            strip = await _off_loop(ctx, latent.strip_png, images, scale)
            return MeteredResponse(strip, ticket, media_type="image/png", headers=headers)
        pngs = await _off_loop(ctx, latent.png_list, images, scale)
        body = {
            "model": served.id,
            "version": manifest.version,
            "seed_a": seed_a,
            "seed_b": seed_b,
            "steps": steps,
            "scale": scale,
            "label": label if manifest.conditional else None,
            "class_name": manifest.class_names[label] if manifest.conditional else None,
            "images": [
                {"t": t, "png_base64": _b64(png)}
                for t, png in zip(latent.interpolation_ts(steps), pngs, strict=True)
            ],
        }
        return metered_json(body, ticket, headers)
    except BaseException:
        ticket.release()
        raise


# -- POST /v1/reconstruct ---------------------------------------------------------------------


@router.post(
    "/v1/reconstruct",
    summary="A VAE's encode-decode of an uploaded image",
    openapi_extra={
        "parameters": query_parameters(ReconstructQuery),
        "requestBody": {
            "required": True,
            "description": "A PNG or JPEG image: the raw body (Content-Type image/png or image/jpeg), "
            "or a multipart/form-data field `file`. Converted to the model's channels and size.",
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        },
    },
    responses={
        200: {
            "description": "The reconstruction PNG, or JSON with format=json (with the latent).",
            "content": {"image/png": {}, "application/json": {}},
        },
        **error_responses(413, 415),
        408: {"model": ErrorBody, "description": "The body did not arrive within IMAGEGEN_BODY_TIMEOUT."},
    },
)
async def reconstruct(request: Request) -> Response:
    """The encoder's mean (mu) of the image, drawn back by the decoder. Without `class=` a
    conditional VAE tries every class and keeps the closest reconstruction (`X-Class`)."""
    ctx = context(request)
    admission = ctx.registry.admission
    await admission.hold_early_retry(request.scope.get("client"))
    query = _read(ctx, ReconstructQuery, request)
    served = _served(ctx, request, query.model, query.dataset)
    manifest = served.require_manifest()
    if not latent.has_encoder(manifest):
        raise ParameterNotSupported(
            f"model {served.id!r} has no encoder; reconstruct works with the VAE models",
            parameter="model",
            models=_ready_ids(ctx, lambda m: latent.has_encoder(m.manifest)),
        )
    scale, fmt = _scale_and_format(ctx, query)
    check_output_size(manifest, 1, scale)
    klass = resolve_class(served, query.digit, query.class_)
    content_type = request.headers.get("content-type", "")
    latent.check_upload_type(content_type)
    admission.check_total(request.scope.get("client"))  # full: 503 before reading the body
    s = ctx.settings
    body = await read_body(request, s.max_body_bytes, s.body_timeout)
    candidates = _candidate_classes(served, klass)
    # Both images (the input and its reconstruction) come back with format=json.
    size = _response_bytes(served, 1 if fmt == "png" else 2, scale, fmt) + 32 * manifest.latent_dim
    ticket = _admit(request, ctx, served, len(candidates), size)
    try:
        return await _reconstruct(request, ctx, served, body, candidates, klass, scale, fmt, ticket)
    except BaseException:
        ticket.release()
        raise


def _candidate_classes(served: ServedModel, klass: int | None) -> list[int]:
    """The classes to try: the one asked for, every class of a conditional model, or 0."""
    manifest = served.require_manifest()
    if not manifest.conditional:
        return [0]
    return [klass] if klass is not None else list(range(manifest.num_classes))


async def _reconstruct(
    request: Request,
    ctx: Context,
    served: ServedModel,
    body: bytes,
    candidates: list[int],
    klass: int | None,
    scale: int,
    fmt: str,
    ticket: Ticket,
) -> Response:
    """The admitted work of POST /v1/reconstruct: decode the upload, encode, decode each candidate
    class through the batcher, keep the closest."""
    manifest = served.require_manifest()
    content_type = request.headers.get("content-type", "")
    original = await _off_loop(ctx, _decode_upload, content_type, body, manifest.image)
    encoder = await _off_loop(ctx, _load_encoder, _encoders(request, ctx), served)
    labels = np.asarray(candidates, dtype=np.int64)
    images_in = np.repeat(original, len(candidates), axis=0)
    mu = await _off_loop(ctx, encoder.encode, images_in, labels)
    feeds: dict[str, np.ndarray] = {"z": mu.astype(np.float32)}
    if "label" in manifest.inputs:
        feeds["label"] = labels
    images = await _decode(request, served, TensorRequest(feeds), ticket)
    errors = latent.reconstruction_error(original, images)
    best = int(np.argmin(errors))
    headers = _headers(served) | {"Cache-Control": "no-store"}
    if manifest.conditional:
        headers["X-Class"] = str(candidates[best])
    [png] = await _off_loop(ctx, latent.png_list, images[best : best + 1], scale)
    if fmt == "png":
        return MeteredResponse(png, ticket, media_type="image/png", headers=headers)
    [seen] = await _off_loop(ctx, latent.png_list, original, scale)
    payload = {
        "model": served.id,
        "version": manifest.version,
        "label": candidates[best] if manifest.conditional else None,
        "class_name": manifest.class_names[candidates[best]] if manifest.conditional else None,
        "class_given": klass is not None,
        "latent": [float(v) for v in mu[best]],
        "mse": float(errors[best]),
        "scale": scale,
        "input_png_base64": _b64(seen),
        "png_base64": _b64(png),
    }
    return metered_json(payload, ticket, headers)


def _decode_upload(content_type: str, body: bytes, spec: Any) -> np.ndarray:
    return latent.model_input(latent.decode_image(latent.read_upload(content_type, body)), spec)


def _load_encoder(encoders: latent.Encoders, served: ServedModel) -> latent.Encoder:
    assert served.manifest is not None
    try:
        return encoders.get(served.manifest)
    except ModelLoadError as exc:
        raise ModelUnavailable(
            f"the encoder of {served.id!r} cannot be loaded: {exc}", model=served.id
        ) from None


def _encoders(request: Request, ctx: Context) -> latent.Encoders:
    """One Encoders per app, made on first use and kept in the app's state."""
    state = request.app.state
    if getattr(state, "encoders", None) is None:
        state.encoders = latent.Encoders(ctx.settings.models_dir, ctx.settings.cpu_threads)
    encoders: latent.Encoders = state.encoders
    return encoders


# -- shared -----------------------------------------------------------------------------------


def _read(ctx: Context, model: type[T], request: Request) -> T:
    try:
        return read_query_as(model, request.query_params.multi_items())  # type: ignore[type-var]
    except InvalidParameter as exc:
        if exc.details.get("parameter") == "model":
            exc.details["models"] = ctx.registry.ids()
        raise


def _served(ctx: Context, request: Request, model: str, dataset: str | None) -> ServedModel:
    served = ctx.registry.resolve(model, dataset)
    request.scope["state"]["model"] = served.id
    return served


def _scale_and_format(ctx: Context, query: _ModelQuery) -> tuple[int, str]:
    scale = 1 if query.scale is None else parse_int("scale", query.scale, low=1, high=ctx.settings.max_scale)
    fmt = (query.format or "png").strip().lower()
    if fmt not in ("png", "json"):
        raise InvalidParameter(
            f"format must be one of ['png', 'json'], got {clip(query.format or '', 20)!r}",
            parameter="format",
            allowed=["png", "json"],
        )
    return scale, fmt


def _ready_ids(ctx: Context, keep: Callable[[ServedModel], bool]) -> list[str]:
    return [
        i for i, m in sorted(ctx.registry.models.items()) if m.state == "ready" and m.manifest and keep(m)
    ]


def _headers(served: ServedModel) -> dict[str, str]:
    assert served.manifest is not None
    return {"X-Model-Id": served.id, "X-Model-Version": str(served.manifest.version)}


def _etag(served: ServedModel, *parts: object) -> str:
    """Everything the bytes depend on, provider included (as service.http.etag's image ETag)."""
    assert served.manifest is not None
    key = "|".join(str(p) for p in (served.id, served.manifest.version, served.provider or "", *parts))
    return '"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'


def _response_bytes(served: ServedModel, images: int, scale: int, fmt: str) -> int:
    """Upper bound of the response's size, reserved at admission (a strip's canvas is no larger
    than the grid estimate_bytes assumes)."""
    image = served.require_manifest().image
    values = image.channels * image.height * image.width
    return estimate_bytes(values, images, scale, "png" if fmt == "png" else "json")


def _admit(request: Request, ctx: Context, served: ServedModel, images: int, size: int) -> Ticket:
    """Admission, as the image routes': 503 with Retry-After before any work when the model, the
    server or the bytes of responses in flight are at their bounds (service/dataplane/admission.py)."""
    return ctx.registry.admission.admit(served.id, images, size, request.scope.get("client"))


async def _decode(
    request: Request, served: ServedModel, tensors: TensorRequest, ticket: Ticket
) -> np.ndarray:
    """The decoder's images for these feeds, through the model's batcher (merged with the image
    requests of the same model)."""
    images: np.ndarray = await run_admitted(request, served, tensors, ticket)
    return images


async def _off_loop(ctx: Context, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(ctx.registry.executor, fn, *args)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
