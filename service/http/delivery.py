"""Delivering an admitted request's result over ASGI, wasting nothing on clients that left or
do not read.

- `await_result(future, receive, client_gone)`: the batcher's future, unless the client
  disconnects first; then the job is cancelled (the batcher skips a cancelled job, so its images
  are never run) and `ClientClosed` is raised. Under `imagegen serve` the server puts a probe of
  its disconnect flag in the request's scope (`CLIENT_GONE`, service/http/server.py), which the
  batcher reads when it forms a run; on any other ASGI server a task per request waits on
  `receive()` for the disconnect instead (a task, its scheduling and its cancellation were a
  tenth of a /sample request's event-loop CPU).
- `MeteredResponse`: sends a body in chunks through uvicorn's flow control, so a client that
  does not read holds at most about one chunk in the transport (plus our own copy of the body,
  which its admission ticket counts), and releases the ticket's bytes once the body is out or the
  client is gone: 40 clients that did not read their responses once grew RSS by 46 MB each
  (issue 16, row 5).
- `estimate_bytes`: an upper bound on a response's size, reserved at admission.
- `run_admitted(request, served, payload, ticket)`: an admitted job through its model's batcher,
  with the batcher's refusals as our 503s, and `metered_json` for a JSON answer: what the image
  and latent routes share.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from service.dataplane.admission import Ticket
from service.engine.batching import BatcherStopped, Job, QueueFull
from service.engine.generation import ImageRequest, TensorRequest
from service.errors import InferenceFailed, Overloaded, ServiceError, ShuttingDown
from service.store.registry import ServedModel

log = logging.getLogger("imagegen.routes")

# Bytes per ASGI body message: below uvicorn's write high-water mark (64 KiB), so every send
# after the first waits for the client to read.
CHUNK = 64 * 1024

# The scope extension where service/http/server.py puts the request's "has the client gone?" probe.
CLIENT_GONE = "imagegen.client_gone"


class ClientClosed(ServiceError):
    """The client disconnected before its result was ready (nginx's 499; never seen by a client)."""

    status, code = 499, "client_closed_request"


def client_gone_probe(scope: Any) -> Callable[[], bool] | None:
    """The server's probe of whether this request's client has disconnected, if it gave one."""
    extensions = scope.get("extensions")
    return extensions.get(CLIENT_GONE) if extensions else None


async def await_result(
    future: asyncio.Future[Any], receive: Any, client_gone: Callable[[], bool] | None = None
) -> Any:
    """The future's result; raises ClientClosed if the client disconnects first, and the job is
    cancelled: by the batcher through `client_gone` when given, else by a watcher task."""
    if client_gone is not None:
        try:
            return await future
        except asyncio.CancelledError:
            if client_gone():
                raise ClientClosed("the client disconnected before its images were ready") from None
            raise
    watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(future, receive))
    try:
        return await future
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientClosed("the client disconnected before its images were ready") from None
        raise
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(future: asyncio.Future[Any], receive: Any) -> None:
    # Route handlers have read the body by now (GET: none), so receive() waits for the end.
    while (await receive())["type"] != "http.disconnect":
        pass
    future.cancel()


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


async def run_admitted(
    request: Request, served: ServedModel, payload: ImageRequest | TensorRequest, ticket: Ticket
) -> Any:
    """The job's result through the model's batcher; its images leave admission when it is done,
    and a client that disconnects first has its job cancelled (never run)."""
    assert served.batcher is not None
    client_gone = client_gone_probe(request.scope)
    try:
        future = served.batcher.submit(Job(size=payload.n, payload=payload, client_gone=client_gone))
    except QueueFull as exc:
        raise Overloaded(
            f"model {served.id!r} is at its queue limit ({exc}); retry shortly",
            headers={"Retry-After": "1"},
            model=served.id,
        ) from None
    except BatcherStopped:
        raise ShuttingDown("the service is shutting down", headers={"Retry-After": "1"}) from None
    try:
        return await await_result(future, request.receive, client_gone)
    except ServiceError:
        raise
    except Exception as exc:
        log.error("inference failed for %s: %s", served.id, exc, exc_info=exc)
        raise InferenceFailed(f"inference failed for model {served.id!r}", model=served.id) from None
    finally:
        ticket.images_done()


def metered_json(payload: dict[str, Any], ticket: Ticket, headers: dict[str, str]) -> Response:
    body = JSONResponse(payload).body  # rendered once; sent in metered chunks
    return MeteredResponse(bytes(body), ticket, media_type="application/json", headers=headers)
