"""The data plane: the one request path under every entry point (service/http/routers/, the Open
Inference Protocol over REST and gRPC), as MLServer's DataPlane is under its REST and gRPC servers.

An adapter parses its transport into a `Call` and the operation's payload, then:

    await plane.enter(call, body=...)    a connection back before its Retry-After waits here;
                                         a server full as a whole refuses before a body is read
    served = plane.resolve(call, name)   the model, ready to serve (the call's metrics label)
    result, ticket = await plane.execute(call, served, payload, response_bytes)
                                         admitted, run through the model's batcher, awaited with
                                         the client-gone probe; the images leave admission when
                                         done, the ticket holds the response's bytes until sent
    plane.record(call, status, seconds)  counted under the operation's own label, one access-log line

`hold_early_retry` and `admit` are called from here only. Nothing here knows a transport: errors
are service.errors' classes, which each adapter renders in its protocol's shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from service.dataplane.admission import Admission, Ticket
from service.dataplane.keys import KeyFailures
from service.engine.batching import BatcherStopped, Job, QueueFull, RunReport
from service.engine.generation import ImageRequest, TensorRequest
from service.errors import ClientClosed, InferenceFailed, Overloaded, ServiceError, ShuttingDown
from service.metrics import Metrics
from service.store.registry import Registry
from service.store.served import ServedModel

log = logging.getLogger("imagegen.access")
T = TypeVar("T")
# Jobs waiting for or running on the request workers' two threads; a decode takes at most tens
# of milliseconds within the upload bounds, so 16 is under a second of queue.
OFF_LOOP_QUEUE = 16


@dataclass(eq=False, slots=True)
class Call:
    """One request as the data plane sees it, whatever carried it."""

    operation: str  # its metrics label: the route template, or the gRPC method
    client: Any = None  # the connection, remembered when it is told to retry later
    # The server's "has the client gone?" probe: a job whose client left is never run.
    client_gone: Callable[[], bool] | None = None
    # Else an awaitable that returns when the client disconnects (ASGI's receive()).
    disconnected: Callable[[], Awaitable[None]] | None = None
    model: str = ""  # the resolved model's id: the metrics' model label
    request_id: str = ""


class DataPlane:
    def __init__(
        self,
        registry: Registry,
        admission: Admission,
        metrics: Metrics,
        workers: Executor,
        access_log: bool,
        key_failures: KeyFailures | None = None,
    ) -> None:
        self.registry = registry
        self.admission = admission
        self.metrics = metrics
        # Request work that is not a model run (upload decoding, the encoder, strips): its own
        # threads, so it never waits behind (or holds up) the batchers' runs.
        self.workers = workers
        self._off_loop_pending = 0
        # Failed API/admin key checks per client, shared by every transport.
        self.key_failures = key_failures or KeyFailures()
        self.access_log = access_log

    # -- the request path ----------------------------------------------------------------------

    async def enter(self, call: Call, *, body: bool = False) -> None:
        """Before anything is parsed: a connection back before the Retry-After it was given waits
        until then; with `body`, a server full as a whole refuses before the body is read."""
        if await self.admission.hold_early_retry(call.client):
            self.metrics.early_retries_held.labels(call.operation).inc()
        if body:
            self.admission.check_total(call.client)

    def resolve(self, call: Call, model: str, dataset: str | None = None) -> ServedModel:
        served = self.registry.resolve(model, dataset)
        call.model = served.id
        return served

    def ready(self, call: Call, model_id: str) -> ServedModel:
        served = self.registry.get(model_id)
        call.model = served.id
        return served

    async def execute(
        self, call: Call, served: ServedModel, payload: ImageRequest | TensorRequest, response_bytes: int
    ) -> tuple[Any, Ticket]:
        """Admit, run through the model's batcher, await; (result, the ticket still holding the
        response's bytes: the adapter releases it once the response is out, or on failure)."""
        ticket = self.admission.admit(served.id, payload.n, response_bytes, call.client)
        try:
            return await self._run(call, served, payload), ticket
        except BaseException:
            ticket.release()
            raise
        finally:
            ticket.images_done()

    async def _run(self, call: Call, served: ServedModel, payload: ImageRequest | TensorRequest) -> Any:
        assert served.batcher is not None
        try:
            future = served.batcher.submit(Job(size=payload.n, payload=payload, client_gone=call.client_gone))
        except QueueFull as exc:
            raise Overloaded(
                f"model {served.id!r} is at its queue limit ({exc}); retry shortly",
                headers={"Retry-After": "1"},
                model=served.id,
            ) from None
        except BatcherStopped:
            raise ShuttingDown("the service is shutting down", headers={"Retry-After": "1"}) from None
        try:
            return await await_result(future, call)
        except ServiceError:
            raise
        except Exception as exc:
            log.error("inference failed for %s: %s", served.id, exc, exc_info=exc)
            raise InferenceFailed(f"inference failed for model {served.id!r}", model=served.id) from None

    async def off_loop(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout_s: float | None = None,
        too_slow: ServiceError | None = None,
    ) -> T:
        """Request work that is not a model run, in the request workers' threads. At most
        `OFF_LOOP_QUEUE` such jobs wait or run at once; past it, 503 at once with Retry-After, so
        a burst of uploads cannot queue unbounded decodes (and their bodies) behind each other.
        Past `timeout_s` the request gets `too_slow`; the job still counts until its thread ends
        (a thread cannot be stopped), so the bound holds."""
        if self._off_loop_pending >= OFF_LOOP_QUEUE:
            raise Overloaded(
                f"overloaded ({OFF_LOOP_QUEUE} uploads are being decoded); retry in 1 s",
                headers={"Retry-After": "1"},
                retry_after_ms=1000,
            )
        self._off_loop_pending += 1
        job = asyncio.get_running_loop().run_in_executor(self.workers, fn, *args)
        job.add_done_callback(self._off_loop_done)
        if timeout_s is None:
            return await job
        try:
            return await asyncio.wait_for(asyncio.shield(job), timeout_s)
        except TimeoutError:
            raise too_slow or Overloaded(f"the job took over {timeout_s} s") from None

    def _off_loop_done(self, job: asyncio.Future[Any]) -> None:
        self._off_loop_pending -= 1
        if not job.cancelled():
            job.exception()  # retrieved: a timed-out job's error is not "never retrieved"

    # -- accounting -----------------------------------------------------------------------------

    def record(self, call: Call, status: int, seconds: float, method: str = "", path: str = "") -> None:
        """Count a finished request under its operation and model, and log it (one line)."""
        self.metrics.observe_request(call.operation, call.model, status, seconds)
        if self.access_log:
            log.info(
                "%s %s %d %.1fms model=%s id=%s",
                method,
                path,
                status,
                seconds * 1000,
                call.model or "-",
                call.request_id,
                extra={
                    "request_id": call.request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "model": call.model,
                },
            )

    def batch_hooks(
        self, model_id: str, provider: str
    ) -> tuple[Callable[[RunReport], None], Callable[[float], None]]:
        """One model's batcher hooks: its metrics, and admission's measure of its drain rate."""
        observe_metrics, on_queue = self.metrics.batch_observer(model_id, provider)
        observe_rate = self.admission.observer(model_id)

        def on_batch(report: RunReport) -> None:
            observe_metrics(report)
            observe_rate(report)

        return on_batch, on_queue


async def await_result(future: asyncio.Future[Any], call: Call) -> Any:
    """The future's result; raises ClientClosed if the client disconnects first, and the job is
    cancelled (the batcher skips a cancelled job): by the batcher through the call's probe when
    there is one, else by a task waiting for the disconnect. Without either (gRPC), cancelling the
    awaiting task cancels the job the same way."""
    if call.client_gone is not None or call.disconnected is None:
        try:
            return await future
        except asyncio.CancelledError:
            if call.client_gone is not None and call.client_gone():
                raise ClientClosed("the client disconnected before its images were ready") from None
            raise
    watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(future, call.disconnected))
    try:
        return await future
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientClosed("the client disconnected before its images were ready") from None
        raise
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(
    future: asyncio.Future[Any], disconnected: Callable[[], Awaitable[None]]
) -> None:
    await disconnected()
    future.cancel()
