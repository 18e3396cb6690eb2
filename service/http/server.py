"""The HTTP server: uvicorn configured from Settings, plus the limits uvicorn itself lacks.

- **Header timeout.** uvicorn arms its keep-alive timer only after a first response, so a
  connection that never sends, or never finishes its headers, would stay open forever. Our
  protocol classes (subclasses of uvicorn's httptools and h11 protocols) arm a timer when the
  connection is made and after each response, and cancel it once a request's headers are in.
- **Connection cap.** Past `limit_concurrency` open connections (clamped below the process's
  file-descriptor limit) a new connection gets a short JSON 503 and is closed at once, so a
  flood of idle sockets cannot run the process out of descriptors (EMFILE) and a client that
  sent a request learns to retry.
- **Graceful stop with a bound.** SIGTERM: stop accepting, let in-flight requests finish, and after
  `graceful_timeout` seconds cancel what is left and drop the connections of clients that do not
  read, so the process exits (status 0) inside the orchestrator's grace period.
- **One write per response.** uvicorn writes a response's status line and headers, then its body,
  as two writes: two send calls and, for a small image, two TCP segments. The httptools protocol
  holds the headers until the body's first bytes (or the end of the event-loop iteration, for a
  response without a body) and writes both at once.
- **Disconnect probe.** Each request's scope carries `extensions["imagegen.client_gone"]`, a
  callable reading uvicorn's own disconnect flag for it, so the batcher can skip the job of a
  client that left without a task per request waiting on `receive()` (service/http/delivery.py).
- No `server` header; no WebSocket support (nothing here speaks it).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import resource
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.http.delivery import CLIENT_GONE
from service.http.writes import HeadersWithBody
from service.logs import RateLimitedLog
from service.settings import Settings

log = logging.getLogger("imagegen.server")

# Descriptors kept for everything that is not a client connection: listening socket, log stream,
# model files while they load, the event loop's own pipes, worker threads.
FD_RESERVE = 64

_REFUSAL_BODY = json.dumps(
    {
        "error": {
            "code": "too_many_connections",
            "message": "the server is at its connection limit; retry shortly",
        }
    }
).encode()
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)

# What the HTTP parser refuses (a request line or headers past its ~128 KB limit, bad syntax)
# gets our error shape instead of uvicorn's plain text; the parser's message is not echoed.
_UNPARSABLE_BODY = json.dumps(
    {
        "error": {
            "code": "bad_request",
            "message": "the request line or headers could not be parsed (too long or malformed); "
            "query strings may be at most IMAGEGEN_MAX_QUERY_BYTES",
        }
    }
).encode()
_UNPARSABLE = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_UNPARSABLE_BODY), _UNPARSABLE_BODY)
)


class _Limits(asyncio.Protocol):
    """Mixed in before a uvicorn HTTP protocol class: header timeout and connection cap.

    Class attributes are set per server by `protocol_class`; the rest is per connection."""

    header_timeout: float = 10.0
    max_connections: int = 1024
    _refusals: RateLimitedLog = RateLimitedLog(log, interval_s=10.0)
    _timeouts: RateLimitedLog = RateLimitedLog(log, interval_s=10.0)
    _header_timer: asyncio.TimerHandle | None = None

    # Attributes of uvicorn's protocol classes that the mixin reads.
    connections: set[Any]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    # The loop hands a stream protocol a Transport: narrowed as uvicorn's own protocols do.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # `connections` now includes this one.
        if len(self.connections) > self.max_connections:
            self._refusals.warning(
                "connection limit %d reached: new connections get 503 and are closed "
                "(IMAGEGEN_LIMIT_CONCURRENCY)",
                self.max_connections,
            )
            transport.write(_REFUSAL)
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # Both uvicorn parsers call this on a request they cannot parse. Closing at once with
        # unread input (the rest of a 200 KB request line) resets the connection, which can
        # destroy the answer before the client reads it: stop reading, answer, close a bit later.
        self.transport.pause_reading()
        self.transport.write(_UNPARSABLE)
        self.loop.call_later(1.0, self.transport.close)

    def on_response_complete(self) -> None:
        # The next request's headers get the same bound as the first one's. Armed before uvicorn's
        # own handler, which may start a pipelined request whose headers are already in.
        self._arm_header_timer()
        super().on_response_complete()  # type: ignore[misc]  # uvicorn's method, after this mixin

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _offer_client_gone_probe(self) -> None:
        """Called once uvicorn has made the request's cycle, before its ASGI task first runs."""
        cycle = self.cycle
        if cycle is not None:
            extensions = cycle.scope.setdefault("extensions", {})
            extensions.setdefault(CLIENT_GONE, functools.partial(getattr, cycle, "disconnected"))

    def _serving_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        # A request being served (headers in, response not finished) is not this timer's business.
        if self.transport.is_closing() or self._serving_request():
            return
        self._timeouts.info(
            "closed a connection that sent no complete request headers within %.1fs "
            "(IMAGEGEN_HEADER_TIMEOUT)",
            self.header_timeout,
        )
        self.transport.close()


class _H11Limits(_Limits, H11Protocol):
    def handle_events(self) -> None:
        super().handle_events()
        # their_state leaves IDLE once h11 has parsed a request's headers.
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()
        self._offer_client_gone_probe()


def _httptools_class() -> type | None:
    if importlib.util.find_spec("httptools") is None:
        return None
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _HttpToolsLimits(_Limits, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not transport.is_closing():  # not refused at the connection cap
                self.transport = HeadersWithBody(transport, self.loop)  # type: ignore[assignment]

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()
            self._offer_client_gone_probe()

    return _HttpToolsLimits


def effective_connection_limit(limit: int) -> int:
    """`limit`, lowered to what the descriptor limit allows after FD_RESERVE (soft limit raised to
    the hard one first: the soft default of 1024 is a historical select() limit, not a resource)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(1, min(limit, soft - FD_RESERVE))


def protocol_class(http: str, header_timeout: float, max_connections: int) -> tuple[type, str]:
    """The HTTP protocol class for `http` (auto/httptools/h11) with our limits, and its parser's name."""
    base: type = _H11Limits
    name = "h11"
    if http in ("auto", "httptools"):
        found = _httptools_class()
        if found is not None:
            base, name = found, "httptools"
        elif http == "httptools":
            raise RuntimeError("IMAGEGEN_HTTP=httptools but httptools is not installed")
        else:
            log.warning("httptools is not installed: parsing HTTP with h11 (pip install 'uvicorn[standard]')")
    attrs = {"header_timeout": header_timeout, "max_connections": max_connections}
    return type(f"Imagegen{base.__name__}", (base,), attrs), name


class Server(uvicorn.Server):
    """uvicorn's server, which logs what it runs on and drops the connections a bounded graceful
    stop leaves behind (uvicorn cancels their tasks but keeps their sockets)."""

    def __init__(self, config: uvicorn.Config, description: str) -> None:
        super().__init__(config)
        self.description = description

    async def startup(self, sockets: Any = None) -> None:
        loop = asyncio.get_running_loop()
        loop_name = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        log.info("HTTP server: %s event loop, %s", loop_name, self.description)
        await super().startup(sockets)

    async def shutdown(self, sockets: Any = None) -> None:
        await super().shutdown(sockets)
        left = list(self.server_state.connections)
        if left:
            log.warning("graceful stop timed out: dropping %d connection(s) that did not finish", len(left))
        for connection in left:
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()


def build_server(app: Any, settings: Settings) -> Server:
    """A uvicorn server for `app` with the limits from `settings`."""
    max_connections = effective_connection_limit(settings.limit_concurrency)
    http, parser = protocol_class(settings.http, settings.header_timeout, max_connections)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",  # uvloop when installed (uvicorn[standard])
        http=http,
        ws="none",
        lifespan="on",
        access_log=False,  # our middleware logs each request with its id
        log_config=None,  # keep setup_logging's handlers
        log_level=settings.log_level.lower(),
        backlog=4096,
        server_header=False,
        # uvicorn annotates both int; it passes them on as seconds (call_later, wait_for): floats work
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]
    )
    description = (
        f"{parser} parser, at most {max_connections} connections, header timeout "
        f"{settings.header_timeout:g}s, keep-alive {settings.keepalive_timeout:g}s, "
        f"graceful stop {settings.graceful_timeout:g}s"
    )
    return Server(config, description)
