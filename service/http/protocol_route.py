"""The route class of every /v2 route: whatever a route or its guard raises (the protocol, the
registry, the data plane, the key check, an unknown /v2 route) is rendered in the protocol's
shape, `{"error": "message"}` with its status, not our API's error object: Triton's and KServe's
clients read that field as a string."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from service.errors import ServiceError
from service.http.routing import ServiceRoute
from service.oip import rest
from service.oip.errors import HTTP_STATUS, Kind, ProtocolError, from_service_error

log = logging.getLogger("imagegen.oip")


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
