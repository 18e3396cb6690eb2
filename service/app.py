"""`create_app(settings)`: builds the FastAPI app and everything it serves with, once; nothing is
built at import time.

The store (registry, lifecycle), the data plane with admission, the Open Inference Protocol's
service and the VAE encoders are made here and passed down. The lifespan starts model loading in
the background (so /healthz answers at once and /readyz says when models are warm) and the gRPC
server when IMAGEGEN_GRPC_PORT is set; at shutdown it stops gRPC, lets the batchers finish what
they hold, then stops the worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI

from service.dataplane.admission import Admission
from service.dataplane.keys import KeyFailures
from service.dataplane.plane import DataPlane
from service.engine.latent import Encoders
from service.engine.runtime import RuntimeOptions, resolve_provider
from service.http.client_identity import TrustedProxies
from service.http.context import Context
from service.http.handlers import install_error_handlers
from service.http.middleware import RequestContext
from service.http.routers import docs, health, images, latent, metrics, models, oip, openai, repository
from service.metrics import Metrics
from service.oip.core import InferenceService
from service.settings import Settings
from service.store.lifecycle import Lifecycle
from service.store.registry import Registry

log = logging.getLogger("imagegen.app")

# Every router the app serves, in one visible list: a new topic (e.g. the Open Inference
# Protocol's routers.oip) is one line here. The key is each router's own dependency.
ROUTERS: list[APIRouter] = [
    images.router,
    openai.router,
    models.router,
    health.router,
    metrics.router,
    docs.router,
    docs.pages,
    repository.router,  # before oip.router, whose /v2 fallback would answer its paths
    oip.router,
    latent.router,
]


def create_app(settings: Settings) -> FastAPI:
    """The service app for these settings. Raises runtime.ProviderError for provider=cuda without CUDA."""
    provider = resolve_provider(settings.provider)
    metrics = Metrics()
    # Worker threads for model loading and batch runs; one batch per model runs at a time.
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="imagegen-infer")
    # Request work that is not a model run (upload decoding, the encoder, strips of images).
    workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="imagegen-request")
    options = RuntimeOptions(
        provider=provider, strict=settings.provider == "cuda", cpu_threads=settings.cpu_threads
    )
    registry = Registry(settings.models_dir, settings.default_dataset, executor)
    admission = Admission.from_settings(settings, executor)
    key_failures = KeyFailures(settings.key_failure_limit)
    plane = DataPlane(registry, admission, metrics, workers, settings.access_log, key_failures)
    encoders = Encoders(settings.models_dir, options)
    lifecycle = Lifecycle(registry, settings, metrics, options, plane.batch_hooks, on_retired=encoders.evict)
    inference = InferenceService(registry, settings, plane)
    playground = resources.files("service").joinpath("static/index.html").read_bytes()
    ctx = Context(settings, registry, lifecycle, plane, inference, encoders, metrics, provider, playground)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("loading models from %s (provider %s)", settings.models_dir, provider)
        loading = asyncio.create_task(lifecycle.load(), name="load-models")
        try:
            async with grpc_serving(inference, settings):
                yield
        finally:
            if not loading.done():
                loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await lifecycle.stop()
            executor.shutdown(wait=True)
            workers.shutdown(wait=True)
            log.info("stopped")

    app = build_app(lifespan, opentelemetry=settings.opentelemetry)
    app.state.ctx = ctx
    proxies = TrustedProxies(settings.trusted_proxies)
    app.add_middleware(RequestContext, plane=plane, max_query_bytes=settings.max_query_bytes, proxies=proxies)
    return app


@contextlib.asynccontextmanager
async def grpc_serving(inference: InferenceService, settings: Settings) -> AsyncIterator[None]:
    """The gRPC server, when IMAGEGEN_GRPC_PORT is set, on the app's own event loop: started once
    model loading has begun, stopped before the batchers drain."""
    if settings.grpc_port is None:
        yield
        return
    from service.oip import grpc_server  # grpcio: needed only with the port set
    from service.oip.grpc_health import Health

    health = Health(inference)
    server, _ = await grpc_server.start(inference, settings, settings.grpc_port, health)
    try:
        async with health.refreshing():
            yield
    finally:
        await grpc_server.stop(server)


def build_app(lifespan: Any = None, opentelemetry: bool = False) -> FastAPI:
    """The FastAPI app with every router and the error handlers; create_app adds the state.
    /docs and /openapi.json are the docs router's (behind the key), not FastAPI's defaults."""
    app = FastAPI(
        telemetry={"tracing": opentelemetry, "metrics": opentelemetry, "logs": opentelemetry},
        title="imagegen",
        summary="Small generative image models served from ONNX Runtime with dynamic batching.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    return app
