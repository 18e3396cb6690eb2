"""Whole HTTP/1.1 answers in our JSON error shape that the protocol classes (protocols.py) write
straight to the transport, for connections refused before any request reaches the app."""

from __future__ import annotations

import json


def _canned(status: bytes, code: str, message: str, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 response in our JSON error shape, written straight to the transport."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\n"
        + b"".join(h + b"\r\n" for h in headers)
    )
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


REFUSAL = _canned(
    b"503 Service Unavailable", "too_many_connections",
    "the server is at its connection limit; retry shortly", b"retry-after: 1", b"connection: close",
)  # fmt: skip
CLIENT_REFUSAL = _canned(
    b"503 Service Unavailable", "too_many_connections",
    "this client has too many open connections (IMAGEGEN_MAX_CLIENT_CONNECTIONS); reuse or close some",
    b"retry-after: 1", b"connection: close",
)  # fmt: skip
HEADERS_TOO_LARGE = _canned(
    b"431 Request Header Fields Too Large", "headers_too_large",
    "the request line and headers are over IMAGEGEN_MAX_HEADER_BYTES", b"connection: close",
)  # fmt: skip
# What the HTTP parser refuses (a request line or headers past its ~128 KB limit, bad syntax)
# gets our error shape instead of uvicorn's plain text; the parser's message is not echoed.
UNPARSABLE = _canned(
    b"400 Bad Request", "bad_request",
    "the request line or headers could not be parsed (too long or malformed); "
    "query strings may be at most IMAGEGEN_MAX_QUERY_BYTES", b"connection: close",
)  # fmt: skip
