"""Differentiable augmentation of what a discriminator sees (DiffAugment, Zhao et al. 2020).

With a few hundred images per class the discriminator memorises the training set and its
gradients stop teaching the generator. Augmenting real and fake images alike, in every
discriminator call of both steps, keeps it from memorising without teaching the generator
to draw augmented images: the generator is judged through the same random transform.

Policies (a comma list, applied in this order):
- translation: shift each image by up to 1/8 of its size, padding with the edge pixels (the
  white emoji background stays white);
- cutout: blank a random square of half the image size to mid-grey (0 in [-1, 1]).
"""

from __future__ import annotations

import torch

POLICIES = ("translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augment policy {unknown}; choose from {list(POLICIES)}")
    return names


def translate(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    padded = torch.nn.functional.pad(x, (sx, sx, sy, sy), mode="replicate")
    dy = torch.randint(0, 2 * sy + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * sx + 1, (b, 1), device=x.device)
    rows = (torch.arange(h, device=x.device) + dy)[:, None, :, None].expand(b, c, h, w + 2 * sx)
    out = padded.gather(2, rows)
    cols = (torch.arange(w, device=x.device) + dx)[:, None, None, :].expand(b, c, h, w)
    return out.gather(3, cols)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h - ch + 1, (b, 1, 1), device=x.device)
    left = torch.randint(0, w - cw + 1, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """`x` in [-1, 1], (B, C, H, W); a fresh random transform per image."""
    for name in policy:
        x = translate(x) if name == "translation" else cutout(x)
    return x
