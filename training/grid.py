"""Sample grids: fixed inputs (rows = seeds, columns = classes) and a PNG writer.

Feeds come from the sampling contract (`imagegen.contract.sampling`), so a grid drawn in
training, from the exported ONNX model and from the service show the same images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from imagegen.contract.sampling import feeds_for, to_uint8
from training.data import load_image_folder, split_holdout


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
    return feeds_for(inputs, latent_dim, seeds, labels), cols


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
    pil = Image.fromarray(to_uint8(canvas))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)
    return path


def real_grid_images(labels: np.ndarray, num_classes: int, rows: int = 8, seed: int = 0) -> np.ndarray:
    """Indices of real images laid out like a sample grid: row r, column c holds a random image
    of class c (seeded), so a model's grid can be read beside what its classes look like."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:rows] for c in range(num_classes)]
    if min(len(p) for p in picks) < rows:
        raise ValueError(f"every class needs {rows} images for a {rows}-row grid")
    return np.stack(picks, axis=1).reshape(-1)  # row-major: (rows, classes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.grid",
        description="Draw a grid of real held-out images of an image folder, one column per class.",
    )
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=int, default=8)
    args = p.parse_args(argv)
    # the held-out split is what `imagegen evaluate` compares generated images with
    _, held = split_holdout(load_image_folder(args.folder))
    idx = real_grid_images(held.labels, held.num_classes, args.rows)
    save_grid(held.images[idx].astype(np.float32) / 255.0, held.num_classes, args.out)
    print(f"{args.out}: {args.rows} x {held.num_classes} held-out images ({', '.join(held.class_names)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
