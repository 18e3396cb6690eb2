"""Triton's model repository API under /v2/repository, behind the admin key: the index, and
loading or unloading one model while the server serves.

- `POST /v2/repository/index` (body empty, or `{"ready": true}` for ready models only):
  `[{"name", "version", "state", "reason"}]`, state READY, LOADING or UNAVAILABLE.
- `POST /v2/repository/models/{id}/load`: (re)load the model's folder; the new version is verified
  and warmed off the event loop, then swapped in; requests already admitted finish on the old one.
- `POST /v2/repository/models/{id}/unload`: in-flight requests finish first; then the model
  answers 503 until it is loaded again.

The swap and drain are the registry's (service/store/registry.py); this router reads and writes HTTP.
Under `--workers N` a load or unload reaches every worker before it answers (service/peers.py).
Access: `Authorization: Bearer <IMAGEGEN_ADMIN_KEY>`; without an admin key configured the routes
are disabled (403). A request with no valid credential at all gets 401 first, so a client that
is not even an API client learns nothing about the repository. Errors take the protocol's
`{"error": "message"}` shape, as everywhere under /v2.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.errors import ModelLoadError, ServiceError
from service.http.auth import admit_key_check, authorized, key_failed
from service.http.context import context
from service.http.protocol_route import ProtocolRoute
from service.http.routers.common import protocol_error_responses
from service.http.routing import guarded_route
from service.oip.errors import ProtocolError, from_service_error
from service.peers import PEER_HEADER, Peers, failure_message
from service.store.served import IndexEntry

MAX_BODY_BYTES = 64 * 1024  # the bodies hold a few flags; Triton's file overrides are refused
TRITON_STATE = {
    "ready": "READY",
    "loading": "LOADING",
    "failed": "UNAVAILABLE",
    "unloaded": "UNAVAILABLE",
    "not_loaded": "UNAVAILABLE",
}


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth[:7].lower() == "bearer " else None


async def require_admin_key(request: Request) -> None:
    """Router dependency: the admin key as the Bearer token (compared in constant time); 401
    without a valid credential, 403 when no admin key is configured."""
    settings = request.app.state.ctx.settings
    admin_key = settings.admin_key
    if admin_key is not None:
        try:
            client = admit_key_check(request)
        except ServiceError as exc:
            raise from_service_error(exc) from None
        given = _bearer(request)
        if given is None or not hmac.compare_digest(given.encode(), admin_key.get_secret_value().encode()):
            if given is not None:  # a wrong key is a guess; a missing one is not
                key_failed(request, client)
            raise ProtocolError(
                "unauthenticated", "missing or wrong admin key: send 'Authorization: Bearer <admin key>'"
            )
        return
    if not authorized(request):  # the API key, when one is set: who is asking comes first
        raise ProtocolError(
            "unauthenticated",
            "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        )
    raise ProtocolError(
        "forbidden",
        "the model repository API is disabled: start the server with IMAGEGEN_ADMIN_KEY set to enable it",
    )


router = APIRouter(
    route_class=guarded_route(require_admin_key, ProtocolRoute),
    tags=["model repository"],
    responses=protocol_error_responses(400, 401, 403, 500),
)


@router.post("/v2/repository/index", summary="Models in the repository with their state and version")
async def repository_index(request: Request) -> JSONResponse:
    ctx = context(request)
    body = await _read_object(request, allowed={"ready"})
    ready_only = body.get("ready", False)
    if not isinstance(ready_only, bool):
        raise ProtocolError("invalid", "'ready' must be true or false")
    entries = await ctx.registry.index()
    return JSONResponse([_triton(e) for e in entries if not ready_only or e.state == "ready"])


Handler = Callable[[Request, str], Awaitable[JSONResponse]]


def _model_control(action: str, summary: str) -> Callable[[Handler], Handler]:
    """POST /v2/repository/models/{name}/<action>, answering the protocol's errors."""
    return router.post(
        f"/v2/repository/models/{{name}}/{action}", summary=summary, responses=protocol_error_responses(404)
    )


@_model_control("load", "Load or reload a model from its folder")
async def load_model(request: Request, name: str) -> JSONResponse:
    ctx = context(request)
    parameters = await _parameters(request, allowed=set())
    if "config" in parameters or any(key.startswith("file:") for key in parameters):
        raise ProtocolError(
            "invalid",
            "config and file overrides are not supported: this server loads a model only from its "
            "folder in the repository (write the new version there, then load)",
        )

    async def load() -> None:
        try:
            await ctx.lifecycle.load_model(name)
        except ModelLoadError as exc:
            raise ProtocolError("invalid", f"failed to load model {name!r}: {exc}") from None

    await _in_every_worker(request, load, parameters)
    return _model_state(request, name)


@_model_control("unload", "Unload a model once its requests finish")
async def unload_model(request: Request, name: str) -> JSONResponse:
    ctx = context(request)
    parameters = await _parameters(request, allowed={"unload_dependents"})  # no ensembles: none depend
    await _in_every_worker(request, lambda: ctx.lifecycle.unload_model(name), parameters)
    return _model_state(request, name)


async def _in_every_worker(
    request: Request, apply: Callable[[], Awaitable[object]], parameters: dict[str, Any]
) -> None:
    """`apply` here and, under --workers N > 1, the same request in every other worker at once
    (service/peers.py); returns once all of them have, so every worker then agrees."""
    peers: Peers | None = getattr(request.app.state, "peers", None)
    if peers is None or peers.is_peer_call(request.headers.get(PEER_HEADER)):
        await apply()
        return
    body = json.dumps({"parameters": parameters}).encode()
    here, answers = await asyncio.gather(
        apply(), peers.broadcast(request.url.path, request.headers.get("authorization", ""), body),
        return_exceptions=True,
    )  # fmt: skip
    if isinstance(here, BaseException):
        raise here  # the same folder fails the same way in every worker: this one's error says it
    if isinstance(answers, BaseException):
        raise answers
    problem = failure_message(answers)
    if problem is not None:
        raise ProtocolError("internal", f"done in this worker but not in every one: {problem}")


def _model_state(request: Request, name: str) -> JSONResponse:
    """The answer of load and unload: the model's line of the index, as it is now."""
    request.scope["state"]["model"] = name
    served = context(request).registry.known(name)
    version = served.manifest.version if served.manifest else None
    return JSONResponse(_triton(IndexEntry(name, version, served.state, served.reason)))


def _triton(entry: IndexEntry) -> dict[str, str]:
    """One model in the shape of Triton's repository index."""
    return {
        "name": entry.id,
        "version": "" if entry.version is None else str(entry.version),
        "state": TRITON_STATE.get(entry.state, "UNAVAILABLE"),
        "reason": entry.reason or "",
    }


async def _parameters(request: Request, allowed: set[str]) -> dict[str, Any]:
    """The body's `parameters` object (Triton's load and unload requests), names checked."""
    parameters = (await _read_object(request, allowed={"parameters"})).get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError("invalid", "'parameters' must be a JSON object")
    overrides = {k for k in parameters if k == "config" or k.startswith("file:")}  # refused by load
    unknown = sorted(k for k in parameters if k not in allowed and k not in overrides)
    if unknown:
        raise ProtocolError("invalid", f"unknown parameter(s) {unknown[:5]}; allowed: {sorted(allowed)}")
    return parameters


async def _read_object(request: Request, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` keys; an empty body is `{}`."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProtocolError("invalid", f"the body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks).strip()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("invalid", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ProtocolError("invalid", "the body must be a JSON object")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise ProtocolError("invalid", f"unknown field(s) {unknown[:5]}; allowed: {sorted(allowed)}")
    return body
