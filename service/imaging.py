"""Model output -> bytes: uint8 conversion, nearest-neighbour upscale, grids, PNG and NPY encoding.

Pure numpy + Pillow and deterministic: the same pixels always give the same PNG bytes, which
the ETag and `imagegen sample` rely on.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float32 NCHW in [0, 1] -> uint8 NHWC (rounded, clipped)."""
    scaled = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(scaled.transpose(0, 2, 3, 1))


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of the grid for n images: ceil(sqrt(n)) columns, filled row by row."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def tile(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> one HWC image: tiles without gaps, row-major, unused cells black.

    Tile i sits at row i // cols, column i % cols (cols = ceil(sqrt(n))), so a client crops
    image i at (col * width * scale, row * height * scale).
    """
    n, h, w, c = images.shape
    if n == 1:
        return images[0]
    rows, cols = grid_shape(n)
    canvas = np.zeros((rows * cols, h, w, c), dtype=np.uint8)
    canvas[:n] = images
    return canvas.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of an HWC (or NHWC) uint8 image by an integer factor."""
    if scale == 1:
        return image
    return image.repeat(scale, axis=-3).repeat(scale, axis=-2)


def encode_png(image: np.ndarray) -> bytes:
    """HWC uint8 -> PNG bytes (grayscale L for one channel, RGB for three)."""
    channels = image.shape[-1]
    pixels = image[..., 0] if channels == 1 else image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
