"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a stream per request).

Per request: a request id (the client's `X-Request-Id` when sane, else a new one) returned in
`X-Request-Id`; at the end, the data plane's `record` (as for gRPC calls): request count and
latency labelled by the matched route's template and the resolved model, and one access-log line.
Two guards sit here because they must hold for every route: a query string over the limit is
refused before anything parses it, and a crash below becomes our JSON 500 with the request id
(one log line with the traceback, not uvicorn's second copy).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
from typing import Any

from service.dataplane.plane import Call, DataPlane
from service.errors import QueryTooLong, ServiceError
from service.http.delivery import CALL, route_template

log = logging.getLogger("imagegen.access")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContext:
    def __init__(self, app: Any, plane: DataPlane, max_query_bytes: int) -> None:
        self.app = app
        self.plane = plane
        self.max_query_bytes = max_query_bytes
        # Request ids: a random per-process prefix + a counter (uuid4 costs a getrandom call each).
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count(1)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _SANE_ID.match(value):
                    request_id = value
                break
        if request_id is None:
            request_id = f"{self._id_prefix}{next(self._ids):016x}".encode()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id.decode()
        status = 500
        started_response = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            if len(scope["query_string"]) > self.max_query_bytes:
                # Refused unparsed: 25,000 repeated parameters once stalled every request (issue 16, row 1).
                limit = self.max_query_bytes
                await _send_error(send_with_id, QueryTooLong(f"query string over {limit} bytes", limit=limit))
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:
            path = _clip_path(scope["path"])
            log.error("unhandled error on %s id=%s", path, state["request_id"], exc_info=exc)
            if not started_response:
                await _send_error(send_with_id, ServiceError("internal error; see the server log"))
        finally:
            call = state.get(CALL)
            if call is None:  # a route outside the data plane (probes, metadata) or none
                call = Call(route_template(scope), model=state.get("model", ""))
            call.request_id = state["request_id"]
            elapsed = time.perf_counter() - started
            self.plane.record(call, status, elapsed, scope["method"], _clip_path(scope["path"]))


def _clip_path(path: str) -> str:
    return path if len(path) <= 200 else path[:200] + "..."


async def _send_error(send: Any, exc: ServiceError) -> None:
    """Our JSON error, sent at the ASGI level (below FastAPI's handlers)."""
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
