"""The Open Inference Protocol (KServe v2) over HTTP: /v2 health, metadata, config and infer.

The handlers are service.oip.core's and the data plane's (gRPC shares them); this router reads
and writes HTTP. Every error on a /v2 path is rendered in the protocol's shape by its route class
(service/http/protocol_route.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import Match

from service.errors import PayloadTooLarge
from service.http.auth import authorized
from service.http.body import read_body
from service.http.context import context
from service.http.delivery import MeteredResponse, http_call
from service.http.oip_openapi import INFER_OPENAPI, INFER_RESPONSES, MODEL_ERRORS
from service.http.protocol_route import ProtocolRoute
from service.http.routers.common import protocol_error_responses
from service.http.routing import guarded_route
from service.oip import rest
from service.oip.core import InferenceService
from service.oip.errors import ProtocolError

# Bodies and outputs past these sizes are parsed / encoded in a worker thread, off the event loop.
_OFF_LOOP_BODY_BYTES = 256 * 1024
_OFF_LOOP_OUTPUT_VALUES = 64 * 1024


def _service(request: Request) -> InferenceService:
    return context(request).oip


async def _require_key(request: Request) -> None:
    if not authorized(request):
        raise ProtocolError(
            "unauthenticated",
            "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        )


# Probes reach the health routes without the key (as /healthz and /readyz); the rest need it.
_open = APIRouter(
    route_class=ProtocolRoute, tags=["open inference protocol"], responses=protocol_error_responses(500)
)
_keyed = APIRouter(
    route_class=guarded_route(_require_key, ProtocolRoute),
    tags=["open inference protocol"],
    responses=protocol_error_responses(401, 500),
)
_fallback = APIRouter(route_class=ProtocolRoute, include_in_schema=False)


def _status_only(ok: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    """Probes and readiness checks answer with a status and no body, as the protocol's (and
    Triton's); with `response_class=Response` the OpenAPI declares no content for them either."""
    return {200: {"description": ok}, **protocol_error_responses(*errors)}


@_open.get(
    "/v2/health/live",
    summary="Server liveness",
    responses=_status_only("Live (no body)."),
    response_class=Response,
)
async def server_live(request: Request) -> Response:
    _service(request).server_live()
    return Response(status_code=200)


@_open.get(
    "/v2/health/ready",
    summary="Server readiness: models loaded and warmed",
    responses=_status_only("Ready (no body).", 503),
    response_class=Response,
)
async def server_ready(request: Request) -> Response:
    if not _service(request).server_ready():
        raise ProtocolError(
            "unavailable", "the server is not ready: models are loading or none could be loaded"
        )
    return Response(status_code=200)


@_keyed.get("/v2", summary="Server metadata: name, version, protocol extensions")
async def server_metadata(request: Request) -> JSONResponse:
    return JSONResponse(_service(request).server_metadata())


_MODEL_RESPONSES = protocol_error_responses(*MODEL_ERRORS)
_READY_RESPONSES = _status_only("Ready (no body).", *MODEL_ERRORS)
ModelHandler = Callable[[Request, str, str], Awaitable[Response]]


def _per_model(
    tail: str, summary: str, version_summary: str, method: str = "GET", **options: Any
) -> Callable[[ModelHandler], ModelHandler]:
    """Registers `handler(request, name, version)` on both of the protocol's paths of a model
    route: `/v2/models/{name}<tail>` (version "", the served one) and
    `/v2/models/{name}/versions/{version}<tail>`. The one without takes no version (a `version`
    query parameter is not the protocol's)."""

    def register(handler: ModelHandler) -> ModelHandler:
        async def served_version(request: Request, name: str) -> Response:
            return await handler(request, name, "")

        async def one_version(request: Request, name: str, version: str) -> Response:
            return await handler(request, name, version)

        base = handler.__name__.lstrip("_")
        for path, endpoint, text, op in (
            (f"/v2/models/{{name}}{tail}", served_version, summary, base),
            (
                f"/v2/models/{{name}}/versions/{{version}}{tail}",
                one_version,
                version_summary,
                f"version_{base}",
            ),
        ):
            endpoint.__name__ = op
            _keyed.add_api_route(path, endpoint, methods=[method], summary=text, **options)
        return handler

    return register


@_per_model("", "Model metadata: versions, platform, inputs, outputs", "Model metadata of one version",
            responses=_MODEL_RESPONSES, response_class=JSONResponse)  # fmt: skip
async def _model_metadata(request: Request, name: str, version: str) -> Response:
    return _labelled_json(request, name, _service(request).model_metadata(name, version))


def _labelled_json(request: Request, name: str, body: Any) -> Response:
    _label(request, name)
    return JSONResponse(body)


@_per_model("/ready", "Model readiness", "Model readiness of one version",
            responses=_READY_RESPONSES, response_class=Response)  # fmt: skip
async def _model_ready(request: Request, name: str, version: str) -> Response:
    ready = _service(request).model_ready(name, version)
    _label(request, name)
    if not ready:
        raise ProtocolError("unavailable", f"model {name!r} is not ready")
    return Response(status_code=200)


@_per_model("/config", "Triton's model configuration, as JSON", "Model configuration of one version",
            responses=_MODEL_RESPONSES, response_class=JSONResponse)  # fmt: skip
async def _model_config(request: Request, name: str, version: str) -> Response:
    return _labelled_json(request, name, _service(request).model_config(name, version))


@_per_model("/infer", "Inference: JSON tensors or the binary tensor data extension",
            "Inference on one version", "POST", openapi_extra=INFER_OPENAPI,
            responses=INFER_RESPONSES)  # fmt: skip
async def _infer(request: Request, name: str, version: str) -> Response:
    """Through the data plane, as our own image routes: an overloaded model or server answers 503
    with Retry-After before any work; the body is read within its size and time bounds; the
    response's bytes count against IMAGEGEN_MAX_RESPONSE_BYTES until sent; a client that leaves
    before its run has its job skipped."""
    call = http_call(request)
    service = _service(request)
    served = service.ready(call, name, version)
    await service.plane.enter(call, body=True)
    max_elements = service.max_elements(served)
    limit = rest.max_body_bytes(max_elements)
    body = await _read_body(request, limit, service.settings.body_timeout)
    body = rest.decompress(body, request.headers.get("content-encoding"), limit)
    header_length = request.headers.get(rest.HEADER_LENGTH)
    parse = (rest.parse_infer_request, name, version, body, header_length, max_elements)
    infer_request, binary_output = await _maybe_off_loop(len(body) > _OFF_LOOP_BODY_BYTES, *parse)
    per_value = rest.bytes_per_value(infer_request.outputs, binary_output)
    response, ticket = await service.infer(call, served, infer_request, bytes_per_value=per_value)
    try:
        values = sum(t.data.size for t in response.outputs)
        encode = (rest.encode_infer_response, response, infer_request.outputs, binary_output)
        content, json_length = await _maybe_off_loop(values > _OFF_LOOP_OUTPUT_VALUES, *encode)
        if json_length is None:
            return MeteredResponse(content, ticket, media_type="application/json")
        headers = {rest.HEADER_LENGTH: str(json_length)}
        return MeteredResponse(content, ticket, media_type="application/octet-stream", headers=headers)
    except BaseException:
        ticket.release()
        raise


def _label(request: Request, model_id: str) -> None:
    """The model label of the request's metrics; set only once the id is known to be a model's
    (a client-chosen name would make the label set unbounded)."""
    request.scope["state"]["model"] = model_id


async def _maybe_off_loop(off_loop: bool, fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args) if off_loop else fn(*args)


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused past `limit` bytes while streaming (a wrong Content-Length changes
    nothing) and past `timeout_s` seconds (408, connection closed), as service/http/body.py reads ours."""
    try:
        return await read_body(request, limit, timeout_s)
    except PayloadTooLarge:
        raise ProtocolError(
            "too_large", f"the body is over {limit} bytes, the most a request to this model needs"
        ) from None


_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@_fallback.api_route("/v2/{rest_of_path:path}", methods=_METHODS)
async def no_such_route(request: Request, rest_of_path: str) -> Response:
    """Any other /v2 path: 405 when the path exists with another method, else 404; protocol shape."""
    allowed = sorted(
        method
        for route in (*_open.routes, *_keyed.routes)
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] == Match.PARTIAL
        for method in route.methods or ()  # typed Optional; an APIRoute always has its methods
    )
    if allowed:
        return Response(
            rest.error_body(f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"),
            status_code=405,
            media_type="application/json",
            headers={"Allow": ", ".join(allowed)},
        )
    raise ProtocolError("not_found", f"no route {request.method} {request.url.path[:200]}")


router = APIRouter()
router.include_router(_open)
router.include_router(_keyed)
router.include_router(_fallback)
