"""The sampling contract (DESIGN.md): seeds and classes -> the feeds a model declares.

The service knows inputs, not families: `z` is built when the manifest declares it, `label`
when it declares that, so a new family with the same inputs needs no change here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.manifest import Manifest

MAX_SEED = 2**63 - 1


def latent(seed: int, dim: int) -> np.ndarray:
    """The latent of one seed: float32 standard normal from PCG64(seed)."""
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(dim, dtype=np.float32)


def default_label(seed: int, num_classes: int) -> int:
    """The class used when none is given: seed % num_classes."""
    return seed % num_classes


def build_feeds(manifest: Manifest, seeds: Sequence[int], labels: Sequence[int]) -> dict[str, np.ndarray]:
    """Model feeds for items (seeds[i], labels[i]); each image depends only on its own seed and label."""
    feeds: dict[str, np.ndarray] = {}
    if "z" in manifest.inputs:
        z = np.empty((len(seeds), manifest.latent_dim), dtype=np.float32)
        for row, seed in enumerate(seeds):
            z[row] = latent(seed, manifest.latent_dim)
        feeds["z"] = z
    if "label" in manifest.inputs:
        feeds["label"] = np.asarray(labels, dtype=np.int64)
    return feeds
