"""DiffAugment for the discriminator: on real emoji, shapes and ranges kept, content moved or
blanked as documented, gradients reach the generator, and the gan trains with it on."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tests.training.test_families import _lowers_loss, tiny_model
from training.data import load_dataset
from training.families.augment import augment, cutout, parse_policy, translate
from training.families.base import to_signed


@pytest.fixture(scope="module")
def emoji(emoji_dir):
    ds = load_dataset("imagefolder", emoji_dir)
    return to_signed(torch.from_numpy(ds.as_float())), torch.from_numpy(ds.labels)


def test_translation_shifts_each_image_by_at_most_an_eighth_and_pads_with_its_edge(emoji):
    x, _ = emoji
    torch.manual_seed(0)
    moved = translate(x)
    assert moved.shape == x.shape
    size, limit = x.shape[-1], x.shape[-1] // 8
    # the edge pixels repeat outward, so an emoji on white stays on white (no grey frame)
    padded = F.pad(x, (limit, limit, limit, limit), mode="replicate")
    shifts = []
    for i, shifted in enumerate(moved):
        found = [
            (dy, dx)
            for dy in range(2 * limit + 1)
            for dx in range(2 * limit + 1)
            if torch.equal(shifted, padded[i, :, dy : dy + size, dx : dx + size])
        ]
        assert found, f"image {i} is not a shift of the original within 1/8 of its size"
        shifts.append(found[0])
    assert len(set(shifts)) > 5, "every image got the same shift"


def test_cutout_blanks_one_half_size_square_per_image(emoji):
    x, _ = emoji
    torch.manual_seed(0)
    blanked = cutout(x)
    changed = (blanked != x).any(dim=1)  # (B, H, W)
    zeroed = (blanked == 0).all(dim=1)
    side = x.shape[-1] // 2
    for mask, zeros in zip(changed, zeroed, strict=True):
        assert torch.equal(mask, mask & zeros), "cutout changed pixels to something other than 0"
        rows, cols = zeros.any(dim=1).nonzero(), zeros.any(dim=0).nonzero()
        assert int(rows.max() - rows.min()) + 1 <= side and int(cols.max() - cols.min()) + 1 <= side
    assert int(zeroed.sum()) >= 0.5 * len(x) * side * side  # most squares land on non-grey pixels


def test_augment_is_differentiable_and_random_per_image(emoji):
    x, _ = emoji
    fake = x.clone().requires_grad_(True)
    out = augment(fake, parse_policy("translation,cutout"))
    out.square().sum().backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
    twice = augment(x[:1].expand(16, -1, -1, -1), ("translation", "cutout"))
    assert len({tuple(img.flatten()[::97].tolist()) for img in twice}) > 1


def test_unknown_policy_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown augment policy \['flip'\].*translation"):
        parse_policy("translation,flip")
    with pytest.raises(ValueError, match="unknown augment policy"):
        tiny_model("gan").config.__class__.create(augment="color")
    assert parse_policy("") == ()


@pytest.mark.parametrize("family", ["gan", "evaluator"])
def test_augmented_critic_trains_on_emoji(emoji, family):
    x, y = emoji
    plain = tiny_model(family, channels=3, image_size=64, num_classes=9)
    model = type(plain)(dataclasses.replace(plain.config, augment="translation,cutout"))
    model.load_state_dict(plain.state_dict())
    assert model.augment_policy == ("translation", "cutout")
    before, after = _lowers_loss(model, (x + 1) / 2, y, steps=12)
    assert after < before, f"probe loss {before:.4f} -> {after:.4f}"
