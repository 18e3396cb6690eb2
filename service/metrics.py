"""Prometheus metrics, defined once, on a registry the app owns (names fixed by docs/design.md)."""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.engine.batching import RunReport

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def _seconds(self, name: str, documentation: str, labels: list[str]) -> Histogram:
        """A latency histogram on this registry, with the buckets every one of them shares."""
        return Histogram(name, documentation, labels, buckets=_LATENCY_BUCKETS, registry=self.registry)

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "imagegen_requests_total",
            "HTTP requests by route, model and status.",
            ["route", "model", "status"],
            registry=r,
        )
        self.request_seconds = self._seconds(
            "imagegen_request_seconds", "HTTP request latency in seconds.", ["route", "model"]
        )
        # A request's time in the service is queue wait + inference + encoding, each its own
        # histogram (as Triton separates queue and compute time).
        self.queue_seconds = self._seconds(
            "imagegen_queue_seconds",
            "Seconds a request waited in its model's queue before its first run.",
            ["model"],
        )
        self.inference_seconds = self._seconds(
            "imagegen_inference_seconds",
            "Seconds per successful ONNX Runtime run (inference only, no encoding), by model.",
            ["model", "provider"],
        )
        self.encode_seconds = self._seconds(
            "imagegen_encode_seconds",
            "Seconds to encode one finished request's images (PNG, base64 or NPY).",
            ["model"],
        )
        self.batch_size = Histogram(
            "imagegen_batch_size",
            "Images per ONNX Runtime run.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "imagegen_queue_depth",
            "Images waiting for a run, by model (per worker process under --workers: a pid label).",
            ["model"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.images = Counter(
            "imagegen_images_total",
            "Images delivered, by model (not those of failed runs or cancelled requests).",
            ["model"],
            registry=r,
        )
        self.model_ready = Gauge(
            "imagegen_model_ready",
            "1 when the model is loaded and warmed, else 0 (per worker process under --workers).",
            ["model"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.early_retries_held = Counter(
            "imagegen_early_retries_held_total",
            "Requests held until their client's Retry-After had passed (it came back sooner), by route.",
            ["route"],
            registry=r,
        )
        # Label children are looked up once per (labels) and kept: cheaper on the hot path.
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        key = (route, model, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(*key)
        counter.inc()
        hist = self._latency_children.get((route, model))
        if hist is None:
            hist = self._latency_children[(route, model)] = self.request_seconds.labels(route, model)
        hist.observe(seconds)

    def batch_observer(
        self, model: str, provider: str
    ) -> tuple[Callable[[RunReport], None], Callable[[float], None]]:
        """Hooks for one model's batcher: (on_batch(report), on_queue(images))."""
        queue = self.queue_seconds.labels(model)
        inference = self.inference_seconds.labels(model, provider)
        encode = self.encode_seconds.labels(model)
        sizes = self.batch_size.labels(model)
        images = self.images.labels(model)
        depth = self.queue_depth.labels(model)

        def on_batch(report: RunReport) -> None:
            for wait in report.queue_waits:
                queue.observe(wait)
            if report.failed or report.images == 0:
                return  # a failed or all-cancelled run made nothing to count
            inference.observe(report.inference_s)
            sizes.observe(report.images)
            for seconds in report.encode_s:
                encode.observe(seconds)
            if report.delivered:
                images.inc(report.delivered)

        return on_batch, depth.set

    def render(self) -> bytes:
        # Set by the supervisor of a multi-process server (service/supervisor.py); prometheus_client
        # itself reads it on import to keep every process's values in that folder.
        multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not multiproc_dir:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        whole_server = CollectorRegistry()
        multiprocess.MultiProcessCollector(whole_server, multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(whole_server)
