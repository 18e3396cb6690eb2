"""The protocol's errors, transport-free: a kind that each transport maps to its own status
(HTTP: 400 / 401 / 403 / 404 / 408 / 413 / 503 / 500 with `{"error": "message"}`; gRPC:
INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL). An error may carry headers (HTTP) / trailing
metadata (gRPC), e.g. admission's `Retry-After`."""

from __future__ import annotations

from typing import Literal

from service.errors import ServiceError

Kind = Literal[
    "invalid", "unauthenticated", "forbidden", "not_found", "timeout", "too_large", "too_many", "unavailable",
    "internal",
]
MAX_MESSAGE_CHARS = 500

HTTP_STATUS: dict[str, int] = {
    "invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "timeout": 408,
    "too_large": 413,
    "too_many": 429,
    "unavailable": 503,
    "internal": 500,
}
# Our API's statuses that have a kind of their own; other 4xx are `invalid`, other 5xx `internal`.
_KIND_OF_STATUS: dict[int, Kind] = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    413: "too_large",
    429: "too_many",
    503: "unavailable",
}


class ProtocolError(Exception):
    def __init__(self, kind: Kind, message: str, headers: dict[str, str] | None = None) -> None:
        # Messages may quote what a client sent; the bound keeps a huge value from echoing back.
        message = message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.headers = headers or {}


def from_service_error(exc: ServiceError) -> ProtocolError:
    """The registry's, admission's and body reader's errors (our own API's hierarchy) in the
    protocol's kinds, with their headers (Retry-After, Connection: close)."""
    kind = _KIND_OF_STATUS.get(exc.status)
    if kind is None:
        kind = "invalid" if 400 <= exc.status < 500 else "internal"
    return ProtocolError(kind, exc.message, dict(exc.headers))
