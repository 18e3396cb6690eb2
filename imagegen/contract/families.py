"""The model families (DESIGN.md, "The four model families")."""

from __future__ import annotations

from typing import Literal

Family = Literal["label", "evaluator", "gan", "vae"]
FAMILIES: tuple[Family, ...] = ("label", "evaluator", "gan", "vae")

# Families whose model takes a latent z (every one but `label`, which maps a class to one image).
LATENT_FAMILIES: tuple[Family, ...] = ("evaluator", "gan", "vae")
