"""The HTTP server: uvicorn configured from Settings, with our protocol classes
(service/http/protocols.py: header timeout and bound, connection caps, one write per response,
the disconnect probe) and a graceful stop with a bound.

- **Graceful stop with a bound.** SIGTERM: stop accepting, let in-flight requests finish, and after
  `graceful_timeout` seconds cancel what is left and drop the connections of clients that do not
  read, so the process exits (status 0) inside the orchestrator's grace period.
- No `server` header; no WebSocket support (nothing here speaks it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn

from service.connection_budget import split_connections
from service.http.client_identity import TrustedProxies
from service.http.protocols import protocol_class
from service.settings import Settings

log = logging.getLogger("imagegen.server")

# Descriptors kept for everything that is not a client connection: listening socket, log stream,
# model files while they load, the event loop's own pipes, worker threads.


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
    max_connections, _ = split_connections(settings.limit_concurrency, grpc=settings.grpc_port is not None)
    http, parser = protocol_class(
        settings.http,
        settings.header_timeout,
        max_connections,
        max_client_connections=settings.max_client_connections,
        max_header_bytes=settings.max_header_bytes,
        proxies=TrustedProxies(settings.trusted_proxies),
    )
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
        # uvicorn would believe X-Forwarded-For from loopback peers and rewrite the client before
        # us; service/http/client_identity.py decides whom to believe (IMAGEGEN_TRUSTED_PROXIES).
        proxy_headers=False,
        # uvicorn annotates both int; it passes them on as seconds (call_later, wait_for): floats work
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]
    )
    description = (
        f"{parser} parser, at most {max_connections} connections "
        f"({settings.max_client_connections} per client), header timeout "
        f"{settings.header_timeout:g}s, keep-alive {settings.keepalive_timeout:g}s, "
        f"graceful stop {settings.graceful_timeout:g}s"
    )
    return Server(config, description)
