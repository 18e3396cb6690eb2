"""The protocol's errors, transport-free: a kind that each transport maps to its own status
(HTTP: 400 / 401 / 403 / 404 / 503 / 500 with `{"error": "message"}`; gRPC: INVALID_ARGUMENT,
UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, UNAVAILABLE, INTERNAL)."""

from __future__ import annotations

from typing import Literal

from service.errors import ServiceError

Kind = Literal["invalid", "unauthenticated", "forbidden", "not_found", "unavailable", "internal"]
MAX_MESSAGE_CHARS = 500

HTTP_STATUS: dict[str, int] = {
    "invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "unavailable": 503,
    "internal": 500,
}


class ProtocolError(Exception):
    def __init__(self, kind: Kind, message: str) -> None:
        # Messages may quote what a client sent; the bound keeps a huge value from echoing back.
        message = message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."
        super().__init__(message)
        self.kind = kind
        self.message = message


def from_service_error(exc: ServiceError) -> ProtocolError:
    """The registry's and batcher's errors (our own API's hierarchy) in the protocol's kinds."""
    if exc.status == 404:
        kind: Kind = "not_found"
    elif exc.status == 401:
        kind = "unauthenticated"
    elif exc.status == 503:
        kind = "unavailable"
    elif 400 <= exc.status < 500:
        kind = "invalid"
    else:
        kind = "internal"
    return ProtocolError(kind, exc.message)
