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

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match

from service.auth import authorized
from service.errors import ServiceError
from service.oip import rest
from service.oip.core import InferenceService
from service.oip.errors import HTTP_STATUS, Kind, ProtocolError, from_service_error

log = logging.getLogger("imagegen.oip")

# Bodies and outputs past these sizes are parsed / encoded in a worker thread, off the event loop.
_OFF_LOOP_BODY_BYTES = 256 * 1024
_OFF_LOOP_OUTPUT_VALUES = 64 * 1024


def protocol_error_response(exc: ProtocolError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.kind == "unauthenticated" else None
    return Response(
        rest.error_body(exc.message),
        status_code=HTTP_STATUS[exc.kind],
        media_type="application/json",
        headers=headers,
    )


class ProtocolRoute(APIRoute):
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
_open = APIRouter(route_class=ProtocolRoute, tags=["open inference protocol"])
_keyed = APIRouter(
    route_class=ProtocolRoute, tags=["open inference protocol"], dependencies=[Depends(_require_key)]
)
_fallback = APIRouter(route_class=ProtocolRoute, include_in_schema=False)


@_open.get("/v2/health/live", summary="Server liveness")
async def server_live(request: Request) -> Response:
    _service(request).server_live()
    return Response(status_code=200)


@_open.get("/v2/health/ready", summary="Server readiness: models loaded and warmed")
async def server_ready(request: Request) -> Response:
    if not _service(request).server_ready():
        raise ProtocolError(
            "unavailable", "the server is not ready: models are loading or none could be loaded"
        )
    return Response(status_code=200)


@_keyed.get("/v2", summary="Server metadata: name, version, protocol extensions")
async def server_metadata(request: Request) -> JSONResponse:
    return JSONResponse(_service(request).server_metadata())


@_keyed.get("/v2/models/{name}", summary="Model metadata: versions, platform, inputs, outputs")
@_keyed.get("/v2/models/{name}/versions/{version}", summary="Model metadata of one version")
async def model_metadata(request: Request, name: str, version: str = "") -> JSONResponse:
    body = _service(request).model_metadata(name, version)
    _label(request, name)
    return JSONResponse(body)


@_keyed.get("/v2/models/{name}/ready", summary="Model readiness")
@_keyed.get("/v2/models/{name}/versions/{version}/ready", summary="Model readiness of one version")
async def model_ready(request: Request, name: str, version: str = "") -> Response:
    ready = _service(request).model_ready(name, version)
    _label(request, name)
    if not ready:
        raise ProtocolError("unavailable", f"model {name!r} is not ready")
    return Response(status_code=200)


@_keyed.get("/v2/models/{name}/config", summary="Triton's model configuration, as JSON")
@_keyed.get("/v2/models/{name}/versions/{version}/config", summary="Model configuration of one version")
async def model_config(request: Request, name: str, version: str = "") -> JSONResponse:
    body = _service(request).model_config(name, version)
    _label(request, name)
    return JSONResponse(body)


@_keyed.post("/v2/models/{name}/infer", summary="Inference: JSON tensors or the binary tensor data extension")
@_keyed.post("/v2/models/{name}/versions/{version}/infer", summary="Inference on one version")
async def infer(request: Request, name: str, version: str = "") -> Response:
    service = _service(request)
    served = service.ready(name, version)
    _label(request, served.id)
    max_elements = service.max_elements(served)
    limit = rest.max_body_bytes(max_elements)
    body = rest.decompress(await _read_body(request, limit), request.headers.get("content-encoding"), limit)
    header_length = request.headers.get(rest.HEADER_LENGTH)
    parse = (rest.parse_infer_request, name, version, body, header_length, max_elements)
    infer_request, binary_output = await _maybe_off_loop(len(body) > _OFF_LOOP_BODY_BYTES, *parse)
    response = await service.infer(served, infer_request)
    values = sum(t.data.size for t in response.outputs)
    encode = (rest.encode_infer_response, response, infer_request.outputs, binary_output)
    content, json_length = await _maybe_off_loop(values > _OFF_LOOP_OUTPUT_VALUES, *encode)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={rest.HEADER_LENGTH: str(json_length)},
    )


def _label(request: Request, model_id: str) -> None:
    """The model label of the request's metrics; set only once the id is known to be a model's
    (a client-chosen name would make the label set unbounded)."""
    request.scope["state"]["model"] = model_id


async def _maybe_off_loop(off_loop: bool, fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args) if off_loop else fn(*args)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes while streaming (a wrong Content-Length changes nothing)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(
            "invalid", f"the body is over {limit} bytes, the most a request to this model needs"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(
                "invalid", f"the body is over {limit} bytes, the most a request to this model needs"
            )
        chunks.append(chunk)
    return b"".join(chunks)


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
