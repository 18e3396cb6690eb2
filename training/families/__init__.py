"""The four model families, by name. Each module holds `Config` (frozen dataclass with a
`create(variant, **fields)` constructor) and `Model` (a `FamilyModel`)."""

from __future__ import annotations

from types import ModuleType

from training.families import evaluator, gan, label, vae

FAMILIES: dict[str, ModuleType] = {"label": label, "evaluator": evaluator, "gan": gan, "vae": vae}


def get_family(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
