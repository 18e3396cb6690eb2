"""Sample grids: fixed inputs (rows = seeds, columns = classes) and a PNG writer.

Latents follow the service's sampling contract (DESIGN.md): the latent of seed `s` is
`Generator(PCG64(s)).standard_normal(latent_dim, float32)`, so a grid drawn in training, from
the exported ONNX model and from the service show the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def latent_for_seed(seed: int, latent_dim: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(latent_dim, dtype=np.float32)


def grid_inputs(
    inputs: tuple[str, ...], latent_dim: int, num_classes: int, rows: int = 8, max_cols: int = 10
) -> tuple[dict[str, np.ndarray], int]:
    """Inputs for a grid and its column count. Conditional: row r uses seed r for every class
    column. Unconditional: 10 columns, cell (r, c) uses seed r*10 + c. Label-only models
    (deterministic) get one row."""
    conditional = "label" in inputs
    cols = min(num_classes, max_cols) if conditional else max_cols
    if "z" not in inputs:
        rows = 1
    seeds, labels = [], []
    for r in range(rows):
        for c in range(cols):
            seeds.append(r if conditional else r * cols + c)
            labels.append(c)
    feeds: dict[str, np.ndarray] = {}
    if "z" in inputs:
        feeds["z"] = np.stack([latent_for_seed(s, latent_dim) for s in seeds])
    if conditional:
        feeds["label"] = np.asarray(labels, dtype=np.int64)
    return feeds, cols


def save_grid(images: np.ndarray, cols: int, path: Path | str, scale: int = 1, pad: int = 2) -> Path:
    """images: float (N, C, H, W) in [0, 1] -> one PNG, row-major, white padding."""
    n, ch, h, w = images.shape
    rows = -(-n // cols)
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        img = images[i].transpose(1, 2, 0)
        if ch == 1:
            img = np.repeat(img, 3, axis=2)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = img[:, :, :3]
    pil = Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)
    return path
