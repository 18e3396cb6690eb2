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

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import InvalidRequest, MethodNotAllowed, NotFound, ServiceError
from service.metrics import Metrics
from service.middleware import RequestContext
from service.registry import Registry
from service.routes import Context, build_router, service_error_response
from service.runtime import RuntimeOptions, resolve_provider
from service.settings import Settings

log = logging.getLogger("imagegen.app")


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

    app = FastAPI(
        title="imagegen",
        summary="Small generative image models served from ONNX Runtime with dynamic batching.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.include_router(build_router())
    _install_error_handlers(app)
    app.add_middleware(RequestContext, metrics=metrics, access_log=settings.access_log)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """One error shape for everything: ours, FastAPI's validation errors, routing 404/405, crashes."""

    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return service_error_response(InvalidRequest("request does not match the API", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: ServiceError = NotFound(f"no route {request.url.path}", path=request.url.path)
        elif exc.status_code == 405:
            err = MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}", headers=dict(exc.headers or {})
            )
        else:
            err = ServiceError(str(exc.detail))
            err.status, err.code = exc.status_code, f"http_{exc.status_code}"
        return service_error_response(err)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return service_error_response(ServiceError("internal error; see the server log"))
