"""Hostile but well-formed payloads that the hardening tests send, directly and through nginx,
and the probe that measures how long another client waits meanwhile."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable

from PIL import Image


def thin_png(width: int, height: int) -> bytes:
    """A real, complete grey PNG of width x height black pixels (it compresses to a few KB)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress((b"\x00" + b"\x00" * width) * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def digit_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, format="PNG")
    return buf.getvalue()


def multipart(parts: int, boundary: str = "xyz") -> bytes:
    filler = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n' for i in range(parts - 1)
    ).encode()
    file_part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + digit_png()
        + b"\r\n"
    )
    return filler + file_part + f"--{boundary}--\r\n".encode()


def worst_wait_while(
    threads: list[threading.Thread], probe: Callable[[], int], pause_s: float = 0.02
) -> float:
    """Starts `threads`, calls `probe` (which must answer 200) until they end, joins them and
    returns the longest probe: a liveness bound for other clients, not a timing claim."""
    for t in threads:
        t.start()
    worst = 0.0
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert probe() == 200
        worst = max(worst, time.monotonic() - started)
        time.sleep(pause_s)
    for t in threads:
        t.join()
    return worst
