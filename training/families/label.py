"""`label` family (seed 000): a class label -> dense -> 7x7 feature map -> transposed convolutions -> image.

Deterministic: the only input is the label (latent_dim 0), so the best a pixel loss can do is
a typical image of each class.

- default: one-hot -> Linear -> (B, 4w, 7, 7) -> two ConvTranspose x2 stages with batch norm
  -> sigmoid; per-pixel binary cross-entropy, but as a soft minimum over the batch's images of
  the class (each class's output is pulled towards the real images it already resembles most).
  Plain BCE draws the class mean, a blur that the Fashion classifier took for another class on
  sandals and coats (8/10 classes right); the soft minimum draws a sharp typical item (10/10).
- seed: the seed's layers (Dense 7x7x256 without bias, BN + LeakyReLU, ConvTranspose 5x5 to
  128 (stride 1), 64 and 1 (stride 2)) trained with categorical cross-entropy over pixels:
  softmax over the H*W pixels against the image normalised to sum 1. The image is the softmax
  scaled so its brightest pixel is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from training.families.base import (
    BaseConfig,
    FamilyModel,
    Optimizers,
    batch_stats,
    init_weights,
    optimiser_step,
    upsample_plan,
)

# Config fields that only change how the sampler draws, which `imagegen export --set` may change.
SAMPLING_FIELDS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config(BaseConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        "seed": {"width": 64, "lr": 1e-3, "beta1": 0.9},
    }

    latent_dim: int = 0  # deterministic: label only
    width: int = 16  # channels of the last hidden map; the 7x7 map has 4*width (seed: 256)
    lr: float = 2e-3
    beta1: float = 0.5
    beta2: float = 0.999
    # bce: per-pixel BCE, which draws each class's mean image. softmin: each class's output is
    # pulled towards the real images of that class it already resembles most (a soft minimum
    # of the per-image loss over the batch), which draws a sharp typical item instead of a blur.
    loss: str = "softmin"
    temperature: float = 0.02  # softmin temperature, in units of per-image BCE


class Generator(nn.Module):
    """default: one-hot -> (B, 4w, 7, 7) -> (B, 2w, 14, 14) -> (B, C, 28, 28) logits."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        base, stages = upsample_plan(cfg.image_size)
        ch = cfg.width * 2**stages
        self.base, self.ch = base, ch
        self.fc = nn.Sequential(
            nn.Linear(cfg.num_classes, ch * base * base, bias=False),
            nn.BatchNorm1d(ch * base * base),
            nn.ReLU(True),
        )
        layers: list[nn.Module] = []
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),  # x2
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers.append(nn.ConvTranspose2d(ch, cfg.channels, 4, 2, 1))  # (B, C, H, W)
        self.net = nn.Sequential(*layers)

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(label, self.num_classes).float()
        h = self.fc(onehot).view(-1, self.ch, self.base, self.base)  # (B, 4w, 7, 7)
        logits: torch.Tensor = self.net(h)  # (B, C, 28, 28)
        return logits


class SeedGenerator(nn.Module):
    """seed 000: one-hot -> (B, 256, 7, 7) -> (B, 128, 7, 7) -> (B, 64, 14, 14) -> (B, C, 28, 28)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        base, stages = upsample_plan(cfg.image_size)
        ch = cfg.width * 4  # 256 for the seed's width 64
        self.base, self.ch = base, ch
        self.fc = nn.Sequential(
            nn.Linear(cfg.num_classes, ch * base * base, bias=False),
            nn.BatchNorm1d(ch * base * base),
            nn.LeakyReLU(0.3),
        )
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(ch, ch // 2, 5, 1, 2, bias=False),  # (B, 128, 7, 7)
            nn.BatchNorm2d(ch // 2),
            nn.LeakyReLU(0.3),
        ]
        ch //= 2
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 5, 2, 2, output_padding=1, bias=False),  # x2
                nn.BatchNorm2d(ch // 2),
                nn.LeakyReLU(0.3),
            ]
            ch //= 2
        layers.append(nn.ConvTranspose2d(ch, cfg.channels, 5, 2, 2, output_padding=1, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(label, self.num_classes).float()
        logits: torch.Tensor = self.net(self.fc(onehot).view(-1, self.ch, self.base, self.base))
        return logits


def pixel_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over all pixels of each image (the seed's categorical output)."""
    b = logits.shape[0]
    return torch.softmax(logits.reshape(b, -1), dim=1).reshape(logits.shape)


class Sampler(nn.Module):
    def __init__(self, generator: nn.Module, seed_output: bool) -> None:
        super().__init__()
        self.generator = generator
        self.seed_output = seed_output

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        logits = self.generator(label)
        if not self.seed_output:
            return torch.sigmoid(logits)
        p = pixel_softmax(logits)
        peak = p.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
        return p / peak  # brightest pixel = 1


class Model(FamilyModel):
    inputs = ("label",)
    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.seed = config.variant == "seed"
        self.generator = SeedGenerator(config) if self.seed else Generator(config)
        self.generator.apply(init_weights)

    def configure_optimizers(self) -> Optimizers:
        c = self.config
        return {"g": torch.optim.Adam(self.generator.parameters(), c.lr, betas=(c.beta1, c.beta2))}

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.generator(y)
        if not self.seed and self.config.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, x)
        if not self.seed:
            per_image = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).mean(dim=1)
            losses = []
            for c in torch.unique(y):
                lc = per_image[y == c]
                weights = torch.softmax(-lc.detach() / self.config.temperature, dim=0)
                losses.append((weights * lc).sum())
            return torch.stack(losses).mean()
        b = x.shape[0]
        target = x.reshape(b, -1)
        target = target / target.sum(dim=1, keepdim=True).clamp_min(1e-8)
        return -(target * torch.log_softmax(logits.reshape(b, -1), dim=1)).sum(dim=1).mean()

    def train_step(self, x: torch.Tensor, y: torch.Tensor, opts: Optimizers) -> dict[str, float]:
        self.train()
        loss = self.loss(x, y)
        optimiser_step(opts["g"], loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def probe_loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> float:
        with batch_stats(self):
            return self.loss(x, y).item()

    def sampler(self) -> nn.Module:
        return Sampler(self.generator, self.seed).eval()
