"""Admission: whether a request may enter at all, decided before any work is done for it.

Under overload the server must keep its goodput: a storm of clients retrying at once after a 503
once got 31 successful n=64 requests in 4 s against 88/s unloaded, and another model's p50 went
from 3 ms to 471 ms (issue 16, row 7). Everything refused here costs a dict lookup, no inference,
and the admitted work never waits long:

- **Per model**: images admitted and not yet finished stay under what the model drains in
  `max_queue_wait` (its measured images/s) and under `queue_limit`; a model with nothing in
  flight always admits one request, however large.
- **In total**: images in flight over all models stay under `total_queue_limit`, which is larger
  than any one model's share, so one model's storm cannot fill the server for the others.
- **Response bytes**: the bytes of responses being built or sent (a client that does not read
  keeps its response in memory) stay under `max_response_bytes`.
- **Retry-After** is the expected drain time of what is ahead, with jitter (x0.5-1.5) so retries
  spread; the header rounds up to whole seconds as HTTP requires, the body's `retry_after_ms` is
  exact. A client (its address, service/http/client_identity.py) that comes back before its
  Retry-After has passed is **held** until then
  (a timer, nothing parsed): clients that ignore Retry-After are paced to what they were told,
  while well-behaved ones still get their 503 at once.

Nothing here knows HTTP beyond raising `Overloaded` with its headers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from service.dataplane.memory import MemoryTrimmer
from service.engine.batching import RunReport
from service.errors import Overloaded

log = logging.getLogger("imagegen.admission")

# Images/s assumed for a model before its first run has been measured.
DEFAULT_RATE = 1000.0
RATE_SMOOTHING = 0.2  # weight of the newest run in the moving average of a model's images/s
MIN_RETRY_S = 0.05
MAX_RETRY_S = 30.0
# Held early retries: at most this many remembered clients before expired ones are pruned.
MAX_REMEMBERED = 4096


@dataclass
class ModelGate:
    """One model's images in flight and its measured drain rate."""

    images: int = 0  # admitted and not yet finished (queued, running or being encoded)
    rate: float = DEFAULT_RATE  # images/s, moving average over runs

    def observe(self, report: RunReport) -> None:
        busy = report.inference_s + sum(report.encode_s)
        if report.failed or report.images == 0 or busy <= 0:
            return
        sample = report.images / busy
        self.rate += RATE_SMOOTHING * (sample - self.rate)

    def drain_s(self, images: int | None = None) -> float:
        return (self.images if images is None else images) / max(self.rate, 1.0)


@dataclass(eq=False)
class Ticket:
    """What one admitted request holds: images until its job is done, bytes until its response
    has been sent. Each release is idempotent."""

    admission: Admission
    model: str
    images: int
    response_bytes: int
    _images_held: bool = True
    _bytes_held: bool = True

    def images_done(self) -> None:
        if self._images_held:
            self._images_held = False
            self.admission._release_images(self.model, self.images)

    def resize_response(self, actual: int) -> None:
        """Replace the estimate reserved at admission by the response's actual size."""
        if self._bytes_held:
            self.admission._response_bytes += actual - self.response_bytes
            self.response_bytes = actual

    def response_sent(self) -> None:
        if self._bytes_held:
            self._bytes_held = False
            self.admission._release_bytes(self.response_bytes)

    def release(self) -> None:
        self.images_done()
        self.response_sent()


@dataclass
class Admission:
    queue_limit: int  # images per model
    total_queue_limit: int  # images over all models
    max_queue_wait_s: float
    min_queue: int  # images a model may always hold (two runs: one running, one waiting)
    max_response_bytes: int
    rng: random.Random = field(default_factory=random.Random)
    gates: dict[str, ModelGate] = field(default_factory=dict)
    _total_images: int = 0
    _response_bytes: int = 0
    _not_before: dict[Any, float] = field(default_factory=dict)  # client -> monotonic time
    trimmer: MemoryTrimmer | None = None  # told of response bytes, and when nothing is in flight

    @classmethod
    def from_settings(cls, settings: Any, executor: Executor | None = None) -> Admission:
        return cls(
            queue_limit=settings.queue_limit,
            total_queue_limit=settings.total_queue_limit,
            max_queue_wait_s=settings.max_queue_wait_ms / 1000.0,
            min_queue=2 * settings.max_batch,
            max_response_bytes=settings.max_response_bytes,
            trimmer=MemoryTrimmer(executor),
        )

    def gate(self, model: str) -> ModelGate:
        gate = self.gates.get(model)
        if gate is None:
            gate = self.gates[model] = ModelGate()
        return gate

    def observer(self, model: str) -> Callable[[RunReport], None]:
        """The batcher hook that keeps a model's drain rate current."""
        return self.gate(model).observe

    @property
    def total_images(self) -> int:
        return self._total_images

    @property
    def response_bytes(self) -> int:
        return self._response_bytes

    # -- admission ---------------------------------------------------------------------------

    def model_limit(self, gate: ModelGate) -> int:
        """Images a model may hold: what it drains in max_queue_wait, within [min_queue, queue_limit]."""
        by_time = int(gate.rate * self.max_queue_wait_s)
        return min(self.queue_limit, max(self.min_queue, by_time))

    def admit(self, model: str, images: int, response_bytes: int, client: Any = None) -> Ticket:
        """A ticket for `images` images of `model`, or Overloaded (503) with when to come back."""
        gate = self.gate(model)
        if gate.images and gate.images + images > self.model_limit(gate):
            self._refuse(
                client, gate.drain_s(), f"model {model!r} has {gate.images} images in flight", model=model
            )
        if self._total_images and self._total_images + images > self.total_queue_limit:
            self._refuse(client, self._total_drain_s(), f"{self._total_images} images in flight in total")
        if self._response_bytes and self._response_bytes + response_bytes > self.max_response_bytes:
            # Bytes leave as clients read them: no drain rate to go by, so a second or so.
            self._refuse(client, 1.0, f"{self._response_bytes} bytes of responses in flight")
        gate.images += images
        self._total_images += images
        self._response_bytes += response_bytes
        if self.trimmer is not None:
            self.trimmer.saw_bytes(response_bytes)
        return Ticket(self, model, images, response_bytes)

    def check_total(self, client: Any = None) -> None:
        """Refuse before reading a body when the server as a whole is full."""
        if self._total_images >= self.total_queue_limit:
            self._refuse(client, self._total_drain_s(), f"{self._total_images} images in flight in total")
        if self._response_bytes >= self.max_response_bytes:
            self._refuse(client, 1.0, f"{self._response_bytes} bytes of responses in flight")

    def _total_drain_s(self) -> float:
        # Models run in parallel but share the CPU: the sum is the cautious estimate.
        return sum(g.drain_s() for g in self.gates.values() if g.images)

    def _refuse(self, client: Any, drain_s: float, why: str, **details: Any) -> None:
        retry_s = min(MAX_RETRY_S, max(MIN_RETRY_S, drain_s * self.rng.uniform(0.5, 1.5)))
        if client is not None:
            self._remember(client, time.monotonic() + retry_s)
        raise Overloaded(
            f"overloaded ({why}); retry in {retry_s:.2f} s",
            headers={"Retry-After": str(max(1, math.ceil(retry_s)))},
            retry_after_ms=round(retry_s * 1000),
            **details,
        )

    # -- clients that retry before they were told to ----------------------------------------

    def _remember(self, client: Any, not_before: float) -> None:
        if len(self._not_before) >= MAX_REMEMBERED:
            now = time.monotonic()
            self._not_before = {c: t for c, t in self._not_before.items() if t > now}
            if len(self._not_before) >= MAX_REMEMBERED:
                return  # a flood of distinct clients: they are refused, just not held
        # The later time wins: requests refused at once must not shorten each other's wait.
        self._not_before[client] = max(not_before, self._not_before.get(client, 0.0))

    async def hold_early_retry(self, client: Any) -> bool:
        """Wait until this client's Retry-After has passed, if it came back sooner; True when it
        was held. Every request of a held client waits, not only the next one, so it cannot
        spread retries over connections."""
        if not self._not_before or client is None:
            return False
        not_before = self._not_before.get(client)
        if not_before is None:
            return False
        wait = not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
            return True
        if self._not_before.get(client) == not_before:
            del self._not_before[client]  # passed: forgotten
        return False

    # -- releases ----------------------------------------------------------------------------

    def _release_images(self, model: str, images: int) -> None:
        self.gates[model].images -= images
        self._total_images -= images
        self._maybe_idle()

    def _release_bytes(self, count: int) -> None:
        self._response_bytes -= count
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self._total_images == 0 and self._response_bytes == 0 and self.trimmer is not None:
            self.trimmer.idle()
