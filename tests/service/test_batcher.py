"""The dynamic batcher on its own: driven through submit() with a small run_batch that records calls.

No test waits on a sleep for the batcher to reach a state: a run that must be in progress is
awaited through the event its run_batch sets, so a loaded machine cannot reorder them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.engine.batching import BatcherStopped, DynamicBatcher, Job, QueueFull, RunReport, Slice
from service.metrics import Metrics


class Recorder:
    """run_batch that returns, per slice, the item numbers it ran; records each run's slices.
    With a gate, each run sets `started` and then holds until the gate opens."""

    def __init__(self, fail_when: str | None = None, gate: threading.Event | None = None) -> None:
        self.runs: list[list[tuple[str, int, int]]] = []
        self.fail_when = fail_when
        self.gate = gate
        self.started = threading.Event()

    async def running(self) -> None:
        """Return once a run is inside run_batch (held by the gate)."""
        assert await asyncio.to_thread(self.started.wait, 10), "no run started"

    def __call__(self, slices: list[Slice]) -> list[list[int]]:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "gate never opened"
        self.runs.append([(s.job.payload, s.start, s.stop) for s in slices])
        if self.fail_when is not None and any(s.job.payload == self.fail_when for s in slices):
            raise RuntimeError("boom")
        return [list(range(s.start, s.stop)) for s in slices]


def _finish(job: Job) -> list[int]:
    return [i for part in job.parts for i in part]


def _batcher(run, **kw) -> DynamicBatcher:
    opts = {"max_batch": 8, "max_delay_s": 0.05, "queue_limit": 64} | kw
    return DynamicBatcher(run, finish=_finish, **opts)


def test_concurrent_jobs_share_a_run_and_keep_their_order() -> None:
    async def main() -> None:
        rec = Recorder()
        b = _batcher(rec)
        b.start()
        futures = [b.submit(Job(size=2, payload=name)) for name in "abc"]
        results = await asyncio.gather(*futures)
        await b.stop()
        assert results == [[0, 1]] * 3
        assert rec.runs == [[("a", 0, 2), ("b", 0, 2), ("c", 0, 2)]]

    asyncio.run(main())


def test_a_large_job_spans_runs_of_max_batch_images() -> None:
    async def main() -> None:
        rec = Recorder()
        b = _batcher(rec, max_batch=4)
        b.start()
        big, small = b.submit(Job(size=10, payload="big")), b.submit(Job(size=1, payload="small"))
        assert await big == list(range(10))
        assert await small == [0]
        await b.stop()
        assert [sum(stop - start for _, start, stop in run) for run in rec.runs] == [4, 4, 3]
        assert rec.runs[-1] == [("big", 8, 10), ("small", 0, 1)]

    asyncio.run(main())


def test_full_batch_runs_without_waiting_for_the_delay() -> None:
    async def main() -> None:
        rec = Recorder()
        b = _batcher(rec, max_batch=2, max_delay_s=60)
        b.start()
        assert await asyncio.wait_for(b.submit(Job(size=2, payload="x")), 10) == [0, 1]
        await b.stop()

    asyncio.run(main())


def test_queue_bound_refuses_instead_of_waiting() -> None:
    async def main() -> None:
        gate = threading.Event()
        rec = Recorder(gate=gate)
        b = _batcher(rec, max_batch=2, queue_limit=3, max_delay_s=0)
        b.start()
        first = b.submit(Job(size=2, payload="a"))
        await rec.running()  # the first run is held by the gate; the queue is empty
        queued = b.submit(Job(size=3, payload="b"))
        with pytest.raises(QueueFull):
            b.submit(Job(size=1, payload="c"))
        gate.set()
        assert await first == [0, 1] and await queued == [0, 1, 2]
        await b.stop()

    asyncio.run(main())


def test_a_failing_run_fails_only_its_jobs() -> None:
    async def main() -> None:
        gate = threading.Event()
        rec = Recorder(fail_when="bad", gate=gate)
        b = _batcher(rec, max_batch=2, max_delay_s=0)
        b.start()
        first = b.submit(Job(size=2, payload="ok1"))
        await rec.running()
        bad, mate = b.submit(Job(size=1, payload="bad")), b.submit(Job(size=1, payload="mate"))
        later = b.submit(Job(size=2, payload="ok2"))
        gate.set()
        assert await first == [0, 1]
        with pytest.raises(RuntimeError):
            await bad
        with pytest.raises(RuntimeError):
            await mate  # shared the failing run
        assert await later == [0, 1]
        await b.stop()

    asyncio.run(main())


def test_cancelled_jobs_are_skipped() -> None:
    async def main() -> None:
        gate = threading.Event()
        rec = Recorder(gate=gate)
        b = _batcher(rec, max_batch=2, max_delay_s=0)
        b.start()
        first = b.submit(Job(size=2, payload="first"))
        await rec.running()
        gone = b.submit(Job(size=2, payload="gone"))
        kept = b.submit(Job(size=1, payload="kept"))
        gone.cancel()
        gate.set()
        assert await first == [0, 1] and await kept == [0]
        await b.stop()
        assert all(name != "gone" for run in rec.runs for name, _, _ in run)
        assert b.queued == 0

    asyncio.run(main())


def test_stop_finishes_queued_jobs_then_refuses() -> None:
    async def main() -> None:
        b = _batcher(Recorder(), max_delay_s=30)
        b.start()
        pending = b.submit(Job(size=1, payload="p"))
        await b.stop()
        assert pending.done() and pending.result() == [0]
        with pytest.raises(BatcherStopped):
            b.submit(Job(size=1, payload="late"))

    asyncio.run(main())


def test_observation_hooks() -> None:
    async def main() -> None:
        batches: list[int] = []
        depths: list[int] = []
        b = DynamicBatcher(
            Recorder(),
            finish=_finish,
            max_batch=4,
            max_delay_s=0.01,
            queue_limit=10,
            on_batch=lambda report: batches.append(report.images),
            on_queue=depths.append,
        )
        b.start()
        await asyncio.gather(b.submit(Job(size=3, payload="a")), b.submit(Job(size=3, payload="b")))
        await b.stop()
        assert sum(batches) == 6 and max(batches) <= 4
        assert max(depths) == 6 and depths[-1] == 0

    asyncio.run(main())


def test_a_lone_job_does_not_wait_for_the_delay() -> None:
    async def main() -> None:
        rec = Recorder()
        b = _batcher(rec, max_delay_s=60)
        b.start()
        assert await asyncio.wait_for(b.submit(Job(size=1, payload="alone")), 10) == [0]
        # Jobs that come together still wait for company (here: they are already together).
        together = [b.submit(Job(size=1, payload=name)) for name in "xy"]
        b_stop = asyncio.create_task(b.stop())  # stop flushes without waiting out the delay
        assert await asyncio.gather(*together) == [[0], [0]]
        await b_stop
        assert rec.runs[-1] == [("x", 0, 1), ("y", 0, 1)]

    asyncio.run(main())


def test_one_request_after_another_does_not_wait_for_the_delay() -> None:
    """A single client sending back to back: each job finds the batcher idle and runs at once,
    although it comes well within max_delay of the one before it."""

    async def main() -> None:
        rec = Recorder()
        b = _batcher(rec, max_delay_s=60)
        b.start()
        for name in "abc":
            assert await asyncio.wait_for(b.submit(Job(size=1, payload=name)), 10) == [0]
        await b.stop()
        assert [run[0][0] for run in rec.runs] == ["a", "b", "c"]

    asyncio.run(main())


def test_reports_split_queue_inference_and_encoding_and_count_only_delivered_images() -> None:
    """A failed run and a cancelled job deliver nothing; each report says what its run did."""

    async def main() -> None:
        gate = threading.Event()
        rec = Recorder(fail_when="bad", gate=gate)
        reports: list[RunReport] = []
        b = _batcher(rec, max_batch=2, max_delay_s=0, on_batch=reports.append)
        b.start()
        first = b.submit(Job(size=2, payload="ok"))
        await rec.running()
        bad, mate = b.submit(Job(size=1, payload="bad")), b.submit(Job(size=1, payload="mate"))
        gone, kept = b.submit(Job(size=2, payload="gone")), b.submit(Job(size=1, payload="kept"))
        gone.cancel()
        gate.set()
        await first
        for failed in (bad, mate):
            with pytest.raises(RuntimeError):
                await failed
        assert await kept == [0]
        await b.stop()
        ok, failed_run, last = reports
        assert (ok.images, ok.delivered, ok.failed, len(ok.encode_s), len(ok.queue_waits)) == (
            2,
            2,
            False,
            1,
            1,
        )
        assert (failed_run.failed, failed_run.delivered, failed_run.encode_s) == (True, 0, [])
        assert (last.images, last.delivered, len(last.encode_s)) == (1, 1, 1)  # "gone" was not run
        assert all(r.inference_s >= 0 and all(w >= 0 for w in r.queue_waits) for r in reports)

    asyncio.run(main())


def test_metrics_count_images_and_runs_of_successful_work_only() -> None:
    """imagegen_images_total and the inference histogram skip failed runs and cancelled jobs;
    queue wait is observed for every job that reached a run."""
    metrics = Metrics()
    on_batch, _ = metrics.batch_observer("m", "cpu")
    on_batch(RunReport(images=3, inference_s=0.01, encode_s=[0.001, 0.002], delivered=3, queue_waits=[0.1]))
    on_batch(RunReport(images=4, failed=True, inference_s=0.5, queue_waits=[0.2, 0.3]))
    on_batch(RunReport(images=0, queue_waits=[]))  # every job of the run was cancelled

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert value("imagegen_images_total", model="m") == 3
    assert value("imagegen_inference_seconds_count", model="m", provider="cpu") == 1
    assert value("imagegen_inference_seconds_sum", model="m", provider="cpu") == pytest.approx(0.01)
    assert value("imagegen_batch_size_count", model="m") == 1
    assert value("imagegen_encode_seconds_count", model="m") == 2
    assert value("imagegen_queue_seconds_count", model="m") == 3
