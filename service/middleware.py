"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a stream per request).

Per request: a request id (the client's `X-Request-Id` when sane, else a new one) returned in
`X-Request-Id`; request count + latency metrics labelled by route template and resolved model;
one access-log line.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from typing import Any

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
    def __init__(self, app: Any, metrics: Metrics, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
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

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_label(scope["path"])
            model = state.get("model", "")
            self.metrics.observe_request(route, model, status, elapsed)
            if self.access_log:
                log.info(
                    "%s %s %d %.1fms model=%s id=%s",
                    scope["method"],
                    scope["path"],
                    status,
                    elapsed * 1000,
                    model or "-",
                    state["request_id"],
                    extra={
                        "request_id": state["request_id"],
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "model": model,
                    },
                )
