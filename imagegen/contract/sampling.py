"""The sampling contract (docs/design.md, "Sampling contract"): seeds and classes -> model feeds -> pixels.

One definition, used by the service (every request), training (sample grids) and evaluation:
- the latent of seed `s` is `Generator(PCG64(s)).standard_normal(latent_dim, float32)`;
- a class not given is `s % num_classes`;
- `n` images from seed `s` are the images of seeds `s .. s+n-1`;
- a float image in [0, 1] becomes uint8 as `round(255 * x)`.

Feeds are built from the inputs a manifest declares (`z`, `label`), not from its family, so a
new family with the same inputs needs no change here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from imagegen.contract.manifest import Manifest

MAX_SEED = 2**63 - 1


def latent(seed: int, dim: int) -> np.ndarray:
    """The latent of one seed: float32 standard normal from PCG64(seed)."""
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(dim, dtype=np.float32)


def latents(seeds: Iterable[int], dim: int) -> np.ndarray:
    """(len(seeds), dim) float32: row i is `latent(seeds[i], dim)`."""
    seeds = list(seeds)
    z = np.empty((len(seeds), dim), dtype=np.float32)
    for row, seed in enumerate(seeds):
        z[row] = latent(seed, dim)
    return z


def default_label(seed: int, num_classes: int) -> int:
    """The class used when none is given: seed % num_classes."""
    return seed % num_classes


def default_labels(seeds: Iterable[int], num_classes: int) -> list[int]:
    return [default_label(s, num_classes) for s in seeds]


def feeds_for(
    inputs: Iterable[str], latent_dim: int, seeds: Sequence[int], labels: Sequence[int]
) -> dict[str, np.ndarray]:
    """Model feeds for items (seeds[i], labels[i]) of a model taking `inputs` (`z` and/or `label`);
    each image depends only on its own seed and label."""
    names = set(inputs)
    feeds: dict[str, np.ndarray] = {}
    if "z" in names:
        feeds["z"] = latents(seeds, latent_dim)
    if "label" in names:
        feeds["label"] = np.asarray(labels, dtype=np.int64)
    return feeds


def build_feeds(manifest: Manifest, seeds: Sequence[int], labels: Sequence[int]) -> dict[str, np.ndarray]:
    """`feeds_for` with a manifest's inputs and latent size."""
    return feeds_for(manifest.inputs, manifest.latent_dim, seeds, labels)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8 `round(255 * x)` (values outside [0, 1] are clipped)."""
    scaled: np.ndarray = np.rint(np.clip(images, 0.0, 1.0) * 255.0)
    return scaled.astype(np.uint8)
