"""Delivering an admitted request's result over ASGI, wasting nothing on clients that left or
do not read.

- `http_call(request)`: the request as the data plane's `Call` (service/dataplane/plane.py): its
  route as the operation, its connection, and how to tell that its client left. Under `imagegen
  serve` the server puts a probe of its disconnect flag in the request's scope (`CLIENT_GONE`,
  service/http/protocols.py), which the batcher reads when it forms a run; on any other ASGI server
  a task per request waits on `receive()` for the disconnect instead (a task, its scheduling and
  its cancellation were a tenth of a /sample request's event-loop CPU).
- `MeteredResponse`: sends a body in chunks through uvicorn's flow control, so a client that
  does not read holds at most about one chunk in the transport (plus our own copy of the body,
  which its admission ticket counts), and releases the ticket's bytes once the body is out or the
  client is gone: 40 clients that did not read their responses once grew RSS by 46 MB each
  (issue 16, row 5).
- `estimate_bytes`: an upper bound on a response's size, reserved at admission.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from service.dataplane.admission import Ticket
from service.dataplane.plane import Call
from service.engine.generation import ImageRequest
from service.store.served import ServedModel

# Bytes per ASGI body message: below uvicorn's write high-water mark (64 KiB), so every send
# after the first waits for the client to read.
CHUNK = 64 * 1024

# The scope extension where service/http/protocols.py puts the request's "has the client gone?" probe.
CLIENT_GONE = "imagegen.client_gone"
# The request state's key for the client's address (service/http/client_identity.py).
CLIENT = "client"
# Where a request's Call is kept in the scope's state, for the middleware to count and log it.
CALL = "call"


def client_gone_probe(scope: Any) -> Callable[[], bool] | None:
    """The server's probe of whether this request's client has disconnected, if it gave one."""
    extensions = scope.get("extensions")
    return extensions.get(CLIENT_GONE) if extensions else None


def route_template(scope: Any) -> str:
    """The matched route's path template (`/v2/models/{name}/infer`): a bounded label set; 'other'
    for a request that matched no route."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "other"


def http_call(request: Request) -> Call:
    """The data plane's Call for this request, kept in its state for the middleware."""
    scope = request.scope
    state = scope["state"]
    probe = client_gone_probe(scope)
    call = Call(
        route_template(scope),
        client=state.get(CLIENT),
        client_gone=probe,
        disconnected=None if probe is not None else _disconnect_of(request.receive),
        request_id=state.get("request_id", ""),
    )
    state[CALL] = call
    return call


def _disconnect_of(receive: Any) -> Callable[[], Awaitable[None]]:
    """An awaitable that returns when the client disconnects, read from ASGI's receive()."""

    async def disconnected() -> None:
        # Route handlers have read the body by now (GET: none), so receive() waits for the end.
        while (await receive())["type"] != "http.disconnect":
            pass

    return disconnected


class MeteredResponse(Response):
    """A Response whose body goes out in CHUNK-sized messages; `ticket.response_sent()` when done."""

    def __init__(self, content: bytes, ticket: Ticket, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.ticket = ticket
        ticket.resize_response(len(self.body))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            body = self.body
            if len(body) <= CHUNK:
                await send({"type": "http.response.body", "body": body})
            else:
                for offset in range(0, len(body), CHUNK):
                    chunk = body[offset : offset + CHUNK]
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # Waits (in uvicorn's flow control) until the client has read all but the last bytes.
                await send({"type": "http.response.body", "body": b""})
        finally:
            self.ticket.response_sent()
        if self.background is not None:
            await self.background()


def metered(build: Callable[[], Response], ticket: Ticket) -> Response:
    """The response `build()` makes; the ticket released if building it fails."""
    try:
        return build()
    except BaseException:
        ticket.release()
        raise


def response_bytes(served: ServedModel, image_request: ImageRequest) -> int:
    """What admission reserves for an image request's response: an upper bound of its size."""
    image = served.require_manifest().image
    values = image.channels * image.height * image.width
    return estimate_bytes(values, image_request.n, image_request.scale, image_request.output)


def estimate_bytes(values_per_image: int, n: int, scale: int, output: str) -> int:
    """Upper bound of a response's size: n images of `values_per_image` uint8/float32 values
    (channels x height x width) at `scale`. PNGs are bounded by their raw size (zlib's worst case
    adds ~0.1%), a grid by its full rows x cols canvas, base64 by 4/3 plus JSON per image."""
    values = values_per_image * scale * scale
    if output == "npy":
        return 4 * n * values + 256
    if output == "png":
        cols = math.ceil(math.sqrt(n))
        cells = cols * math.ceil(n / cols)
        return cells * values * 102 // 100 + 4096
    return n * ((values * 102 // 100 + 1024) * 4 // 3 + 256) + 1024  # png_base64 in JSON


def metered_json(payload: dict[str, Any], ticket: Ticket, headers: dict[str, str] | None = None) -> Response:
    body = JSONResponse(payload).body  # rendered once; sent in metered chunks
    return MeteredResponse(bytes(body), ticket, media_type="application/json", headers=headers)
