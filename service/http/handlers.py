"""One error shape for everything: our ServiceErrors, FastAPI's validation errors, routing
404/405 and crashes all render as `{"error": {"code", "message", ...}}`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ServiceError,
    clip,
)

log = logging.getLogger("imagegen.app")

# Validation stops reporting after this many errors: the client learns what to fix first, and a
# body of 340,000 bad items does not turn into a 60 MB answer (issue 16, row 2).
MAX_REPORTED_ERRORS = 5
M = TypeVar("M", bound=BaseModel)


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def validated(model: type[M], body: Any) -> M:
    """A parsed JSON body as `model`, or 422 `invalid_request` with the first few errors."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            "request body does not match the schema", **validation_errors(exc.errors())
        ) from None


def validation_errors(errors: Sequence[Any]) -> dict[str, Any]:
    """The first few pydantic errors as `{"errors": [{"loc", "msg", "type"}]}`, without the
    input values (a client knows what it sent; echoing it back is how bodies balloon)."""
    shown = [
        {
            "loc": [clip(p, 60) if isinstance(p, str) else p for p in e.get("loc", ())],
            "msg": clip(str(e.get("msg", "")), 200),
            "type": e.get("type", ""),
        }
        for e in errors[:MAX_REPORTED_ERRORS]
    ]
    details: dict[str, Any] = {"errors": shown}
    if len(errors) > MAX_REPORTED_ERRORS:
        details["more_errors"] = len(errors) - MAX_REPORTED_ERRORS
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = InvalidRequest("request does not match the API", **validation_errors(exc.errors()))
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = clip(request.url.path, 100)
        if exc.status_code == 404:
            err: ServiceError = NotFound(f"no route {path}", path=path)
        elif exc.status_code == 405:
            err = MethodNotAllowed(
                f"{request.method} is not allowed on {path}", headers=dict(exc.headers or {})
            )
        else:
            err = ServiceError(clip(str(exc.detail), 200))
            err.status, err.code = exc.status_code, f"http_{exc.status_code}"
        return error_response(err)
