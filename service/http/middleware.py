"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a stream per request).

Per request: a request id (the client's `X-Request-Id` when sane, else a new one) returned in
`X-Request-Id`; request count + latency metrics labelled by route template and resolved model;
one access-log line. Two guards sit here because they must hold for every route: a query string
over the limit is refused before anything parses it, and a crash below becomes our JSON 500
with the request id (one log line with the traceback, not uvicorn's second copy).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
from typing import Any

from service.errors import QueryTooLong, ServiceError
from service.metrics import Metrics

log = logging.getLogger("imagegen.access")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_ROUTES = frozenset(
    [
        "/",
        "/generate",
        "/sample",
        "/v1/images",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/favicon.ico",
    ]
)


def route_label(path: str) -> str:
    """A bounded label set: known paths as they are, model pages as a template, the rest 'other'."""
    if path in _ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    if path.startswith("/static/"):
        return "/static"
    return "other"


class RequestContext:
    def __init__(self, app: Any, metrics: Metrics, access_log: bool, max_query_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
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
            elapsed = time.perf_counter() - started
            route = route_label(scope["path"])
            model = state.get("model", "")
            self.metrics.observe_request(route, model, status, elapsed)
            if self.access_log:
                log.info(
                    "%s %s %d %.1fms model=%s id=%s",
                    scope["method"],
                    _clip_path(scope["path"]),
                    status,
                    elapsed * 1000,
                    model or "-",
                    state["request_id"],
                    extra={
                        "request_id": state["request_id"],
                        "method": scope["method"],
                        "path": _clip_path(scope["path"]),
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "model": model,
                    },
                )


def _clip_path(path: str) -> str:
    return path if len(path) <= 200 else path[:200] + "..."


async def _send_error(send: Any, exc: ServiceError) -> None:
    """Our JSON error, sent at the ASGI level (below FastAPI's handlers)."""
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
