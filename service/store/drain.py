"""Retiring a model version the registry no longer serves: it drains in the background.

Its batcher keeps running until no request holds the version (a `weakref.finalize` on its
ServedModel says when; bounded by the graceful timeout), finishes what it queued, and is dropped
with its session; `on_retired(serial)` then lets the caches of that version go (its encoder).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from service.engine.batching import DynamicBatcher
from service.engine.runtime import ModelRuntime
from service.store.served import ServedModel

log = logging.getLogger("imagegen.registry")


def retire(
    old: ServedModel | None, bound_s: float, on_retired: Callable[[int], None]
) -> asyncio.Task[None] | None:
    """Start draining `old`; the task, or None when it has no batcher. The caller must hold no
    reference to `old` afterwards (and must keep the task until it ends)."""
    if old is None or old.batcher is None:
        return None
    loop = asyncio.get_running_loop()
    released = asyncio.Event()
    # Set once the last request holding the old version has let go of it.
    weakref.finalize(old, _set_from_any_thread, loop, released).atexit = False
    runtime = weakref.ref(old.runtime) if old.runtime is not None else None
    version = old.manifest.version if old.manifest else 0
    drain = _drain(old.id, version, old.serial, old.batcher, runtime, released, bound_s, on_retired)
    return loop.create_task(drain, name=f"drain-{old.id}-v{version}")


async def _drain(
    model_id: str,
    version: int,
    serial: int,
    batcher: DynamicBatcher,
    runtime: weakref.ref[ModelRuntime] | None,
    released: asyncio.Event,
    bound_s: float,
    on_retired: Callable[[int], None],
) -> None:
    """Wait until no request holds the retired version (each has submitted its job to its
    batcher, or never will), let the batcher finish them, then drop it and its sessions."""
    try:
        await asyncio.wait_for(released.wait(), bound_s)
    except TimeoutError:
        log.warning("model %s version %d: still held by requests after %gs; stopping it anyway",
                    model_id, version, bound_s)  # fmt: skip
    await batcher.stop()
    del batcher
    on_retired(serial)
    await asyncio.sleep(0)  # let the stopped batcher's task callbacks run and let go of it
    session = "released" if runtime is None or runtime() is None else "left to the garbage collector"
    log.info("model %s version %d drained; its session is %s", model_id, version, session)


def _set_from_any_thread(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    """A finalizer may run in whichever thread drops the last reference."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(event.set)
