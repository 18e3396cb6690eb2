"""The registry: every model of the repository with its state, session and batcher; `get(id)`.

Models load one by one in a worker thread after start-up (so /healthz answers at once and
/readyz reports progress); each becomes `ready` once verified and warmed, or `failed` with
its reason. A failed model never stops the others.

A family request (`model=gan&dataset=emoji`) resolves to that family's own model for the dataset
(`gan-emoji`) or fails naming why; it is never served by a `-seed` baseline or another dataset's
model in its place. While serving, the files of each loaded model are watched (a cheap stat
every `disk_check_interval` seconds, the sha256 recomputed only when size or mtime moved), and a
file deleted or changed on disk is reported in the model's `on_disk` field.

Repository control (Triton's repository API, and SIGHUP): `load_model(id)` verifies and warms the
version on disk off the event loop, then swaps it in with one assignment, so a request sees either
the old version or the new one, never a mix. A version that is no longer served is *retired*: its
batcher keeps running until no request holds it (a `weakref.finalize` on its ServedModel says
when), finishes what it queued, and is dropped with its session. `unload_model(id)` does the same
and waits for it; `rescan()` brings the registry in line with the folder. A version that cannot
be loaded never replaces a ready one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from imagegen.contract.manifest import FAMILIES, MANIFEST_NAME, Manifest, default_model_id, sha256_file
from service.dataplane.admission import Admission
from service.engine.batching import DynamicBatcher, RunReport
from service.engine.generation import Generator
from service.engine.runtime import ModelRuntime, RuntimeOptions
from service.errors import InvalidParameter, ModelLoadError, ModelUnavailable, UnknownModel
from service.metrics import Metrics
from service.settings import Settings
from service.store import repository

log = logging.getLogger("imagegen.registry")

State = Literal["loading", "ready", "failed", "unloaded"]
UNLOADED = "unloaded through the repository API; loading it again brings it back"
RESCAN_TASK = "rescan-repository"


def _class_key(name: str) -> str:
    """Class names match case-insensitively, with spaces, '_' and '-' treated alike."""
    return name.strip().lower().replace("_", " ").replace("-", " ")


Fingerprint = tuple[int, int] | None  # (size, mtime_ns) of a file; None when it is missing


def fingerprint(path: Path) -> Fingerprint:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


@dataclass
class WatchedFile:
    """A file a loaded model came from, as it was when verified."""

    path: Path
    name: str  # relative to the model folder, for messages (never the absolute path)
    seen: Fingerprint

    def check(self, still_same: Any) -> str | None:
        """None while the file is unchanged (or changed back); else what happened to it.
        `still_same(path)` is the expensive check, only run when size or mtime moved."""
        now = fingerprint(self.path)
        if now is None:
            return f"{self.name} was deleted from disk after the model was loaded"
        if now == self.seen:
            return None
        if still_same(self.path):
            self.seen = now  # touched or rewritten with the same content
            return None
        return f"{self.name} changed on disk after the model was loaded"


@dataclass(eq=False)
class ServedModel:
    id: str
    manifest: Manifest | None
    state: State = "loading"
    reason: str | None = None
    provider: str | None = None
    runtime: ModelRuntime | None = None
    generator: Generator | None = None
    batcher: DynamicBatcher | None = None
    class_index: dict[str, int] = field(default_factory=dict)
    watched: list[WatchedFile] = field(default_factory=list)
    # Set when a watched file was deleted or changed; the loaded copy keeps serving until restart.
    disk_problem: str | None = None

    def __post_init__(self) -> None:
        if self.manifest is not None:
            # Built once at load: `class=Ankle boot` costs a dict lookup per request.
            self.class_index = {_class_key(n): i for i, n in enumerate(self.manifest.class_names)}

    def lookup_class(self, name: str) -> int | None:
        return self.class_index.get(_class_key(name))

    def require_manifest(self) -> Manifest:
        """The manifest, which every model past the repository's schema check has (every ready
        model does); RuntimeError for a folder whose manifest did not parse."""
        if self.manifest is None:
            raise RuntimeError(f"model {self.id!r} has no valid manifest: {self.reason}")
        return self.manifest

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"id": self.id, "state": self.state, "reason": self.reason}
        if self.state == "ready":
            info["on_disk"] = self.disk_problem or "ok"
        if self.manifest is not None:
            m = self.manifest
            info |= {
                "family": m.family,
                "dataset": m.dataset,
                "version": m.version,
                "baseline": m.baseline,
                "conditional": m.conditional,
                "provider": self.provider,
                "manifest": m.model_dump(mode="json"),
            }
        return info


@dataclass(frozen=True)
class IndexEntry:
    """One line of the repository index: a model id, the version it serves (or last failed or was
    unloaded with), its state (a ServedModel's, or `not_loaded` for a folder the registry does not
    know yet) and why it is not ready."""

    id: str
    version: int | None
    state: str
    reason: str | None


class Registry:
    def __init__(
        self, settings: Settings, metrics: Metrics, executor: Executor, options: RuntimeOptions
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.executor = executor
        self.options = options
        self.models: dict[str, ServedModel] = {}
        # Which requests may enter, decided before any work (service/dataplane/admission.py).
        self.admission = Admission.from_settings(settings, executor)
        self.loaded = False  # True once every model has been tried
        self._watcher: asyncio.Task[None] | None = None
        # Repository changes (start-up load, load, unload, rescan) happen one at a time.
        self._changes = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # for request_rescan() from a signal
        self._background: set[asyncio.Task[None]] = set()  # rescans and retired versions draining

    # -- start-up and shutdown -------------------------------------------------------------

    async def load(self) -> None:
        """Scan the repository, then load, verify and warm each model in turn (off the event loop)."""
        self._loop = asyncio.get_running_loop()
        async with self._changes:
            await self._load_all()

    async def _load_all(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.settings.models_dir.is_dir():
            log.warning("models dir %s does not exist: no model to serve", self.settings.models_dir)
        entries = await loop.run_in_executor(self.executor, repository.scan, self.settings.models_dir)
        self.add(entries)
        for entry in entries:
            served = self.models[entry.id]
            if entry.error is not None:
                self._fail(served, entry.error)
                continue
            # repository.check() gives both whenever it reports no error
            assert entry.onnx_path is not None and entry.manifest is not None
            try:
                runtime = await loop.run_in_executor(
                    self.executor, ModelRuntime.load, entry.onnx_path, entry.manifest, self.options
                )
            except ModelLoadError as exc:
                self._fail(served, str(exc))
                continue
            self._serve(served, runtime)
            served.watched = _watch_list(entry)
        self.loaded = True
        ready = sum(m.state == "ready" for m in self.models.values())
        log.info("models loaded: %d ready, %d failed", ready, len(self.models) - ready)
        if self.settings.disk_check_interval > 0:
            self._watcher = asyncio.create_task(self._watch_disk(), name="watch-model-files")

    def add(self, entries: list[repository.RepositoryEntry]) -> None:
        """Know these models (state `loading`) before any is loaded, so lookups can name them all."""
        for entry in entries:
            self.models[entry.id] = ServedModel(entry.id, entry.manifest, reason=entry.error)
            self.metrics.model_ready.labels(entry.id).set(0)

    def _fail(self, served: ServedModel, reason: str) -> None:
        served.state, served.reason = "failed", reason
        log.warning("model %s failed to load: %s", served.id, reason)

    def _serve(self, served: ServedModel, runtime: ModelRuntime) -> None:
        s = self.settings
        generator = Generator(runtime)
        observe_metrics, on_queue = self.metrics.batch_observer(served.id, runtime.provider)
        observe_rate = self.admission.observer(served.id)

        def on_batch(report: RunReport) -> None:
            observe_metrics(report)
            observe_rate(report)

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

    async def stop(self) -> None:
        """Finish what the batchers hold, then stop them (retired versions' drains included)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for task in [t for t in self._background if t.get_name() == RESCAN_TASK]:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for served in list(self.models.values()):
            if served.batcher is not None:
                await served.batcher.stop()

    # -- files on disk ------------------------------------------------------------------------

    async def _watch_disk(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.disk_check_interval)
            await loop.run_in_executor(self.executor, self.check_disk)

    def check_disk(self) -> None:
        """Compare each ready model's files with what was loaded; record and log any change."""
        for served in list(self.models.values()):  # a worker thread: the loop may swap models meanwhile
            if served.state != "ready" or served.manifest is None:
                continue
            manifest = served.manifest
            problems = [
                problem
                for watched in served.watched
                if (problem := watched.check(_same_content(manifest, watched.name))) is not None
            ]
            problem = "; ".join(problems) or None
            if problem != served.disk_problem:
                if problem:
                    log.warning("model %s: %s; serving the copy loaded at start-up", served.id, problem)
                else:
                    log.info("model %s: its files on disk match the loaded copy again", served.id)
                served.disk_problem = problem

    def disk_problems(self) -> dict[str, str]:
        """Ready models whose files were deleted or changed on disk since loading, with what happened."""
        return {i: m.disk_problem for i, m in sorted(self.models.items()) if m.disk_problem}

    # -- lookup ------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return sorted(self.models)

    def get(self, model_id: str) -> ServedModel:
        """The model with this id, ready to serve; UnknownModel / ModelUnavailable otherwise."""
        return self._usable(self.known(model_id))

    def known(self, model_id: str) -> ServedModel:
        """The model with this id, whatever its state; UnknownModel listing the ids otherwise."""
        served = self.models.get(model_id)
        if served is None:
            raise UnknownModel(f"unknown model {model_id!r}", models=self.ids())
        return served

    def resolve(self, model: str, dataset: str | None = None) -> ServedModel:
        """`model` is an id, or a family resolved (with `dataset`) to its non-baseline model."""
        return self._usable(self.find(model, dataset))

    def find(self, model: str, dataset: str | None = None) -> ServedModel:
        """Like resolve(), whatever the model's state."""
        if model in self.models:
            served = self.models[model]
            if dataset is not None and served.manifest is not None and served.manifest.dataset != dataset:
                raise InvalidParameter(
                    f"model {model!r} is trained on {served.manifest.dataset!r}, not {dataset!r}",
                    parameter="dataset",
                    allowed=[served.manifest.dataset],
                )
            return served
        return self._family_default(model, dataset or self.settings.default_dataset)

    def _family_default(self, family: str, dataset: str) -> ServedModel:
        """The family's own model for `dataset`: `<family>-<dataset>` when the repository has that
        folder (whatever its state, so a broken one is reported, not replaced), else another
        non-baseline model of that family and dataset. Never a `-seed` baseline."""
        expected = default_model_id(family, dataset)
        if expected in self.models:
            return self.models[expected]
        family_models = [
            m for m in self.models.values() if m.manifest is not None and m.manifest.family == family
        ]
        if not family_models:
            known = sorted({m.manifest.family for m in self.models.values() if m.manifest is not None})
            hint = (
                "no model of that family is loaded"
                if family in FAMILIES
                else "expected a model id or a family"
            )
            raise UnknownModel(f"unknown model {family!r}: {hint}", models=self.ids(), families=known)
        matches = sorted(
            (m for m in family_models if m.require_manifest().dataset == dataset),
            key=lambda m: (m.require_manifest().baseline, m.id),
        )
        if matches and not matches[0].require_manifest().baseline:
            return matches[0]
        if matches:  # only baselines: they answer to their ids, never in place of the family's model
            baselines = [m.id for m in matches]
            raise ModelUnavailable(
                f"family {family!r} has no model for dataset {dataset!r}: {expected} is not in the "
                f"repository (the seed baseline {baselines[0]} is served only by its id)",
                model=expected,
                baselines=baselines,
            )
        raise UnknownModel(
            f"family {family!r} has no model for dataset {dataset!r}",
            models=self.ids(),
            datasets=sorted({m.require_manifest().dataset for m in family_models}),
        )

    def _usable(self, served: ServedModel) -> ServedModel:
        if served.state == "ready":
            return served
        if served.state == "loading":
            raise ModelUnavailable(f"model {served.id!r} is still loading", model=served.id, state="loading")
        if served.state == "unloaded":
            raise ModelUnavailable(f"model {served.id!r} is {UNLOADED}", model=served.id, state="unloaded")
        raise ModelUnavailable(
            f"model {served.id!r} failed to load: {served.reason}", model=served.id, reason=served.reason
        )

    # -- repository control (Triton's repository API, SIGHUP) ------------------------------------

    async def index(self) -> list[IndexEntry]:
        """Every model the registry knows, with its state, and every model folder on disk that it
        does not know yet (state `not_loaded`), sorted by id."""
        loop = asyncio.get_running_loop()
        folders = await loop.run_in_executor(self.executor, model_folders, self.settings.models_dir)
        known = [
            IndexEntry(m.id, m.manifest.version if m.manifest else None, m.state, m.reason)
            for m in self.models.values()
        ]
        new = [IndexEntry(f, None, "not_loaded", "in the repository, not loaded") for f in folders]
        return sorted([*known, *(e for e in new if e.id not in self.models)], key=lambda e: e.id)

    async def load_model(self, model_id: str) -> ServedModel:
        """(Re)load one model from its folder, whatever its state: verify and warm the version on
        disk off the event loop, then swap it in. Requests that already hold the old version finish
        on it; it is released once they have. UnknownModel when no folder has that id;
        ModelLoadError when the version on disk cannot be served (a ready version keeps serving)."""
        async with self._changes:
            loop = asyncio.get_running_loop()
            models_dir = self.settings.models_dir
            folders = await loop.run_in_executor(self.executor, model_folders, models_dir)
            if model_id not in folders:
                raise UnknownModel(
                    f"no model folder {model_id[:100]!r} in the repository; folders: {folders}",
                    models=folders,
                )
            entry = await loop.run_in_executor(self.executor, repository.check, models_dir / model_id)
            return await self._load_entry(entry)

    async def unload_model(self, model_id: str) -> None:
        """Stop serving a model: new requests get ModelUnavailable at once, the ones in flight
        finish, then this returns and the old version's session is released."""
        async with self._changes:
            if model_id not in self.models:
                ids = self.ids()
                raise UnknownModel(f"unknown model {model_id[:100]!r}; models: {ids}", models=ids)
            manifest = self.models[model_id].manifest
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
            loop = asyncio.get_running_loop()
            entries = await loop.run_in_executor(self.executor, repository.scan, self.settings.models_dir)
            on_disk = {entry.id for entry in entries}
            removed = [model_id for model_id in self.ids() if model_id not in on_disk]
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
        """Safe from a signal handler (SIGHUP): schedule rescan() on the registry's event loop."""
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
        served = self.models.get(entry.id)
        if served is None or served.state in ("failed", "loading"):
            return True
        if served.state == "unloaded":
            return False
        return entry.error is not None or entry.manifest != served.manifest

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

    def _serving_version(self, model_id: str) -> int | None:
        served = self.models.get(model_id)
        if served is None or served.state != "ready" or served.manifest is None:
            return None
        return served.manifest.version

    async def _prepare(self, entry: repository.RepositoryEntry) -> ServedModel:
        """A ServedModel for a checked folder: session loaded, verified and warmed in a worker
        thread, batcher started; not yet in the registry. ModelLoadError when it cannot be."""
        if entry.error is not None:
            raise ModelLoadError(entry.error)
        # repository.check() gives both whenever it reports no error
        assert entry.onnx_path is not None and entry.manifest is not None
        loop = asyncio.get_running_loop()
        runtime = await loop.run_in_executor(
            self.executor, ModelRuntime.load, entry.onnx_path, entry.manifest, self.options
        )
        fresh = ServedModel(entry.id, entry.manifest)
        self._serve(fresh, runtime)
        fresh.watched = _watch_list(entry)
        return fresh

    def _load_failed(self, entry: repository.RepositoryEntry, reason: str) -> ModelLoadError:
        """The error of a failed load. A ready version keeps serving, untouched; otherwise the
        model is recorded as failed with the reason."""
        current = self.models.get(entry.id)
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

    def _replace(self, served: ServedModel) -> ServedModel | None:
        """Put `served` in the registry under its id (one assignment: requests see the old or the
        new model, never a mix); the model it replaces, if any."""
        previous = self.models.get(served.id)
        self.models[served.id] = served
        return previous

    def _forget(self, model_id: str) -> ServedModel | None:
        """Take a model out of the registry (its folder is gone) and out of the metrics."""
        self.metrics.model_ready.remove(model_id)
        log.info("model %s: its folder is gone from the repository; unloading it", model_id)
        return self.models.pop(model_id)

    def _retire(self, old: ServedModel | None) -> asyncio.Task[None] | None:
        """Drain a model version the registry no longer serves, in the background; the task, or
        None when it has no batcher. The caller must hold no reference to `old` afterwards."""
        if old is None or old.batcher is None:
            return None
        loop = asyncio.get_running_loop()
        released = asyncio.Event()
        # Set once the last request holding the old version has let go of it.
        weakref.finalize(old, _set_from_any_thread, loop, released).atexit = False
        runtime = weakref.ref(old.runtime) if old.runtime is not None else None
        version = old.manifest.version if old.manifest else 0
        drain = self._drain(old.id, version, old.batcher, runtime, released)
        task = loop.create_task(drain, name=f"drain-{old.id}-v{version}")
        self._keep(task)
        return task

    async def _drain(
        self,
        model_id: str,
        version: int,
        batcher: DynamicBatcher,
        runtime: weakref.ref[ModelRuntime] | None,
        released: asyncio.Event,
    ) -> None:
        """Wait until no request holds the retired version (each has submitted its job to its
        batcher, or never will), let the batcher finish them, then drop it and its session."""
        bound = self.settings.graceful_timeout
        try:
            await asyncio.wait_for(released.wait(), bound)
        except TimeoutError:
            log.warning("model %s version %d: still held by requests after %gs; stopping it anyway",
                        model_id, version, bound)  # fmt: skip
        await batcher.stop()
        del batcher
        await asyncio.sleep(0)  # let the stopped batcher's task callbacks run and let go of it
        session = "released" if runtime is None or runtime() is None else "left to the garbage collector"
        log.info("model %s version %d drained; its session is %s", model_id, version, session)

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a background task until it ends (the loop keeps only weak references)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _watch_list(entry: repository.RepositoryEntry) -> list[WatchedFile]:
    assert entry.manifest is not None and entry.onnx_path is not None
    files = [(entry.directory / MANIFEST_NAME, MANIFEST_NAME), (entry.onnx_path, entry.manifest.onnx.file)]
    return [WatchedFile(path, name, fingerprint(path)) for path, name in files]


def _same_content(manifest: Manifest, name: str) -> Any:
    """The content check for one watched file: the ONNX file's sha256 against the manifest's, or
    the manifest re-read and compared with the one loaded."""

    def same(path: Path) -> bool:
        try:
            if name == MANIFEST_NAME:
                return Manifest.read(path.parent) == manifest
            return sha256_file(path) == manifest.onnx.sha256
        except (OSError, ValueError):
            return False

    return same


def model_folders(models_dir: Path) -> list[str]:
    """The ids of the model folders under `models_dir` (those with a manifest), sorted."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name for p in models_dir.iterdir() if not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
    )


def _set_from_any_thread(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    """A finalizer may run in whichever thread drops the last reference."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(event.set)
