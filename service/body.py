"""Reading a JSON request body within limits: media type, size (streamed, so a lying
Content-Length does not matter) and nesting depth, each refused with its own 4xx."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from service.errors import JsonTooDeep, MalformedJson, PayloadTooLarge, UnsupportedMediaType, clip


async def read_json(request: Request, *, max_bytes: int, max_depth: int) -> Any:
    check_json_media_type(request.headers.get("content-type", ""))
    data = await read_body(request, max_bytes)
    try:
        value = json.loads(data)
    except RecursionError:
        # The json module recurses per level; ~1,000 levels ended in a 500 (issue 16, row 3).
        raise _too_deep(max_depth) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"body is not valid JSON: {clip(str(exc), 120)}") from None
    if json_depth(value, stop_after=max_depth) > max_depth:
        raise _too_deep(max_depth)
    return value


def check_json_media_type(ctype: str) -> None:
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {clip(ctype, 60)!r}", allowed=["application/json"]
        )


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body over {max_bytes} bytes", limit=max_bytes)
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
