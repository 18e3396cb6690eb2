"""The PNG writer and grid layout, checked by decoding with Pillow (as clients do)."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine import imaging
from tests.service.conftest import decode_png


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(28, 28), (64, 64), (5, 9), (1, 1)])
def test_png_round_trips_through_pillow(channels: int, shape: tuple[int, int]) -> None:
    pixels = np.random.default_rng(channels).integers(0, 256, (*shape, channels), dtype=np.uint8)
    data = imaging.encode_png(pixels)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert np.array_equal(decode_png(data), pixels)
    assert imaging.encode_png(pixels) == data  # deterministic bytes


def test_modes_by_channel_count() -> None:
    import io

    from PIL import Image

    for channels, mode in [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")]:
        data = imaging.encode_png(np.zeros((4, 4, channels), dtype=np.uint8))
        assert Image.open(io.BytesIO(data)).mode == mode


def test_to_uint8_rounds_and_clips() -> None:
    images = np.array([-0.5, 0.0, 0.5, 1.0, 2.0], dtype=np.float32).reshape(1, 1, 1, 5)
    assert imaging.to_hwc_uint8(images).ravel().tolist() == [0, 0, 128, 255, 255]


def test_tile_layout_row_major_without_gaps() -> None:
    n, h, w = 5, 2, 3
    images = np.stack([np.full((h, w, 1), i + 1, dtype=np.uint8) for i in range(n)])
    grid = imaging.tile(images)
    rows, cols = imaging.grid_shape(n)
    assert (rows, cols) == (2, 3) and grid.shape == (rows * h, cols * w, 1)
    for i in range(n):
        r, c = divmod(i, cols)
        assert (grid[r * h : (r + 1) * h, c * w : (c + 1) * w] == i + 1).all()
    assert (grid[h:, 2 * w :] == 0).all()  # the unused cell is black


def test_upscale_is_nearest_neighbour() -> None:
    image = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    big = imaging.upscale(image, 3)
    assert big.shape == (6, 9, 1)
    assert np.array_equal(big[::3, ::3], image) and np.array_equal(big[2::3, 2::3], image)
