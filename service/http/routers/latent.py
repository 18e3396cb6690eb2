"""Latent tools: GET /interpolate (a strip between two seeds) and POST /v1/reconstruct (a VAE's
encode-decode of an uploaded image). The engine side is service.engine.latent; the decoder runs through
the model's batcher like every other request, the encoder and image work in the worker threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from imagegen.contract.sampling import default_label
from service.dataplane.admission import Ticket
from service.dataplane.plane import Call
from service.engine import latent
from service.engine.generation import TensorRequest
from service.errors import (
    InvalidParameter,
    ModelLoadError,
    ModelUnavailable,
    ParameterNotSupported,
)
from service.http.auth import require_key
from service.http.body import read_body
from service.http.context import Context, context
from service.http.delivery import MeteredResponse, http_call, metered_json
from service.http.etag import etag_matches
from service.http.latent_query import (
    InterpolateQuery,
    ReconstructQuery,
    b64,
    candidate_classes,
    decode_upload_within,
    latent_etag,
    model_headers,
    response_bytes,
    scale_and_format,
)
from service.http.params import (
    check_output_size,
    parse_int,
    parse_seed,
    read_query_as,
    resolve_class,
)
from service.http.routers.common import KEYED_ERRORS, ErrorBody, error_responses, query_parameters
from service.http.routing import guarded_route
from service.store.served import ServedModel

router = APIRouter(
    tags=["latent"],
    route_class=guarded_route(require_key),
    responses=error_responses(*KEYED_ERRORS, 404, 422, 503),
)

T = TypeVar("T", InterpolateQuery, ReconstructQuery)
log = logging.getLogger("imagegen.routes")


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
    ctx, call, query, served = await _entered(request, InterpolateQuery)
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
    scale, fmt = scale_and_format(query, ctx.settings.max_scale)
    check_output_size(manifest, steps, scale)
    klass = resolve_class(served, query.digit, query.class_)
    label = klass if klass is not None else default_label(seed_a, manifest.num_classes)
    headers = model_headers(served) | {"X-Seed": str(seed_a)}
    etag = latent_etag(served, "interpolate", seed_a, seed_b, steps, label, scale, fmt)
    headers |= {"ETag": etag, "Cache-Control": "public, max-age=86400"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    feeds = {"z": latent.interpolation_latents(seed_a, seed_b, manifest.latent_dim, steps)}
    if "label" in manifest.inputs:
        feeds["label"] = np.full(steps, label, dtype=np.int64)
    size = response_bytes(served, steps, scale, fmt)
    images, ticket = await ctx.plane.execute(call, served, TensorRequest(feeds), size)
    try:
        if fmt == "png":
            strip = await ctx.plane.off_loop(latent.strip_png, images, scale)
            return MeteredResponse(strip, ticket, media_type="image/png", headers=headers)
        pngs = await ctx.plane.off_loop(latent.png_list, images, scale)
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
                {"t": t, "png_base64": b64(png)}
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
    ctx, call, query, served = await _entered(request, ReconstructQuery)
    manifest = served.require_manifest()
    if not latent.has_encoder(manifest):
        raise ParameterNotSupported(
            f"model {served.id!r} has no encoder; reconstruct works with the VAE models",
            parameter="model",
            models=_ready_ids(ctx, lambda m: latent.has_encoder(m.manifest)),
        )
    scale, fmt = scale_and_format(query, ctx.settings.max_scale)
    check_output_size(manifest, 1, scale)
    klass = resolve_class(served, query.digit, query.class_)
    content_type = request.headers.get("content-type", "")
    latent.check_upload_type(content_type)
    await ctx.plane.enter(call, body=True)  # full: 503 before reading the body
    s = ctx.settings
    body = await read_body(request, s.max_body_bytes, s.body_timeout)
    candidates = candidate_classes(served, klass)
    return await _reconstruct(request, ctx, call, served, body, candidates, klass, scale, fmt)


async def _reconstruct(
    request: Request,
    ctx: Context,
    call: Call,
    served: ServedModel,
    body: bytes,
    candidates: list[int],
    klass: int | None,
    scale: int,
    fmt: str,
) -> Response:
    """POST /v1/reconstruct past its checks: decode the upload, encode, decode each candidate
    class through the batcher, keep the closest."""
    manifest = served.require_manifest()
    content_type = request.headers.get("content-type", "")
    plane = ctx.plane
    limit = ctx.settings.upload_decode_timeout
    original = await decode_upload_within(plane, content_type, body, manifest.image, limit)
    encoder = await plane.off_loop(_load_encoder, ctx.encoders, served)
    labels = np.asarray(candidates, dtype=np.int64)
    images_in = np.repeat(original, len(candidates), axis=0)
    mu = await plane.off_loop(encoder.encode, images_in, labels)
    feeds: dict[str, np.ndarray] = {"z": mu.astype(np.float32)}
    if "label" in manifest.inputs:
        feeds["label"] = labels
    # Both images (the input and its reconstruction) come back with format=json.
    size = response_bytes(served, 1 if fmt == "png" else 2, scale, fmt) + 32 * manifest.latent_dim
    images, ticket = await plane.execute(call, served, TensorRequest(feeds), size)
    try:
        return await _closest(ctx, served, original, images, mu, candidates, klass, scale, fmt, ticket)
    except BaseException:
        ticket.release()
        raise


async def _closest(
    ctx: Context,
    served: ServedModel,
    original: np.ndarray,
    images: np.ndarray,
    mu: np.ndarray,
    candidates: list[int],
    klass: int | None,
    scale: int,
    fmt: str,
    ticket: Ticket,
) -> Response:
    """The response: the candidate whose image is closest to the upload."""
    manifest = served.require_manifest()
    errors = latent.reconstruction_error(original, images)
    best = int(np.argmin(errors))
    headers = model_headers(served) | {"Cache-Control": "no-store"}
    if manifest.conditional:
        headers["X-Class"] = str(candidates[best])
    [png] = await ctx.plane.off_loop(latent.png_list, images[best : best + 1], scale)
    if fmt == "png":
        return MeteredResponse(png, ticket, media_type="image/png", headers=headers)
    [seen] = await ctx.plane.off_loop(latent.png_list, original, scale)
    payload = {
        "model": served.id,
        "version": manifest.version,
        "label": candidates[best] if manifest.conditional else None,
        "class_name": manifest.class_names[candidates[best]] if manifest.conditional else None,
        "class_given": klass is not None,
        "latent": [float(v) for v in mu[best]],
        "mse": float(errors[best]),
        "scale": scale,
        "input_png_base64": b64(seen),
        "png_base64": b64(png),
    }
    return metered_json(payload, ticket, headers)


def _load_encoder(encoders: latent.Encoders, served: ServedModel) -> latent.Encoder:
    assert served.manifest is not None
    try:
        return encoders.get(served.serial, served.manifest)
    except ModelLoadError as exc:
        raise ModelUnavailable(
            f"the encoder of {served.id!r} cannot be loaded: {exc}", model=served.id
        ) from None


# -- shared -----------------------------------------------------------------------------------


async def _entered(request: Request, model: type[T]) -> tuple[Context, Call, T, ServedModel]:
    """The route's context and call (past the early-retry hold), its query and its model."""
    ctx, call = context(request), http_call(request)
    await ctx.plane.enter(call)
    query = _read(ctx, model, request)
    return ctx, call, query, ctx.plane.resolve(call, query.model, query.dataset)


def _read(ctx: Context, model: type[T], request: Request) -> T:
    try:
        return read_query_as(model, request.query_params.multi_items())
    except InvalidParameter as exc:
        if exc.details.get("parameter") == "model":
            exc.details["models"] = ctx.registry.ids()
        raise


def _ready_ids(ctx: Context, keep: Callable[[ServedModel], bool]) -> list[str]:
    return [
        i for i, m in sorted(ctx.registry.models.items()) if m.state == "ready" and m.manifest and keep(m)
    ]
