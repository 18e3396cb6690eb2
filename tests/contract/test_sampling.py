"""The sampling contract, pinned once: the latent of seed s is PCG64(s)'s first float32 normals."""

from __future__ import annotations

import numpy as np

from imagegen.contract.sampling import MAX_SEED, default_label, feeds_for, latent, latents, to_uint8


def test_latent_is_pcg64_standard_normal() -> None:
    expected = np.random.Generator(np.random.PCG64(42)).standard_normal(64, dtype=np.float32)
    np.testing.assert_array_equal(latent(42, 64), expected)
    # a few literal values, so a change in numpy's generator would show here too
    np.testing.assert_allclose(latent(0, 3), [1.1176, -1.3871, -0.4266], atol=5e-4)


def test_latents_row_i_is_the_latent_of_seed_i() -> None:
    z = latents([5, 6, MAX_SEED], 16)
    assert z.shape == (3, 16) and z.dtype == np.float32
    np.testing.assert_array_equal(z[1], latent(6, 16))
    np.testing.assert_array_equal(z[2], latent(MAX_SEED, 16))


def test_default_label_cycles_through_classes() -> None:
    assert [default_label(s, 10) for s in (0, 9, 10, 23)] == [0, 9, 0, 3]


def test_feeds_follow_the_declared_inputs() -> None:
    both = feeds_for(("z", "label"), 8, [1, 2], [3, 4])
    assert set(both) == {"z", "label"} and both["label"].dtype == np.int64
    assert set(feeds_for(("label",), 0, [1], [3])) == {"label"}
    assert set(feeds_for(("z",), 8, [1], [0])) == {"z"}


def test_to_uint8_rounds_and_clips() -> None:
    x = np.array([-0.5, 0.0, 0.5, 1 / 255 * 0.49, 1.0, 2.0], dtype=np.float32)
    assert to_uint8(x).tolist() == [0, 0, 128, 0, 255, 255]
