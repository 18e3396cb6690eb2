"""The Open Inference Protocol (KServe v2) over HTTP: /v2 health, metadata, config and infer.

The handlers are service.oip.core's (gRPC shares them); this router reads and writes HTTP. Every
error on a /v2 path, whatever raised it (the protocol, the registry, the key check, an unknown
/v2 route), is the protocol's `{"error": "message"}` with its status, not our API's error object:
Triton's and KServe's clients read that field as a string.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match

from imagegen.contract.sampling import MAX_SEED
from service.errors import PayloadTooLarge, ServiceError
from service.http.auth import authorized
from service.http.body import read_body
from service.http.delivery import MeteredResponse
from service.http.routers.common import protocol_error_responses
from service.http.routing import ServiceRoute, guarded_route
from service.oip import rest
from service.oip.core import InferenceService
from service.oip.errors import HTTP_STATUS, Kind, ProtocolError, from_service_error

log = logging.getLogger("imagegen.oip")

# Bodies and outputs past these sizes are parsed / encoded in a worker thread, off the event loop.
_OFF_LOOP_BODY_BYTES = 256 * 1024
_OFF_LOOP_OUTPUT_VALUES = 64 * 1024


def protocol_error_response(exc: ProtocolError) -> Response:
    headers = dict(exc.headers)
    if exc.kind == "unauthenticated":
        headers["WWW-Authenticate"] = "Bearer"
    return Response(
        rest.error_body(exc.message),
        status_code=HTTP_STATUS[exc.kind],
        media_type="application/json",
        headers=headers,
    )


class ProtocolRoute(ServiceRoute):
    """Renders every error raised in a /v2 route or its dependencies in the protocol's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ProtocolError as exc:
                return protocol_error_response(exc)
            except ServiceError as exc:
                return protocol_error_response(from_service_error(exc))
            except HTTPException as exc:
                kind: Kind = "not_found" if exc.status_code == 404 else "invalid"
                return protocol_error_response(ProtocolError(kind, str(exc.detail)))
            except Exception as exc:
                log.error("unhandled error on %s", request.url.path, exc_info=exc)
                return protocol_error_response(
                    ProtocolError("internal", "internal error; see the server log")
                )

        return handle


def _service(request: Request) -> InferenceService:
    return service_of(request.app)


def service_of(app: Any) -> InferenceService:
    """One InferenceService per app (HTTP and gRPC share it), over the app's registry and settings."""
    state = app.state
    service = getattr(state, "oip", None)
    if service is None:
        service = state.oip = InferenceService(state.ctx.registry, state.ctx.settings)
    return service


@contextlib.asynccontextmanager
async def grpc_lifespan(app: Any) -> AsyncIterator[None]:
    """The gRPC server, when IMAGEGEN_GRPC_PORT is set, on the app's own event loop. Entered after
    the app's lifespan has started loading models, left before its batchers drain."""
    port = app.state.ctx.settings.grpc_port
    if port is None:
        yield
        return
    from service.oip import grpc_server  # grpcio: needed only with the port set

    server, _ = await grpc_server.start(service_of(app), app.state.ctx.settings, port)
    try:
        yield
    finally:
        await grpc_server.stop(server)


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


_MODEL_ERRORS = (404, 503)  # unknown model or version; a model that is loading, failed or unloaded
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "description": "FP32 for z and image, INT64 for label."},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "description": "Values, flat or nested (row-major)."},
        "parameters": {
            "type": "object",
            "description": "binary_data_size: the tensor's bytes follow the JSON (binary data extension).",
        },
    },
}
_INFER_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "description": "seeds (and labels): images as /sample's, instead of z; binary_data_output: "
            "outputs as binary data after the JSON.",
            "properties": {
                "seeds": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
                },
                "labels": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                "binary_data_output": {"type": "boolean"},
                "priority": {"type": "integer"},
                "timeout": {"type": "integer"},
            },
            "additionalProperties": False,  # refused: 400 naming the known ones
        },
        "inputs": {"type": "array", "maxItems": rest.MAX_TENSORS, "items": _TENSOR},
        "outputs": {
            "type": "array",
            "maxItems": rest.MAX_TENSORS,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}
_BINARY = {"type": "string", "format": "binary"}
_INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON; with the binary tensor data extension, the JSON header "
        "(Inference-Header-Content-Length bytes) followed by the tensors' bytes.",
        "content": {
            "application/json": {"schema": _INFER_BODY},
            "application/octet-stream": {"schema": _BINARY},
        },
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image tensor FP32 [N, C, H, W]: JSON, or JSON header and binary data "
        "(Inference-Header-Content-Length) when the request asks for binary output.",
        "content": {
            "application/json": {"schema": _INFER_RESPONSE},
            "application/octet-stream": {"schema": _BINARY},
        },
    },
    **protocol_error_responses(400, *_MODEL_ERRORS, 408, 413),
}


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


_MODEL_RESPONSES = protocol_error_responses(*_MODEL_ERRORS)


# Each route of a model comes twice, with and without `/versions/{version}`; the one without
# takes no version (a `version` query parameter is not the protocol's).


@_keyed.get(
    "/v2/models/{name}",
    summary="Model metadata: versions, platform, inputs, outputs",
    responses=_MODEL_RESPONSES,
)
async def model_metadata(request: Request, name: str) -> JSONResponse:
    return _model_metadata(request, name, "")


@_keyed.get(
    "/v2/models/{name}/versions/{version}",
    summary="Model metadata of one version",
    responses=_MODEL_RESPONSES,
)
async def version_metadata(request: Request, name: str, version: str) -> JSONResponse:
    return _model_metadata(request, name, version)


def _model_metadata(request: Request, name: str, version: str) -> JSONResponse:
    body = _service(request).model_metadata(name, version)
    _label(request, name)
    return JSONResponse(body)


_READY_RESPONSES = _status_only("Ready (no body).", *_MODEL_ERRORS)


@_keyed.get(
    "/v2/models/{name}/ready", summary="Model readiness", responses=_READY_RESPONSES, response_class=Response
)
async def model_ready(request: Request, name: str) -> Response:
    return _model_ready(request, name, "")


@_keyed.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Model readiness of one version",
    responses=_READY_RESPONSES,
    response_class=Response,
)
async def version_ready(request: Request, name: str, version: str) -> Response:
    return _model_ready(request, name, version)


def _model_ready(request: Request, name: str, version: str) -> Response:
    ready = _service(request).model_ready(name, version)
    _label(request, name)
    if not ready:
        raise ProtocolError("unavailable", f"model {name!r} is not ready")
    return Response(status_code=200)


@_keyed.get(
    "/v2/models/{name}/config", summary="Triton's model configuration, as JSON", responses=_MODEL_RESPONSES
)
async def model_config(request: Request, name: str) -> JSONResponse:
    return _model_config(request, name, "")


@_keyed.get(
    "/v2/models/{name}/versions/{version}/config",
    summary="Model configuration of one version",
    responses=_MODEL_RESPONSES,
)
async def version_config(request: Request, name: str, version: str) -> JSONResponse:
    return _model_config(request, name, version)


def _model_config(request: Request, name: str, version: str) -> JSONResponse:
    body = _service(request).model_config(name, version)
    _label(request, name)
    return JSONResponse(body)


@_keyed.post(
    "/v2/models/{name}/infer",
    summary="Inference: JSON tensors or the binary tensor data extension",
    openapi_extra=_INFER_OPENAPI,
    responses=_INFER_RESPONSES,
)
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, "")


@_keyed.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference on one version",
    openapi_extra=_INFER_OPENAPI,
    responses=_INFER_RESPONSES,
)
async def version_infer(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str) -> Response:
    """Admitted as our own image routes are (service/dataplane/admission.py): an overloaded model or server
    answers 503 with Retry-After before any work; the body is read within its size and time
    bounds; the response's bytes count against IMAGEGEN_MAX_RESPONSE_BYTES until sent."""
    service = _service(request)
    served = service.ready(name, version)
    _label(request, served.id)
    client = request.scope.get("client")
    await service.check_capacity(client)
    max_elements = service.max_elements(served)
    limit = rest.max_body_bytes(max_elements)
    body = await _read_body(request, limit, service.settings.body_timeout)
    body = rest.decompress(body, request.headers.get("content-encoding"), limit)
    header_length = request.headers.get(rest.HEADER_LENGTH)
    parse = (rest.parse_infer_request, name, version, body, header_length, max_elements)
    infer_request, binary_output = await _maybe_off_loop(len(body) > _OFF_LOOP_BODY_BYTES, *parse)
    per_value = rest.bytes_per_value(infer_request.outputs, binary_output)
    response, ticket = await service.infer(served, infer_request, client=client, bytes_per_value=per_value)
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


# The lifespan rides on the router, so wiring the protocol into the app is one include.
router = APIRouter(lifespan=grpc_lifespan)
router.include_router(_open)
router.include_router(_keyed)
router.include_router(_fallback)
