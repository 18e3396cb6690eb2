"""The model families (docs/design.md, "The four model families")."""

from __future__ import annotations

from typing import Literal

Family = Literal["label", "evaluator", "gan", "vae"]
FAMILIES: tuple[Family, ...] = ("label", "evaluator", "gan", "vae")
