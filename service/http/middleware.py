"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a stream per request).

Per request: a request id (the client's `X-Request-Id` when sane, else a new one) returned in
`X-Request-Id`; at the end, the data plane's `record` (as for gRPC calls): request count and
latency labelled by the matched route's template and the resolved model, and one access-log line.
Guards sit here because they must hold for every route: a query string over the limit is
refused before anything parses it, and a crash below becomes our JSON 500 with the request id
(one log line with the traceback, not uvicorn's second copy). And three rules of HTTP itself:

- **HEAD wherever GET is** (RFC 9110): a HEAD request runs as its GET, and its body is dropped
  with the headers (Content-Length and ETag included) kept.
- **Range is ignored**: every response here is small and whole; a malformed `Range` once gave a
  400 in text/plain, outside the error shape. The full 200 is always a valid answer.
- **Redirects are relative**: the trailing-slash redirect built its Location from the client's
  `Host` header (`Host: evil.example` -> `Location: http://evil.example/metrics`).
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
from service.http.client_identity import TrustedProxies
from service.http.delivery import CALL, CLIENT, route_template

log = logging.getLogger("imagegen.access")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_IGNORED_HEADERS = (b"range", b"if-range")
_REDIRECTS = (301, 302, 303, 307, 308)


class RequestContext:
    def __init__(self, app: Any, plane: DataPlane, max_query_bytes: int, proxies: TrustedProxies) -> None:
        self.app = app
        self.plane = plane
        self.max_query_bytes = max_query_bytes
        self.proxies = proxies
        # Request ids: a random per-process prefix + a counter (uuid4 costs a getrandom call each).
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count(1)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        head = scope["method"] == "HEAD"
        if head:  # a copy: the server's own scope still says HEAD, so it sends no body
            scope = {**scope, "method": "GET"}
        if any(name in _IGNORED_HEADERS for name, _ in scope["headers"]):
            scope = {**scope, "headers": [(n, v) for n, v in scope["headers"] if n not in _IGNORED_HEADERS]}
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
        state[CLIENT] = self.proxies.client_of(scope)
        status = 500
        started_response = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                headers = message.get("headers", ())
                if status in _REDIRECTS:
                    headers = [(n, _relative(v) if n.lower() == b"location" else v) for n, v in headers]
                message["headers"] = [*headers, (b"x-request-id", request_id)]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
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
            method = "HEAD" if head else scope["method"]
            self.plane.record(call, status, elapsed, method, _clip_path(scope["path"]))


def _relative(location: bytes) -> bytes:
    """`http://host/path?q` -> `/path?q`: a redirect never names a host the client chose."""
    scheme, sep, rest = location.partition(b"://")
    if not sep or b"/" in scheme:
        return location
    _, slash, path = rest.partition(b"/")
    return slash + path if slash else b"/"


def _clip_path(path: str) -> str:
    return path if len(path) <= 200 else path[:200] + "..."


async def _send_error(send: Any, exc: ServiceError) -> None:
    """Our JSON error, sent at the ASGI level (below FastAPI's handlers)."""
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
