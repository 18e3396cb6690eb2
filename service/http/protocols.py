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
- **Pipelining.** At most `MAX_PIPELINED` requests wait behind the one being served on a
  connection; past it the rest of what was read goes unanswered and the connection is closed
  once those are answered (100,000 pipelined requests once took 600 MB).
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
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.http.client_identity import TrustedProxies
from service.http.delivery import CLIENT_GONE
from service.http.refusals import CLIENT_REFUSAL, HEADERS_TOO_LARGE, REFUSAL, UNPARSABLE
from service.http.writes import HeadersWithBody
from service.logs import RateLimitedLog

log = logging.getLogger("imagegen.server")


# Requests queued behind the one being served on a pipelining connection (httptools).
MAX_PIPELINED = 16


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
            transport.write(CLIENT_REFUSAL)
            transport.close()
            return
        if len(self.connections) > self.max_connections:
            self._refusals.warning(
                "connection limit %d reached: new connections get 503 and are closed "
                "(IMAGEGEN_LIMIT_CONCURRENCY)",
                self.max_connections,
            )
            transport.write(REFUSAL)
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
        # Headers still incomplete after this chunk: it counts towards the header bound. Not the
        # rest of a body answered early (a 413): the parser reads it as that request's body.
        body_pending = self.cycle is not None and self.cycle.more_body
        if self._header_timer is not None and not body_pending and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self.transport.pause_reading()
                self.transport.write(HEADERS_TOO_LARGE)
                self.loop.call_later(1.0, self.transport.close)
                self._cancel_header_timer()

    def send_400_response(self, msg: str) -> None:
        # Both uvicorn parsers call this on a request they cannot parse. Closing at once with
        # unread input (the rest of a 200 KB request line) resets the connection, which can
        # destroy the answer before the client reads it: stop reading, answer, close a bit later.
        self.transport.pause_reading()
        self.transport.write(UNPARSABLE)
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
        _pipeline_full = False
        _discarding = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not transport.is_closing():  # not refused at the connection cap
                self.transport = HeadersWithBody(transport, self.loop)  # type: ignore[assignment]

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()
            if len(self.pipeline) > MAX_PIPELINED:
                self._shed_pipelined_request()
            self._offer_client_gone_probe()

        def _shed_pipelined_request(self) -> None:
            # uvicorn queues every pipelined request a read holds (~6 KB each; 100,000 on one
            # connection took 600 MB) and reads more after each response. Past the bound the
            # request just parsed is dropped unanswered, and the last one kept closes the
            # connection, which HTTP/1.1 clients take as "retry the rest" (RFC 9112 9.3.2).
            self.pipeline.popleft()
            self.flow.pause_reading()
            if not self._pipeline_full:
                self._pipeline_full = True
                self._refusals.warning(
                    "a client pipelined over %d requests on one connection: the rest are not "
                    "answered and the connection closes after those",
                    MAX_PIPELINED,
                )

        def on_response_complete(self) -> None:
            super().on_response_complete()  # uvicorn's resumes reading
            if self._pipeline_full and not self.pipeline and not self.transport.is_closing():
                self._close_after_pipeline()
            elif self._pipeline_full:
                self.flow.pause_reading()

        def _close_after_pipeline(self) -> None:
            # A close with unread input resets the connection, which can destroy the answers
            # before the client reads them: end our side, drop what still comes, close later.
            self.transport.flush()  # type: ignore[attr-defined]  # HeadersWithBody's
            self.transport.write_eof()
            self._discarding = True
            self.flow.resume_reading()
            self.loop.call_later(2.0, self.transport.close)

        def data_received(self, data: bytes) -> None:
            if not self._discarding:
                super().data_received(data)

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
