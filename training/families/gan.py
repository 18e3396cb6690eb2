"""`gan` family (seeds 002-004): a class-conditional DCGAN.

- default: generator z + label embedding -> dense -> transposed convolutions (batch norm,
  ReLU, tanh). Discriminator with spectral norm, non-saturating BCE loss, an auxiliary
  classifier head (AC-GAN: the class is learnt from real images and the generator is pushed to
  draw its label) and a minibatch-spread feature (ProGAN's minibatch std: a batch of identical
  fakes is easy to spot, so the generator keeps z in use). Adam 2e-4, betas (0.5, 0.999).
  Found on MNIST in short runs here: hinge + projection alone let the discriminator win
  (class ignored); label concatenation alone dropped z within one epoch.
- seed: the seeds' DCGAN settings: binary cross-entropy, Adam 1e-3 (Keras defaults, beta1 0.9),
  no spectral norm, no auxiliary classifier, the label given to the discriminator as one-hot
  planes.

Options for small image folders (`ema`, `augment`, `truncation`, `d_warmup`) are the ones both
generator-and-critic families share (training/families/adversarial.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from training.families.adversarial import GeneratorCritic, GeneratorOptions
from training.families.base import BaseConfig, init_weights
from training.families.layers import as_is, down_stack, one_hot_maps

# Config fields that only change how the sampler draws, which `imagegen export --set` may change.
SAMPLING_FIELDS: tuple[str, ...] = ("truncation",)


@dataclass(frozen=True)
class Config(BaseConfig, GeneratorOptions):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        "seed": {
            "g_cond": "concat",
            "mode_seeking": 0.0,
            "aux_weight": 0.0,
            "minibatch_std": False,
            "loss": "bce",
            "lr": 1e-3,
            "beta1": 0.9,
            "spectral_norm": False,
            "projection": False,
        },
    }

    latent_dim: int = 64
    g_cond: str = "concat"  # generator conditioning: cbn (class-conditional batch norm) | concat
    embed_dim: int = 16  # label embedding size when g_cond is concat
    g_width: int = 16  # generator: (B, 4*g_width, 7, 7) at 28x28
    d_width: int = 32
    loss: str = "bce"  # bce (non-saturating) | hinge
    spectral_norm: bool = True
    projection: bool = False  # projection discriminator; else one-hot planes concatenated to the input
    aux_weight: float = 1.0  # auxiliary classifier in D (AC-GAN); 0 = off
    minibatch_std: bool = True  # D sees the batch's feature spread (ProGAN), against mode collapse
    mode_seeking: float = 0.2  # weight of the mode-seeking term (keeps z in use); 0 = off
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    @property
    def conditional(self) -> bool:
        return self.num_classes > 1


class Discriminator(nn.Module):
    """(B, C, 28, 28) -> (B, d, 14, 14) -> (B, 2d, 7, 7) -> score (B,)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.concat = cfg.conditional and not cfg.projection and not cfg.aux_weight
        self.minibatch_std = cfg.minibatch_std
        in_ch = cfg.channels + (cfg.num_classes if self.concat else 0)
        self.features, ch, size = down_stack(in_ch, cfg.image_size, cfg.d_width, sn=cfg.spectral_norm)
        wrap = spectral_norm if cfg.spectral_norm else as_is
        self.feat_dim = ch * size * size + (size * size if cfg.minibatch_std else 0)
        self.head = wrap(nn.Linear(self.feat_dim, 1))
        self.aux = nn.Linear(self.feat_dim, cfg.num_classes) if cfg.conditional and cfg.aux_weight else None
        self.proj = (
            wrap(nn.Embedding(cfg.num_classes, self.feat_dim)) if cfg.conditional and cfg.projection else None
        )

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(real/fake score (B,), class logits (B, K) or None)."""
        if self.concat:
            x = torch.cat([x, one_hot_maps(label, self.num_classes, x.shape[-1])], dim=1)
        f = self.features(x)  # (B, 2d, 7, 7)
        h = f.flatten(1)
        if self.minibatch_std:  # (B, 7*7): the spread of the batch at each position
            spread = f.std(dim=0).mean(dim=0).flatten()
            h = torch.cat([h, spread.expand(f.shape[0], -1)], dim=1)
        out = self.head(h).squeeze(1)
        if self.proj is not None:
            out = out + (self.proj(label) * h).sum(dim=1)
        return out, (self.aux(h) if self.aux is not None else None)


class Model(GeneratorCritic):
    critic_name = "discriminator"
    config: Config
    discriminator: Discriminator

    def __init__(self, config: Config) -> None:
        super().__init__(config, Discriminator)
        if not config.spectral_norm:
            self.discriminator.apply(init_weights)

    def _aux(self, logits: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        if logits is None:
            return torch.zeros((), device=y.device)
        return self.config.aux_weight * F.cross_entropy(logits, y)

    def d_loss(
        self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor, y_fake: torch.Tensor | None = None
    ) -> torch.Tensor:
        y_fake = y if y_fake is None else y_fake
        (d_real, c_real), (d_fake, _) = self.discriminator(real, y), self.discriminator(fake, y_fake)
        if self.config.loss == "hinge":
            adv = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        else:
            ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_fake)
            bce = F.binary_cross_entropy_with_logits
            adv = bce(d_real, ones) + bce(d_fake, zeros)
        return adv + self._aux(c_real, y)  # the classifier learns from real images only

    def g_loss(
        self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor, y_fake: torch.Tensor
    ) -> torch.Tensor:
        d_fake: torch.Tensor
        d_fake, c_fake = self.discriminator(self.seen(fake), y_fake)
        if self.config.loss == "hinge":
            adv = -d_fake.mean()
        else:
            adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))  # non-saturating
        return adv + self._aux(c_fake, y_fake)
