"""Model output -> bytes: uint8 conversion, nearest-neighbour upscale, grids, PNG and NPY encoding.

Deterministic: the same pixels always give the same PNG bytes, which the ETag and `imagegen
sample` rely on.

PNG is written here with zlib (signature, IHDR, one IDAT with filter type 0 rows, IEND) rather
than with Pillow's `Image.save`: for a 28x28 image Pillow spent 200-600 us per save in Python
overhead on this 2-core machine -- several times the cost of running the model for that image --
while this writer takes about 40-60 us. Pillow still reads every PNG back in the tests.

Deflate level 1 and one PNG filter per image kind (measured in docs/performance.md, "PNG
encoding"): level 6 cost twice the time of level 1 for 1-3% fewer bytes on 28x28 digits and
7x the time on a 224x224 grid; on RGB the "up" filter (each byte minus the one above) makes
64x64 emoji ~10% smaller than no filter at the same speed, and keeps nearest-neighbour upscales
small (their repeated rows become zeros). Grey digits compress best unfiltered.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from typing import cast

import numpy as np

from imagegen.contract import sampling

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types by channel count: grayscale, grayscale+alpha, RGB, RGBA.
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def to_hwc_uint8(images: np.ndarray) -> np.ndarray:
    """float32 NCHW in [0, 1] -> uint8 NHWC (the contract's rounding and clipping)."""
    scaled = sampling.to_uint8(images)
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
        return cast(np.ndarray, images[0])  # numpy types an integer index as Any
    rows, cols = grid_shape(n)
    canvas = np.zeros((rows * cols, h, w, c), dtype=np.uint8)
    canvas[:n] = images
    return canvas.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of an HWC (or NHWC) uint8 image by an integer factor."""
    if scale == 1:
        return image
    return image.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(image: np.ndarray, level: int = 1) -> bytes:
    """HWC uint8 -> PNG bytes (8-bit grayscale for one channel, RGB for three, +alpha for 2/4)."""
    height, width, channels = image.shape
    rows = filter_rows(image) if channels >= 3 else _unfiltered_rows(image)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (_PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", zlib.compress(rows.data, level)), _IEND)
    )


def _unfiltered_rows(image: np.ndarray) -> np.ndarray:
    """Scanlines with filter type 0 (None): a zero byte, then the row's bytes."""
    height, width, channels = image.shape
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 0] = 0
    rows[:, 1:] = image.reshape(height, width * channels)
    return rows


def filter_rows(image: np.ndarray) -> np.ndarray:
    """Scanlines with filter type 2 (Up): each byte minus the byte above it, modulo 256 (uint8
    arithmetic wraps as PNG requires); the first row is kept as it is (the row above is zeros)."""
    height, width, channels = image.shape
    flat = image.reshape(height, width * channels)
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 0] = 2
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    return rows


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
