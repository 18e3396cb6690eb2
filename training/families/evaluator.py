"""`evaluator` family (seed 001): a generator judged by a convolutional autoencoder.

- default (energy guidance): EBGAN (Zhao et al. 2017). The autoencoder is the discriminator;
  its energy is the per-image reconstruction MSE. It lowers the energy of real images and
  raises that of fakes up to a margin; the generator lowers the energy of its images plus a
  pulling-away term on the autoencoder's codes (keeps a batch of fakes varied). Class-
  conditional: the generator gets a label embedding, the autoencoder's decoder gets the label,
  so an image of the wrong class reconstructs badly; an auxiliary classifier on the
  autoencoder's code (trained on real images) also pushes the generator towards its label,
  since energy alone let it ignore the label in short runs here. `ema`, `augment`,
  `truncation` and `d_warmup` work as in the gan (training/families/adversarial.py).
- seed (`--guidance reference`): the seed's scheme. The autoencoder only learns to
  reconstruct real images; the generator is trained so that the autoencoder sees its output
  like a reference real image of the same class (its code matches the reference's code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from training.families.adversarial import GeneratorCritic, GeneratorOptions
from training.families.base import BaseConfig, upsample_plan
from training.families.layers import down_stack

# Config fields that only change how the sampler draws, which `imagegen export --set` may change.
SAMPLING_FIELDS: tuple[str, ...] = ("truncation",)

GUIDANCES = ("energy", "reference")


@dataclass(frozen=True)
class Config(BaseConfig, GeneratorOptions):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        "seed": {"guidance": "reference", "class_weight": 0.0, "g_cond": "concat", "mode_seeking": 0.0},
    }

    guidance: str = "energy"  # energy (EBGAN) | reference (the seed's)
    latent_dim: int = 64
    g_cond: str = "concat"  # generator conditioning: cbn (class-conditional batch norm) | concat
    embed_dim: int = 16  # label embedding size when g_cond is concat
    g_width: int = 16  # generator: (B, 4*g_width, 7, 7) at 28x28
    d_width: int = 16  # autoencoder conv width
    code_dim: int = 32  # autoencoder bottleneck
    margin: float = 1.0  # EBGAN margin on the fakes' energy (mean squared error, images in [-1, 1])
    pt_weight: float = 0.1  # pulling-away term
    class_weight: float = 1.0  # auxiliary classifier on the autoencoder's code (0 = off)
    mode_seeking: float = 0.2  # weight of the mode-seeking term (keeps z in use); 0 = off
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    @classmethod
    def create(cls, variant: str = "default", guidance: str | None = None, **fields: Any) -> Self:
        if guidance == "reference":
            variant = "seed"  # the seed's scheme is the seed baseline
        cfg = super().create(variant, **fields)
        if cfg.guidance not in GUIDANCES:
            raise ValueError(f"unknown guidance {cfg.guidance!r}; known: {list(GUIDANCES)}")
        return cfg

    @property
    def conditional(self) -> bool:
        return self.num_classes > 1


class AutoEncoder(nn.Module):
    """(B, C, 28, 28) -> (B, d, 14, 14) -> (B, 2d, 7, 7) -> code (B, k) [+ label] -> (B, C, 28, 28)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.features, ch, size = down_stack(cfg.channels, cfg.image_size, cfg.d_width)
        self.to_code = nn.Linear(ch * size * size, cfg.code_dim)
        # An auxiliary classifier on the code: energy alone let the generator ignore its label.
        self.classify = (
            nn.Linear(cfg.code_dim, cfg.num_classes) if cfg.conditional and cfg.class_weight else None
        )
        self.embed = (
            nn.Embedding(cfg.num_classes, cfg.code_dim)
            if cfg.conditional and cfg.guidance == "energy"
            else None
        )
        base, stages = upsample_plan(cfg.image_size)
        self.ch, self.base = ch, base
        self.from_code = nn.Sequential(nn.Linear(cfg.code_dim, ch * base * base), nn.ReLU(True))
        layers: list[nn.Module] = []
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, cfg.channels, 4, 2, 1), nn.Tanh()]
        self.decode_net = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        code: torch.Tensor = self.to_code(self.features(x).flatten(1))  # (B, k)
        return code

    def decode(self, code: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            code = code + self.embed(label)
        image: torch.Tensor = self.decode_net(self.from_code(code).view(-1, self.ch, self.base, self.base))
        return image

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-image energy (B,), code (B, k))."""
        code = self.encode(x)
        recon = self.decode(code, label)
        return (recon - x).pow(2).flatten(1).mean(dim=1), code


def pulling_away(code: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine similarity between distinct codes of a batch (EBGAN's PT term)."""
    s = F.normalize(code, dim=1)
    b = s.shape[0]
    sim = (s @ s.t()).pow(2)
    return (sim.sum() - sim.diagonal().sum()) / max(b * (b - 1), 1)


class Model(GeneratorCritic):
    critic_name = "evaluator"
    config: Config
    evaluator: AutoEncoder

    def __init__(self, config: Config) -> None:
        super().__init__(config, AutoEncoder)

    def _class_loss(self, code: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        head = self.evaluator.classify
        if head is None or self.config.guidance == "reference":
            return code.new_zeros(())
        return self.config.class_weight * F.cross_entropy(head(code), y)

    def d_loss(
        self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor, y_fake: torch.Tensor | None = None
    ) -> torch.Tensor:
        y_fake = y if y_fake is None else y_fake
        e_real: torch.Tensor
        e_real, code = self.evaluator(real, y)
        if self.config.guidance == "reference":
            return e_real.mean()  # the seed's autoencoder learns real images only
        e_fake: torch.Tensor
        e_fake, _ = self.evaluator(fake, y_fake)
        return e_real.mean() + F.relu(self.config.margin - e_fake).mean() + self._class_loss(code, y)

    def g_loss(
        self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor, y_fake: torch.Tensor
    ) -> torch.Tensor:
        if self.config.guidance == "reference":
            with torch.no_grad():
                ref = self.evaluator.encode(real)
            return F.mse_loss(self.evaluator.encode(fake), ref)
        e_fake, code = self.evaluator(self.seen(fake), y_fake)
        energy: torch.Tensor = e_fake.mean()
        return energy + self.config.pt_weight * pulling_away(code) + self._class_loss(code, y_fake)
