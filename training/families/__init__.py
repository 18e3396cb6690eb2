"""The four model families, by name (the contract's `imagegen.contract.families.FAMILIES`).
Each module is a `Family`: `Config` (a frozen dataclass with a `create(variant, **fields)`
constructor), `Model` (a `FamilyModel`) and `SAMPLING_FIELDS`."""

from __future__ import annotations

import dataclasses
from typing import Any

from training.families import evaluator, gan, label, vae
from training.families.base import Family

FAMILIES: dict[str, Family] = {"label": label, "evaluator": evaluator, "gan": gan, "vae": vae}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def parse_overrides(family: str, items: list[str]) -> dict[str, Any]:
    """`--set width=8 --set lr=1e-3` typed by the family's config fields."""
    cfg_fields = {f.name: f for f in dataclasses.fields(get_family(family).Config)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in cfg_fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(cfg_fields)}")
        kind = str(cfg_fields[key].type)
        if kind == "bool":
            out[key] = value.lower() in ("1", "true", "yes")
        elif kind == "int":
            out[key] = int(value)
        elif kind == "float":
            out[key] = float(value)
        else:
            out[key] = value
    return out
