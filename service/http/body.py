"""Reading a JSON request body within limits: media type, size (streamed, so a lying
Content-Length does not matter), time and nesting depth, each refused with its own 4xx.

The time bound matters because uvicorn has none once the headers are in: a client trickling a
body byte by byte held a request open for as long as it liked (only nginx, where deployed, cut
it). Past `timeout_s` the answer is 408 `body_timeout` and the connection is closed.

A body past `OFF_LOOP_JSON_BYTES` is parsed on a worker thread: eight 1 MB bodies parsed on
the event loop held every other client (`/healthz` waited 2.6-4.9 s). The root must be an
object: a scalar root (`null`, `1`, `1e999`) ended in a 500 with a traceback per request."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request

from service.errors import (
    InvalidRequest,
    JsonTooDeep,
    MalformedJson,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
    clip,
)

# Below this a parse takes well under a millisecond: a thread hop would cost more than it saves.
OFF_LOOP_JSON_BYTES = 16 * 1024


class BodyTimeout(ServiceError):
    status, code = 408, "body_timeout"


async def read_json(
    request: Request, *, max_bytes: int, max_depth: int, timeout_s: float | None = None
) -> Any:
    check_json_media_type(request.headers.get("content-type", ""))
    data = await read_body(request, max_bytes, timeout_s)
    if len(data) > OFF_LOOP_JSON_BYTES:
        return await asyncio.to_thread(parse_json_object, data, max_depth)
    return parse_json_object(data, max_depth)


def parse_json_object(data: bytes, max_depth: int) -> dict[str, Any]:
    """A JSON object from `data`, each way it can fail refused with its own 4xx."""
    try:
        value = json.loads(data)
    except RecursionError:
        # The json module recurses per level; ~1,000 levels ended in a 500 (issue 16, row 3).
        raise _too_deep(max_depth) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"body is not valid JSON: {clip(str(exc), 120)}") from None
    if isinstance(value, (list, dict)) and json_depth(value, stop_after=max_depth) > max_depth:
        raise _too_deep(max_depth)
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"the body must be a JSON object ({{...}}), got a JSON {_json_type(value)}",
            allowed="a JSON object",
        )
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "array"


def check_json_media_type(ctype: str) -> None:
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {clip(ctype, 60)!r}", allowed=["application/json"]
        )


async def read_body(request: Request, max_bytes: int, timeout_s: float | None = None) -> bytes:
    """The whole body, refused past `max_bytes` and, when `timeout_s` is given, past that many
    seconds from the first read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body over {max_bytes} bytes", limit=max_bytes)
    if timeout_s is None:
        return await _stream(request, max_bytes)
    try:
        async with asyncio.timeout(timeout_s):
            return await _stream(request, max_bytes)
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {timeout_s:g} s",
            headers={"Connection": "close"},  # the rest of the body must not be read as a request
            timeout_s=timeout_s,
        ) from None


async def _stream(request: Request, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"body over {max_bytes} bytes", limit=max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def json_depth(value: Any, *, stop_after: int) -> int:
    """Deepest array/object nesting of a parsed JSON value, without recursion; stops counting
    once past `stop_after`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > stop_after:
                break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))
    return deepest if isinstance(value, (list, dict)) else 0


def _too_deep(max_depth: int) -> JsonTooDeep:
    return JsonTooDeep(f"JSON nested deeper than {max_depth} levels", max_depth=max_depth)
