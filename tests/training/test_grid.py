"""Real-image reference grids: the same layout as a model's sample grid (rows x classes)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.grid import main, real_grid_images


def test_real_grid_puts_class_c_in_column_c():
    labels = np.repeat(np.arange(3), 4)  # 4 images of each of 3 classes
    idx = real_grid_images(labels, 3, rows=2)
    assert labels[idx].reshape(2, 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert len(set(idx.tolist())) == 6  # no image twice
    with pytest.raises(ValueError, match="every class needs 5 images"):
        real_grid_images(labels, 3, rows=5)


def test_real_grid_of_the_committed_emoji(emoji_dir, tmp_path, capsys):
    out = tmp_path / "real.png"
    assert main([str(emoji_dir), "--out", str(out), "--rows", "1"]) == 0
    image = Image.open(out)
    # 9 categories of 64x64, 2px padding
    assert image.mode == "RGB" and image.size == (9 * 66 + 2, 1 * 66 + 2)
    assert "smileys-emotion" in capsys.readouterr().out
