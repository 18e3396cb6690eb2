"""One error hierarchy: each class carries its HTTP status and machine-readable code.

Code below the routes raises these without knowing HTTP; `service.app` renders every one of
them (and FastAPI's own validation / 404 / 405 errors) in docs/design.md's shape::

    {"error": {"code": "...", "message": "...", ...details}}
"""

from __future__ import annotations

from typing import Any

# The longest message an error body carries. Messages quote what the client sent only through
# clip(); this bound is the safety net for any that does not (issue 16, row 2: a 1 MiB value was
# echoed back whole).
MAX_MESSAGE_CHARS = 500


def clip(text: str, limit: int = 60) -> str:
    """A short prefix of client-sent text, for quoting it in an error message."""
    return text if len(text) <= limit else text[:limit] + "..."


class ServiceError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = dict(headers or {})  # its own copy: callers may pass a shared constant

    def body(self) -> dict[str, Any]:
        message = clip(self.message, MAX_MESSAGE_CHARS)
        return {"error": {"code": self.code, "message": message, **self.details}}


class MalformedJson(ServiceError):
    status, code = 400, "malformed_json"


class JsonTooDeep(ServiceError):
    status, code = 400, "json_too_deep"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class UnknownModel(ServiceError):
    status, code = 404, "unknown_model"


class MethodNotAllowed(ServiceError):
    status, code = 405, "method_not_allowed"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class QueryTooLong(ServiceError):
    status, code = 414, "query_too_long"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidParameter(ServiceError):
    """A parameter with a value outside what is allowed (the details say what is)."""

    status, code = 422, "invalid_parameter"


class UnknownParameter(ServiceError):
    status, code = 422, "unknown_parameter"


class ParameterNotSupported(ServiceError):
    """A parameter this model does not take (e.g. `digit=` for an unconditional model)."""

    status, code = 422, "parameter_not_supported"


class LimitExceeded(ServiceError):
    status, code = 422, "limit_exceeded"


class InvalidRequest(ServiceError):
    """A request body that does not match its schema."""

    status, code = 422, "invalid_request"


class ModelUnavailable(ServiceError):
    status, code = 503, "model_unavailable"


class Overloaded(ServiceError):
    status, code = 503, "overloaded"


class ShuttingDown(ServiceError):
    status, code = 503, "shutting_down"


class ClientClosed(ServiceError):
    """The client disconnected before its result was ready (nginx's 499; never seen by a client)."""

    status, code = 499, "client_closed_request"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class ModelLoadError(Exception):
    """A model that cannot be served; the message is the reason shown in /v1/models and /readyz."""
