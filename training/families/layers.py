"""Building blocks shared by the families: the DCGAN-style generator and conv down-sampling stacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from training.families.base import upsample_plan


class ConvGenerator(nn.Module):
    """z (+ class embedding) -> Linear -> (B, w*2^k, base, base) -> k ConvTranspose x2 stages
    -> (B, C, H, W) pre-activation. 28x28: (B, 4w, 7, 7) -> (B, 2w, 14, 14) -> (B, C, 28, 28);
    64x64: (B, 8w, 8, 8) -> (B, 4w, 16, 16) -> (B, 2w, 32, 32) -> (B, C, 64, 64).
    Batch norm in training; the family refreshes its statistics before sampling/export."""

    def __init__(
        self, latent_dim: int, num_classes: int, embed_dim: int, channels: int, image_size: int, width: int
    ) -> None:
        super().__init__()
        self.conditional = num_classes > 1 and embed_dim > 0
        self.embed = nn.Embedding(num_classes, embed_dim) if self.conditional else None
        base, stages = upsample_plan(image_size)
        ch = width * 2 ** stages
        self.base, self.ch = base, ch
        in_dim = latent_dim + (embed_dim if self.conditional else 0)
        self.fc = nn.Sequential(
            nn.Linear(in_dim, ch * base * base, bias=False), nn.BatchNorm1d(ch * base * base), nn.ReLU(True)
        )
        layers: list[nn.Module] = []
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers.append(nn.ConvTranspose2d(ch, channels, 4, 2, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = z
        if self.embed is not None:
            h = torch.cat([z, self.embed(label)], dim=1)
        h = self.fc(h).view(-1, self.ch, self.base, self.base)  # (B, w*2^k, base, base)
        return self.net(h)  # (B, C, H, W), pre-activation


def down_stack(
    channels: int, image_size: int, width: int, *, sn: bool = False, kernel: int = 4, act: str = "lrelu"
) -> tuple[nn.Sequential, int, int]:
    """Conv x1/2 stages down to the generator's base size: 28 -> 14 -> 7, 64 -> 32 -> 16 -> 8.
    Returns (stack, out channels, out size)."""
    base, stages = upsample_plan(image_size)
    wrap = spectral_norm if sn else (lambda m: m)
    layers: list[nn.Module] = []
    ch_in, ch = channels, width
    for _ in range(stages):
        pad = (kernel - 1) // 2 if kernel % 2 else 1
        layers += [wrap(nn.Conv2d(ch_in, ch, kernel, 2, pad)), nn.LeakyReLU(0.2, True) if act == "lrelu" else nn.ReLU(True)]
        ch_in, ch = ch, ch * 2
    return nn.Sequential(*layers), ch_in, base


def one_hot_maps(label: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """(B,) -> (B, K, size, size) one-hot planes, for conditioning by concatenation."""
    return F.one_hot(label, num_classes).float()[:, :, None, None].expand(-1, -1, size, size)
