"""uvicorn's HTTP protocol classes (httptools and h11) with the limits uvicorn itself lacks,
mixed in per connection; service/http/server.py builds the server around them.

- **Header timeout.** uvicorn arms its keep-alive timer only after a first response, so a
  connection that never sends, or never finishes its headers, would stay open forever. Our
  protocol classes (subclasses of uvicorn's httptools and h11 protocols) arm a timer when the
  connection is made and after each response, and cancel it once a request's headers are in.
- **Connection cap.** Past `limit_concurrency` open connections (clamped below the process's
  file-descriptor limit) a new connection gets a short JSON 503 and is closed at once, so a
  flood of idle sockets cannot run the process out of descriptors (EMFILE) and a client that
  sent a request learns to retry.
- **Per-client cap.** Past `max_client_connections` open connections from one address (trusted
  proxies excepted) a new one from it gets the same 503: 2,100 idle sockets from one client once
  left 24 of 25 other clients with 503s.
- **Header bytes.** Past `max_header_bytes` of a request's line and headers: 431 in the JSON
  shape and the connection closed, counted as they arrive (a 64 MB header was read whole,
  parsed for 8 s and stalled other clients).
- **One write per response.** uvicorn writes a response's status line and headers, then its body,
  as two writes: two send calls and, for a small image, two TCP segments. The httptools protocol
  holds the headers until the body's first bytes (or the end of the event-loop iteration, for a
  response without a body) and writes both at once.
- **Disconnect probe.** Each request's scope carries `extensions["imagegen.client_gone"]`, a
  callable reading uvicorn's own disconnect flag for it, so the batcher can skip the job of a
  client that left without a task per request waiting on `receive()` (service/http/delivery.py).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.http.client_identity import TrustedProxies
from service.http.delivery import CLIENT_GONE
from service.http.writes import HeadersWithBody
from service.logs import RateLimitedLog

log = logging.getLogger("imagegen.server")


def _canned(status: bytes, code: str, message: str, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 response in our JSON error shape, written straight to the transport."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\n"
        + b"".join(h + b"\r\n" for h in headers)
    )
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


_REFUSAL = _canned(
    b"503 Service Unavailable", "too_many_connections",
    "the server is at its connection limit; retry shortly", b"retry-after: 1", b"connection: close",
)  # fmt: skip
_CLIENT_REFUSAL = _canned(
    b"503 Service Unavailable", "too_many_connections",
    "this client has too many open connections (IMAGEGEN_MAX_CLIENT_CONNECTIONS); reuse or close some",
    b"retry-after: 1", b"connection: close",
)  # fmt: skip
_HEADERS_TOO_LARGE = _canned(
    b"431 Request Header Fields Too Large", "headers_too_large",
    "the request line and headers are over IMAGEGEN_MAX_HEADER_BYTES", b"connection: close",
)  # fmt: skip
# What the HTTP parser refuses (a request line or headers past its ~128 KB limit, bad syntax)
# gets our error shape instead of uvicorn's plain text; the parser's message is not echoed.
_UNPARSABLE = _canned(
    b"400 Bad Request", "bad_request",
    "the request line or headers could not be parsed (too long or malformed); "
    "query strings may be at most IMAGEGEN_MAX_QUERY_BYTES", b"connection: close",
)  # fmt: skip


class _Limits(asyncio.Protocol):
    """Mixed in before a uvicorn HTTP protocol class: header timeout and connection cap.

    Class attributes are set per server by `protocol_class`; the rest is per connection."""

    header_timeout: float = 10.0
    max_connections: int = 1024
    max_client_connections: int = 256
    max_header_bytes: int = 16384
    proxies: TrustedProxies = TrustedProxies("")
    # Open connections per client address, shared by all of a server's connections (per class).
    per_client: dict[str, int] = {}
    _address: str | None = None
    _header_bytes = 0
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
        self._address = self._count_client(transport)
        # `connections` now includes this one.
        if self._address is not None and self.per_client[self._address] > self.max_client_connections:
            self._refusals.warning(
                "a client reached %d open connections: its new ones get 503 and are closed "
                "(IMAGEGEN_MAX_CLIENT_CONNECTIONS)",
                self.max_client_connections,
            )
            transport.write(_CLIENT_REFUSAL)
            transport.close()
            return
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
        if self._address is not None:
            left = self.per_client[self._address] - 1
            if left:
                self.per_client[self._address] = left
            else:
                del self.per_client[self._address]
            self._address = None
        super().connection_lost(exc)

    def _count_client(self, transport: asyncio.Transport) -> str | None:
        """Count this connection against its peer's address; None for trusted proxies (and for
        peers without an address)."""
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple) or not peer:
            return None
        address = str(peer[0])
        if self.proxies.trusts(address):
            return None
        self.per_client[address] = self.per_client.get(address, 0) + 1
        return address

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # uvicorn's, after this mixin
        # Headers still incomplete after this chunk: it counts towards the header bound.
        if self._header_timer is not None and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self.transport.pause_reading()
                self.transport.write(_HEADERS_TOO_LARGE)
                self.loop.call_later(1.0, self.transport.close)
                self._cancel_header_timer()

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
        self._header_bytes = 0
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


def protocol_class(
    http: str,
    header_timeout: float,
    max_connections: int,
    *,
    max_client_connections: int = 256,
    max_header_bytes: int = 16384,
    proxies: TrustedProxies | None = None,
) -> tuple[type, str]:
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
    attrs = {
        "header_timeout": header_timeout,
        "max_connections": max_connections,
        "max_client_connections": max_client_connections,
        "max_header_bytes": max_header_bytes,
        "proxies": proxies or TrustedProxies(""),
        "per_client": {},
    }
    return type(f"Imagegen{base.__name__}", (base,), attrs), name
