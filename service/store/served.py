"""What the store knows of one model: `ServedModel` (its state, and once ready its runtime,
generator and batcher) and `IndexEntry` (one line of the repository index)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from imagegen.contract.manifest import Manifest
from service.engine.batching import DynamicBatcher
from service.engine.generation import Generator
from service.engine.runtime import ModelRuntime
from service.store.watcher import WatchedFile

State = Literal["loading", "ready", "failed", "unloaded"]
UNLOADED = "unloaded through the repository API; loading it again brings it back"

# One number per ServedModel ever made: what caches of a model version (its encoder) are keyed by,
# so they hold no reference to it (a held ServedModel would never be seen as drained).
_serials = itertools.count(1)


def class_key(name: str) -> str:
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
    watched: list[WatchedFile] = field(default_factory=list)
    # Set when a watched file was deleted or changed; the loaded copy keeps serving until restart.
    disk_problem: str | None = None
    serial: int = field(default_factory=lambda: next(_serials))

    def __post_init__(self) -> None:
        if self.manifest is not None:
            # Built once at load: `class=Ankle boot` costs a dict lookup per request.
            self.class_index = {class_key(n): i for i, n in enumerate(self.manifest.class_names)}

    def lookup_class(self, name: str) -> int | None:
        return self.class_index.get(class_key(name))

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
                # license, attribution, training data, intended use, limitations; null for a
                # manifest written before model cards
                "card": m.card.model_dump(mode="json") if m.card is not None else None,
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
