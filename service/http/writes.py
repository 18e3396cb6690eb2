"""One write per response: the connection's transport as uvicorn's request cycles see it, with the
status line and headers held until the body's first bytes (service/http/protocols.py)."""

from __future__ import annotations

import asyncio
from typing import Any

# Below this many body bytes the held headers are joined to the body in one buffer; above it the
# two go out through one writelines call, which spares copying the body.
_JOIN_BELOW = 16 * 1024


class HeadersWithBody:
    """A connection's transport as uvicorn's request cycles see it: the status line and headers
    (a write that starts with b"HTTP/1.1 ", not an interim 100) are held and sent with the next
    write; what is still held at the end of the event-loop iteration, or at close, is sent alone."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) < _JOIN_BELOW:
                self._transport.write(held + data)
            else:
                self._transport.writelines((held, data))
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport's API, as it is
        return getattr(self._transport, name)
