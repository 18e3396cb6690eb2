"""Process memory: give freed heap back to the system after a burst (`MemoryTrimmer`, told by
admission when nothing is in flight) and limit glibc's malloc arenas at start."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any


class MemoryTrimmer:
    """Gives freed heap memory back to the system once the server is idle after a burst.

    glibc keeps freed memory in its arenas (and raises its mmap threshold after large frees, so
    later large buffers come from the heap too): after a burst of large responses, RSS stayed
    high (issue 16, row 5). `malloc_trim(0)` returns it; it runs off the event loop, once the
    server has been idle for `delay_s`, and only after at least `min_bytes` of responses."""

    def __init__(self, executor: Executor | None, delay_s: float = 1.0, min_bytes: int = 8 << 20) -> None:
        self._trim = _malloc_trim()
        self._executor = executor
        self.delay_s = delay_s
        self.min_bytes = min_bytes
        self._since_trim = 0  # response bytes reserved since the last trim
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def saw_bytes(self, count: int) -> None:
        self._since_trim += count
        if self._timer is not None:  # busy again: wait for the next idle moment
            self._timer.cancel()
            self._timer = None

    def idle(self) -> None:
        if self._trim is None or self._since_trim < self.min_bytes or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.delay_s, self._run)

    def _run(self) -> None:
        self._timer = None
        self._since_trim = 0
        self.trims += 1
        asyncio.get_running_loop().run_in_executor(self._executor, self._trim)  # type: ignore[arg-type]


# glibc's mallopt parameter for the arena count (malloc.h); not exported by ctypes.
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """At most `arenas` glibc malloc arenas, set in the process before its threads start: with
    one arena per thread, freed response memory stayed apart and RSS after a burst was 2.2x warm
    for a `pip install .` server (the Docker image set MALLOC_ARENA_MAX=2 in its environment).
    An explicit MALLOC_ARENA_MAX in the environment wins. False where there is no glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def _malloc_trim() -> Callable[[], Any] | None:
    """glibc's malloc_trim(0), or None where there is no glibc (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)
