"""The API key: one check, set on a router as its route class so a route cannot forget it.

With `IMAGEGEN_API_KEY` set, a request must carry `Authorization: Bearer <key>` or
`X-API-Key: <key>`. Only the health router goes without (liveness and a bare readiness status,
which probes must reach); /metrics goes without when `IMAGEGEN_PUBLIC_METRICS=1`.

A router gets its check as `APIRouter(route_class=guarded_route(require_key))`
(service/http/routing.py): every route added to it awaits the guard before its handler. The guards
read the headers themselves rather than through FastAPI's HTTPBearer and APIKeyHeader; the OpenAPI
declares the schemes instead (`SECURITY_SCHEMES`, added by the docs router to every operation
that may answer 401).
"""

from __future__ import annotations

from fastapi import Request

from service.dataplane.keys import key_matches
from service.errors import Unauthorized
from service.http.delivery import CLIENT

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <IMAGEGEN_API_KEY>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def given_key(request: Request) -> str | None:
    """The key a request carries, from X-API-Key or a Bearer Authorization header."""
    key = request.headers.get("x-api-key")
    if key is not None:
        return key
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth[:7].lower() == "bearer " else None


def authorized(request: Request) -> bool:
    return key_matches(request.app.state.ctx.settings, given_key(request))


def admit_key_check(request: Request) -> str | None:
    """The client (service/http/client_identity.py) about to have its key checked; a client past
    its failed checks gets 429 with Retry-After before its key is compared."""
    client: str | None = request.scope["state"].get(CLIENT)
    request.app.state.ctx.plane.key_failures.admit(client)
    return client


def key_failed(request: Request, client: str | None) -> None:
    request.app.state.ctx.plane.key_failures.failed(client)


async def require_key(request: Request) -> None:
    """Router dependency: 401 unless the request carries the key (when one is set)."""
    if request.app.state.ctx.settings.api_key is None:
        return
    client = admit_key_check(request)
    if not authorized(request):
        if given_key(request) is not None:  # a wrong key is a guess; a missing one is not
            key_failed(request, client)
        raise Unauthorized(
            "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_key_unless_public_metrics(request: Request) -> None:
    if not request.app.state.ctx.settings.public_metrics:
        await require_key(request)
