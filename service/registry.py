"""The registry: every model of the repository with its state, session and batcher; `get(id)`.

Models load one by one in a worker thread after start-up (so /healthz answers at once and
/readyz reports progress); each becomes `ready` once verified and warmed, or `failed` with
its reason. A failed model never stops the others.

A family request (`model=gan&dataset=emoji`) resolves to that family's own model for the dataset
(`gan-emoji`) or fails naming why; it is never served by a `-seed` baseline or another dataset's
model in its place. While serving, the files of each loaded model are watched (a cheap stat
every `disk_check_interval` seconds, the sha256 recomputed only when size or mtime moved), and a
file deleted or changed on disk is reported in the model's `on_disk` field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from imagegen.contract.manifest import FAMILIES, MANIFEST_NAME, Manifest, default_model_id, sha256_file
from service import repository
from service.batching import DynamicBatcher
from service.errors import InvalidParameter, ModelLoadError, ModelUnavailable, UnknownModel
from service.generation import Generator
from service.metrics import Metrics
from service.runtime import ModelRuntime, RuntimeOptions
from service.settings import Settings

log = logging.getLogger("imagegen.registry")

State = Literal["loading", "ready", "failed"]


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


class Registry:
    def __init__(
        self, settings: Settings, metrics: Metrics, executor: Executor, options: RuntimeOptions
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.executor = executor
        self.options = options
        self.models: dict[str, ServedModel] = {}
        self.loaded = False  # True once every model has been tried
        self._watcher: asyncio.Task[None] | None = None

    # -- start-up and shutdown -------------------------------------------------------------

    async def load(self) -> None:
        """Scan the repository, then load, verify and warm each model in turn (off the event loop)."""
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
        on_batch, on_queue = self.metrics.batch_observer(served.id, runtime.provider)
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
        """Finish what the batchers hold, then stop them."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for served in self.models.values():
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
        for served in self.models.values():
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
        raise ModelUnavailable(
            f"model {served.id!r} failed to load: {served.reason}", model=served.id, reason=served.reason
        )


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
