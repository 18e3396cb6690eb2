"""The lifecycle of the served models: load at start-up, (re)load, swap, drain, unload, rescan.

Models load one by one in a worker thread after start-up (so /healthz answers at once and
/readyz reports progress); each becomes `ready` once verified and warmed, or `failed` with its
reason. A failed model never stops the others.

Repository control (Triton's repository API, and SIGHUP): `load_model(id)` verifies and warms the
version on disk off the event loop, then swaps it in with one assignment, so a request sees either
the old version or the new one, never a mix. A version that is no longer served is *retired*: its
batcher keeps running until no request holds it (a `weakref.finalize` on its ServedModel says
when), finishes what it queued, and is dropped with its session; `on_retired(serial)` lets the
caches of that version (its encoder) go (service/store/drain.py). `unload_model(id)` does the
same and waits for it; `rescan()` brings the registry in line with the folder. A version that
cannot be loaded never replaces a ready one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from service.engine.batching import DynamicBatcher, RunReport
from service.engine.generation import Generator
from service.engine.runtime import ModelRuntime, RuntimeOptions
from service.errors import ModelLoadError, UnknownModel
from service.metrics import Metrics
from service.settings import Settings
from service.store import repository
from service.store.drain import retire
from service.store.registry import Registry
from service.store.served import UNLOADED, ServedModel
from service.store.watcher import DiskWatcher, watch_list

log = logging.getLogger("imagegen.registry")

RESCAN_TASK = "rescan-repository"
# (model id, provider) -> the batcher's (on_batch, on_queue) hooks: metrics and admission's rate.
BatchHooks = Callable[[str, str], tuple[Callable[[RunReport], None], Callable[[float], None]]]


class Lifecycle:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        metrics: Metrics,
        options: RuntimeOptions,
        batch_hooks: BatchHooks,
        on_retired: Callable[[int], None] = lambda serial: None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.executor: Executor = registry.executor
        self.options = options
        self.batch_hooks = batch_hooks
        self.on_retired = on_retired
        self.watcher = DiskWatcher(
            lambda: registry.models.values(), settings.disk_check_interval, self.executor
        )
        # Repository changes (start-up load, load, unload, rescan) happen one at a time.
        self._changes = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # for request_rescan() from a signal
        self._background: set[asyncio.Task[None]] = set()  # rescans and retired versions draining

    # -- start-up and shutdown -------------------------------------------------------------

    async def load(self) -> None:
        """Scan the repository, then load, verify and warm each model in turn (off the event loop)."""
        self._loop = asyncio.get_running_loop()
        async with self._changes:
            models_dir = self.settings.models_dir
            if not models_dir.is_dir():
                log.warning("models dir %s does not exist: no model to serve", models_dir)
            entries = await self._off_loop(repository.scan, models_dir)
            for entry in entries:  # known (state `loading`) before any is loaded, so lookups name them all
                self.registry.models[entry.id] = ServedModel(entry.id, entry.manifest, reason=entry.error)
                self.metrics.model_ready.labels(entry.id).set(0)
            self.registry.scanned = True
            for entry in entries:
                try:
                    self.registry.models[entry.id] = await self._prepare(entry)
                except ModelLoadError as exc:
                    self._fail(self.registry.models[entry.id], str(exc))
            self.registry.loaded = True
        ready = len(self.registry.ready_ids())
        log.info("models loaded: %d ready, %d failed", ready, len(self.registry.models) - ready)
        self.watcher.start()

    async def stop(self) -> None:
        """Finish what the batchers hold, then stop them (retired versions' drains included)."""
        await self.watcher.stop()
        for task in [t for t in self._background if t.get_name() == RESCAN_TASK]:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for served in list(self.registry.models.values()):
            if served.batcher is not None:
                await served.batcher.stop()

    # -- repository control (Triton's repository API, SIGHUP) ------------------------------------

    async def load_model(self, model_id: str) -> ServedModel:
        """(Re)load one model from its folder, whatever its state: verify and warm the version on
        disk off the event loop, then swap it in. Requests that already hold the old version finish
        on it; it is released once they have. UnknownModel when no folder has that id;
        ModelLoadError when the version on disk cannot be served (a ready version keeps serving)."""
        async with self._changes:
            models_dir = self.settings.models_dir
            folders = await self._off_loop(repository.model_folders, models_dir)
            if model_id not in folders:
                raise UnknownModel(
                    f"no model folder {model_id[:100]!r} in the repository; folders: {folders}",
                    models=folders,
                )
            entry = await self._off_loop(repository.check, models_dir / model_id)
            return await self._load_entry(entry)

    async def unload_model(self, model_id: str) -> None:
        """Stop serving a model: new requests get ModelUnavailable at once, the ones in flight
        finish, then this returns and the old version's session is released."""
        async with self._changes:
            if model_id not in self.registry.models:
                ids = self.registry.ids()
                raise UnknownModel(f"unknown model {model_id[:100]!r}; models: {ids}", models=ids)
            manifest = self.registry.models[model_id].manifest
            unloaded = ServedModel(model_id, manifest, state="unloaded", reason=UNLOADED)
            log.info("model %s: unloading, in-flight requests drain first", model_id)
            draining = self._retire(self._replace(unloaded))
            self.metrics.model_ready.labels(model_id).set(0)
            if draining is not None:
                await draining
            log.info("model %s unloaded", model_id)

    async def rescan(self) -> None:
        """Bring the registry in line with the repository on disk: new folders loaded, changed
        versions (and models that had failed) loaded and swapped in, models whose folder is gone
        forgotten after draining. A model unloaded through the API stays unloaded."""
        async with self._changes:
            entries = await self._off_loop(repository.scan, self.settings.models_dir)
            on_disk = {entry.id for entry in entries}
            removed = [model_id for model_id in self.registry.ids() if model_id not in on_disk]
            for model_id in removed:
                self._retire(self._forget(model_id))
            changed = [entry for entry in entries if self._differs(entry)]
            failed = 0
            for entry in changed:
                try:
                    await self._load_entry(entry)
                except ModelLoadError:
                    failed += 1  # logged by _load_entry
            log.info(
                "repository rescanned: %d loaded or swapped in, %d failed, %d removed, %d unchanged",
                len(changed) - failed,
                failed,
                len(removed),
                len(entries) - len(changed),
            )

    def request_rescan(self) -> None:
        """Safe from a signal handler (SIGHUP): schedule rescan() on the event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._start_rescan)

    def _start_rescan(self) -> None:
        log.info("SIGHUP: rescanning the model repository %s", self.settings.models_dir)
        self._keep(asyncio.get_running_loop().create_task(self._rescan_logged(), name=RESCAN_TASK))

    async def _rescan_logged(self) -> None:
        try:
            await self.rescan()
        except Exception:  # a background task: its failure must reach the log, not vanish
            log.exception("rescanning the model repository failed")

    def _differs(self, entry: repository.RepositoryEntry) -> bool:
        """Whether a rescan should (re)load this folder."""
        served = self.registry.models.get(entry.id)
        if served is None or served.state in ("failed", "loading"):
            return True
        if served.state == "unloaded":
            return False
        return entry.error is not None or entry.manifest != served.manifest

    # -- loading one version ------------------------------------------------------------------

    async def _load_entry(self, entry: repository.RepositoryEntry) -> ServedModel:
        try:
            fresh = await self._prepare(entry)
        except ModelLoadError as exc:
            raise self._load_failed(entry, str(exc)) from None
        was = self._serving_version(entry.id)
        self._retire(self._replace(fresh))
        version = fresh.require_manifest().version
        if was is None:
            log.info("model %s: version %d loaded", fresh.id, version)
        else:
            log.info("model %s: version %d swapped in, version %d draining", fresh.id, version, was)
        return fresh

    async def _prepare(self, entry: repository.RepositoryEntry) -> ServedModel:
        """A ServedModel for a checked folder: session loaded, verified and warmed in a worker
        thread, batcher started; not yet in the registry. ModelLoadError when it cannot be."""
        if entry.error is not None:
            raise ModelLoadError(entry.error)
        # repository.check() gives both whenever it reports no error
        assert entry.onnx_path is not None and entry.manifest is not None
        runtime = await self._off_loop(ModelRuntime.load, entry.onnx_path, entry.manifest, self.options)
        fresh = ServedModel(entry.id, entry.manifest, watched=watch_list(entry))
        self._serve(fresh, runtime)
        return fresh

    def _serve(self, served: ServedModel, runtime: ModelRuntime) -> None:
        s = self.settings
        generator = Generator(runtime)
        on_batch, on_queue = self.batch_hooks(served.id, runtime.provider)
        batcher = DynamicBatcher(
            generator.run_batch,
            finish=generator.finish,
            max_batch=s.max_batch,
            max_delay_s=s.max_delay_ms / 1000.0,
            queue_limit=s.queue_limit,
            executor=self.executor,
            on_batch=on_batch,
            on_queue=on_queue,
            wait_alone=s.wait_alone,
        )
        batcher.start()
        served.runtime, served.generator, served.batcher = runtime, generator, batcher
        served.provider = runtime.provider
        served.state, served.reason = "ready", None
        self.metrics.model_ready.labels(served.id).set(1)
        log.info("model %s ready on %s", served.id, runtime.provider)

    def _fail(self, served: ServedModel, reason: str) -> None:
        served.state, served.reason = "failed", reason
        log.warning("model %s failed to load: %s", served.id, reason)

    def _serving_version(self, model_id: str) -> int | None:
        served = self.registry.models.get(model_id)
        if served is None or served.state != "ready" or served.manifest is None:
            return None
        return served.manifest.version

    def _load_failed(self, entry: repository.RepositoryEntry, reason: str) -> ModelLoadError:
        """The error of a failed load. A ready version keeps serving, untouched; otherwise the
        model is recorded as failed with the reason."""
        current = self.registry.models.get(entry.id)
        if current is not None and current.state == "ready":
            version = current.require_manifest().version
            log.warning("model %s: cannot load the version on disk (%s); version %d keeps serving",
                        entry.id, reason, version)  # fmt: skip
            return ModelLoadError(f"{reason}; version {version} keeps serving")
        failed = ServedModel(entry.id, entry.manifest)
        self._fail(failed, reason)
        self._replace(failed)
        self.metrics.model_ready.labels(entry.id).set(0)
        return ModelLoadError(reason)

    # -- swap and drain ---------------------------------------------------------------------------

    def _replace(self, served: ServedModel) -> ServedModel | None:
        """Put `served` in the registry under its id (one assignment: requests see the old or the
        new model, never a mix); the model it replaces, if any."""
        previous = self.registry.models.get(served.id)
        self.registry.models[served.id] = served
        return previous

    def _forget(self, model_id: str) -> ServedModel | None:
        """Take a model out of the registry (its folder is gone) and out of the metrics."""
        self.metrics.model_ready.remove(model_id)
        log.info("model %s: its folder is gone from the repository; unloading it", model_id)
        return self.registry.models.pop(model_id)

    def _retire(self, old: ServedModel | None) -> asyncio.Task[None] | None:
        """Drain a version no longer served, in the background (service/store/drain.py). The
        caller must hold no reference to `old` afterwards."""
        task = retire(old, self.settings.graceful_timeout, self.on_retired)
        if task is not None:
            self._keep(task)
        return task

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a background task until it ends (the loop keeps only weak references)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _off_loop(self, fn: Callable[..., object], *args: object) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
