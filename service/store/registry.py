"""The registry: every model of the repository with its state, and the lookups a request makes.

`get(id)` / `resolve(name, dataset)` give a model ready to serve or the error saying why not;
`known(id)` / `find(name, dataset)` whatever its state. The models are put in and taken out by
the lifecycle (service/store/lifecycle.py), one assignment per change, so a request sees the old
version or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from pathlib import Path

from service.errors import ModelUnavailable, UnknownModel
from service.store.names import find_model
from service.store.repository import model_folders
from service.store.served import UNLOADED, IndexEntry, ServedModel

RETRY_SOON = {"Retry-After": "1"}  # a model still loading: retrying helps (a failed one: it does not)


class Registry:
    def __init__(self, models_dir: Path, default_dataset: str, executor: Executor) -> None:
        self.models_dir = models_dir
        self.default_dataset = default_dataset
        self.executor = executor
        self.models: dict[str, ServedModel] = {}
        self.scanned = False  # True once the repository's folders are known (state `loading` or later)
        self.loaded = False  # True once every model has been tried

    def ids(self) -> list[str]:
        return sorted(self.models)

    def get(self, model_id: str) -> ServedModel:
        """The model with this id, ready to serve; UnknownModel / ModelUnavailable otherwise."""
        return usable(self.known(model_id))

    def known(self, model_id: str) -> ServedModel:
        """The model with this id, whatever its state; UnknownModel listing the ids otherwise."""
        served = self.models.get(model_id)
        if served is None:
            self.refuse_while_reading()
            raise UnknownModel(f"unknown model {model_id!r}", models=self.ids())
        return served

    def refuse_while_reading(self) -> None:
        """ModelUnavailable (503, Retry-After) until the start-up scan has read the repository: a
        name not held yet may be a folder not read yet, and a 404 would say it does not exist."""
        if not self.scanned:
            raise ModelUnavailable(
                "the model repository is still being read at start-up; retry shortly",
                headers=RETRY_SOON,
                state="loading",
            )

    def resolve(self, model: str, dataset: str | None = None) -> ServedModel:
        """`model` is an id, or a family resolved (with `dataset`) to its non-baseline model."""
        return usable(self.find(model, dataset))

    def find(self, model: str, dataset: str | None = None) -> ServedModel:
        """Like resolve(), whatever the model's state."""
        self.refuse_while_reading()
        return find_model(self.models, model, dataset, self.default_dataset)

    def ready_ids(self) -> list[str]:
        return [i for i, m in sorted(self.models.items()) if m.state == "ready"]

    def disk_problems(self) -> dict[str, str]:
        """Ready models whose files were deleted or changed on disk since loading, with what happened."""
        return {i: m.disk_problem for i, m in sorted(self.models.items()) if m.disk_problem}

    async def index(self) -> list[IndexEntry]:
        """Every model the registry knows, with its state, and every model folder on disk that it
        does not know yet (state `not_loaded`), sorted by id."""
        loop = asyncio.get_running_loop()
        folders = await loop.run_in_executor(self.executor, model_folders, self.models_dir)
        known = [
            IndexEntry(m.id, m.manifest.version if m.manifest else None, m.state, m.reason)
            for m in self.models.values()
        ]
        new = [IndexEntry(f, None, "not_loaded", "in the repository, not loaded") for f in folders]
        return sorted([*known, *(e for e in new if e.id not in self.models)], key=lambda e: e.id)


def usable(served: ServedModel) -> ServedModel:
    """The model when it is ready; ModelUnavailable saying why otherwise."""
    if served.state == "ready":
        return served
    if served.state == "loading":
        raise ModelUnavailable(
            f"model {served.id!r} is still loading", headers=RETRY_SOON, model=served.id, state="loading"
        )
    if served.state == "unloaded":
        raise ModelUnavailable(f"model {served.id!r} is {UNLOADED}", model=served.id, state="unloaded")
    raise ModelUnavailable(
        f"model {served.id!r} failed to load: {served.reason}", model=served.id, reason=served.reason
    )
