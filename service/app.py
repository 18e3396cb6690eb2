"""`create_app(settings)`: builds the FastAPI app; nothing is built at import time.

The lifespan starts model loading in the background (so /healthz answers at once and /readyz
says when models are warm) and, at shutdown, lets the batchers finish what they hold before
the inference threads stop.
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

from service.engine.runtime import RuntimeOptions, resolve_provider
from service.http.context import Context
from service.http.handlers import install_error_handlers
from service.http.middleware import RequestContext
from service.http.routers import docs, health, images, latent, metrics, models, oip, repository
from service.metrics import Metrics
from service.settings import Settings
from service.store.registry import Registry

log = logging.getLogger("imagegen.app")

# Every router the app serves, in one visible list: a new topic (e.g. the Open Inference
# Protocol's routers.oip) is one line here. The key is each router's own dependency.
ROUTERS: list[APIRouter] = [
    images.router,
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
    options = RuntimeOptions(
        provider=provider, strict=settings.provider == "cuda", cpu_threads=settings.cpu_threads
    )
    registry = Registry(settings, metrics, executor, options)
    playground = resources.files("service").joinpath("static/index.html").read_bytes()
    ctx = Context(settings, registry, metrics, provider, playground)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("loading models from %s (provider %s)", settings.models_dir, provider)
        loading = asyncio.create_task(registry.load(), name="load-models")
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await registry.stop()
            executor.shutdown(wait=True)
            log.info("stopped")

    app = build_app(lifespan, opentelemetry=settings.opentelemetry)
    app.state.ctx = ctx
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        access_log=settings.access_log,
        max_query_bytes=settings.max_query_bytes,
    )
    return app


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
