"""The registry: every model of the repository with its state, session and batcher; `get(id)`.

Models load one by one in a worker thread after start-up (so /healthz answers at once and
/readyz reports progress); each becomes `ready` once verified and warmed, or `failed` with
its reason. A failed model never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

from imagegen.contract.manifest import FAMILIES, Manifest
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

    def __post_init__(self) -> None:
        if self.manifest is not None:
            # Built once at load: `class=Ankle boot` costs a dict lookup per request.
            self.class_index = {_class_key(n): i for i, n in enumerate(self.manifest.class_names)}

    def lookup_class(self, name: str) -> int | None:
        return self.class_index.get(_class_key(name))

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"id": self.id, "state": self.state, "reason": self.reason}
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
            try:
                runtime = await loop.run_in_executor(
                    self.executor, ModelRuntime.load, entry.onnx_path, entry.manifest, self.options
                )
            except ModelLoadError as exc:
                self._fail(served, str(exc))
                continue
            self._serve(served, runtime)
        self.loaded = True
        ready = sum(m.state == "ready" for m in self.models.values())
        log.info("models loaded: %d ready, %d failed", ready, len(self.models) - ready)

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
        for served in self.models.values():
            if served.batcher is not None:
                await served.batcher.stop()

    # -- lookup ------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return sorted(self.models)

    def get(self, model_id: str) -> ServedModel:
        """The model with this id, ready to serve; UnknownModel / ModelUnavailable otherwise."""
        served = self.models.get(model_id)
        if served is None:
            raise UnknownModel(f"unknown model {model_id!r}", models=self.ids())
        return self._usable(served)

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
        family_models = [
            m for m in self.models.values() if m.manifest is not None and m.manifest.family == model
        ]
        if not family_models:
            known = sorted({m.manifest.family for m in self.models.values() if m.manifest is not None})
            hint = (
                "no model of that family is loaded"
                if model in FAMILIES
                else "expected a model id or a family"
            )
            raise UnknownModel(f"unknown model {model!r}: {hint}", models=self.ids(), families=known)
        wanted = dataset or self.settings.default_dataset
        matches = [m for m in family_models if m.manifest.dataset == wanted]
        if not matches:
            raise UnknownModel(
                f"family {model!r} has no model for dataset {wanted!r}",
                models=self.ids(),
                datasets=sorted({m.manifest.dataset for m in family_models}),
            )
        # The family's own model before a seed baseline; then the first id, for a stable answer.
        matches.sort(key=lambda m: (m.manifest.baseline, m.id))
        return matches[0]

    def _usable(self, served: ServedModel) -> ServedModel:
        if served.state == "ready":
            return served
        if served.state == "loading":
            raise ModelUnavailable(f"model {served.id!r} is still loading", model=served.id, state="loading")
        raise ModelUnavailable(
            f"model {served.id!r} failed to load: {served.reason}", model=served.id, reason=served.reason
        )
