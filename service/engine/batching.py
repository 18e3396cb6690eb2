"""A dynamic batcher (in the spirit of Triton's dynamic batcher and BentoML's adaptive batching).

It knows nothing of HTTP or ONNX. Callers `submit(job)` and await the result; one background
task per batcher takes waiting jobs, oldest first, until the batch holds `max_batch` images or
the oldest job has waited `max_delay_s`, and hands the batch to `run_batch` in a worker thread.

- Sizes are counted in images: a job of n images may be split over several runs (`Slice`s);
  `finish(job)` turns a job's collected parts into its result once its last slice has run,
  in the same worker-thread call as that run (so, e.g., PNG encoding stays off the event loop).
- The queue is bounded (in images): `submit` raises `QueueFull` instead of making callers wait.
- A failing run fails only the jobs in it; a job cancelled by its caller is skipped.
- While a run is busy, new jobs wait and form the next batch, so batches grow with load; a job
  that arrives alone (no other job within max_delay before it) runs without waiting.
- After each run, `on_batch(RunReport)` says what it did: queue wait of the jobs it started,
  inference and encoding seconds apart, and the images it delivered (none for a failed run,
  none for cancelled jobs), so metrics count only work that reached a client.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The batcher already holds `queue_limit` images; the caller should retry later."""


class BatcherStopped(Exception):
    """The batcher is stopping or stopped and takes no new jobs."""


@dataclass(eq=False)
class Job:
    """A request for `size` items; `payload` is whatever `run_batch` needs to make them."""

    size: int
    payload: Any = None
    parts: list[Any] = field(default_factory=list)  # one result per slice, in order
    taken: int = 0  # items already handed to a run
    future: asyncio.Future[Any] | None = None
    enqueued: float = 0.0
    gap: float = float("inf")  # seconds since the job submitted before it
    idle: bool = False  # nothing was queued or running when it was submitted
    # The caller's "has my client gone?" probe (the server's disconnect flag): a job whose client
    # left is cancelled when a run is formed, never run.
    client_gone: Callable[[], bool] | None = None


@dataclass(frozen=True)
class Slice:
    """Items [start, stop) of one job, as they enter one run."""

    job: Job
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def last(self) -> bool:
        return self.stop == self.job.size


@dataclass
class RunReport:
    """What one run did, for the metrics hook."""

    images: int = 0  # images in the run (cancelled jobs' slices are not run)
    failed: bool = False  # run_batch raised: every job in it failed
    inference_s: float = 0.0  # run_batch alone
    encode_s: list[float] = field(default_factory=list)  # finish() of each job this run completed
    delivered: int = 0  # images of jobs this run completed successfully
    queue_waits: list[float] = field(default_factory=list)  # jobs that entered their first run


RunBatch = Callable[[list[Slice]], list[Any]]
Finish = Callable[[Job], Any]


def _parts(job: Job) -> Any:
    return job.parts


class DynamicBatcher:
    def __init__(
        self,
        run_batch: RunBatch,
        *,
        finish: Finish = _parts,
        max_batch: int,
        max_delay_s: float,
        queue_limit: int,
        executor: Executor | None = None,
        on_batch: Callable[[RunReport], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
        wait_alone: bool = False,
    ) -> None:
        """`run_batch(slices)` returns one result per slice; `on_batch(report)` and
        `on_queue(images_waiting)` are observation hooks (metrics). `wait_alone`: hold even a job
        that arrived alone for max_delay_s (Triton's behaviour) instead of running it at once."""
        self._run_batch = run_batch
        self._finish = finish
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.queue_limit = queue_limit
        self._executor = executor
        self._on_batch = on_batch or (lambda report: None)
        self._on_queue = on_queue or (lambda images: None)
        self._pending: collections.deque[Job] = collections.deque()
        self._queued = 0  # images submitted and not yet handed to a run
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_submit = float("-inf")
        self._running = False  # a run is in the worker thread
        self._wait_alone = wait_alone

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dynamic-batcher")

    async def stop(self) -> None:
        """Take no new jobs, finish the queued ones, then end the background task."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a job; the returned future resolves to `finish(job)` or to the run's exception."""
        if self._stopping or self._task is None:
            raise BatcherStopped("the batcher is not running")
        if job.size < 1:
            raise ValueError("a job needs at least one item")
        if self._queued + job.size > self.queue_limit:
            raise QueueFull(f"{self._queued} images queued, limit {self.queue_limit}")
        job.future = asyncio.get_running_loop().create_future()
        job.enqueued = time.perf_counter()
        job.gap = job.enqueued - self._last_submit
        job.idle = not self._pending and not self._running
        self._last_submit = job.enqueued
        self._pending.append(job)
        self._queued += job.size
        self._on_queue(self._queued)
        if len(self._pending) == 1 or self._queued >= self.max_batch:
            self._wakeup.set()
        return job.future

    async def _loop(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_to_fill()
            slices = self._take()
            if slices:
                await self._run(slices)

    async def _wait_to_fill(self) -> None:
        """Wait while the batch is not full and the oldest job's delay is not spent.

        A job that came alone runs at once: nothing submitted within max_delay before it, or the
        batcher idle when it came (a client sending one request after another). With no
        concurrent traffic, waiting would only add latency. Concurrent traffic waits for company.
        """
        oldest = self._pending[0]
        alone = len(self._pending) == 1 and (oldest.gap > self.max_delay_s or oldest.idle)
        if not self._wait_alone and alone:
            return
        deadline = oldest.enqueued + self.max_delay_s
        while self._queued < self.max_batch and not self._stopping:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[Slice]:
        """Up to max_batch items from the oldest jobs; skips jobs already cancelled or failed, and
        cancels those whose client has gone."""
        slices: list[Slice] = []
        room = self.max_batch
        while self._pending and room > 0:
            job = self._pending[0]
            if job.client_gone is not None and job.future is not None and job.client_gone():
                job.future.cancel()
            if job.future is not None and job.future.done():
                self._pending.popleft()
                self._queued -= job.size - job.taken
                continue
            count = min(room, job.size - job.taken)
            slices.append(Slice(job, job.taken, job.taken + count))
            job.taken += count
            room -= count
            self._queued -= count
            if job.taken == job.size:
                self._pending.popleft()
        self._on_queue(self._queued)
        return slices

    async def _run(self, slices: list[Slice]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        report = RunReport(queue_waits=[started - s.job.enqueued for s in slices if s.start == 0])
        self._running = True
        try:
            outcomes = await loop.run_in_executor(self._executor, self._work, slices, report)
        except Exception as exc:  # the run failed: fail its jobs only
            report.failed = True
            for piece in slices:
                _settle(piece.job, exc, failed=True)
            return
        finally:
            self._running = False
            self._on_batch(report)
        for job, value, failed in outcomes:
            _settle(job, value, failed=failed)

    def _work(self, slices: list[Slice], report: RunReport) -> list[tuple[Job, Any, bool]]:
        """Worker thread: one run for all slices, then `finish` for every job this run completed."""
        live = [s for s in slices if not (s.job.future is not None and s.job.future.cancelled())]
        report.images = sum(s.size for s in live)
        started = time.perf_counter()
        results = self._run_batch(live) if live else []
        report.inference_s = time.perf_counter() - started
        if len(results) != len(live):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} slices")
        outcomes = []
        for piece, result in zip(live, results, strict=True):
            piece.job.parts.append(result)
            if piece.last:
                outcomes.append(self._finish_job(piece.job, report))
        return outcomes

    def _finish_job(self, job: Job, report: RunReport) -> tuple[Job, Any, bool]:
        started = time.perf_counter()
        try:
            value = self._finish(job)
        except Exception as exc:
            return job, exc, True
        finally:
            report.encode_s.append(time.perf_counter() - started)
        report.delivered += job.size
        return job, value, False


def _settle(job: Job, value: Any, *, failed: bool) -> None:
    future = job.future
    if future is None or future.done():
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)
