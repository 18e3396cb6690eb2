"""`evaluator` family (seed 001): a generator judged by a convolutional autoencoder.

- default (energy guidance): EBGAN (Zhao et al. 2017). The autoencoder is the discriminator;
  its energy is the per-image reconstruction MSE. It lowers the energy of real images and
  raises that of fakes up to a margin; the generator lowers the energy of its images plus a
  pulling-away term on the autoencoder's codes (keeps a batch of fakes varied). Class-
  conditional: the generator gets a label embedding, the autoencoder's decoder gets the label,
  so an image of the wrong class reconstructs badly; an auxiliary classifier on the
  autoencoder's code (trained on real images) also pushes the generator towards its label,
  since energy alone let it ignore the label in short runs here.
- seed (`--guidance reference`): the seed's scheme. The autoencoder only learns to
  reconstruct real images; the generator is trained so that the autoencoder sees its output
  like a reference real image of the same class (its code matches the reference's code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.families.base import (
    FamilyModel,
    batch_stats,
    create_config,
    init_weights,
    mode_seeking_loss,
    paired_labels,
    randn,
    refresh_generator_batchnorm,
    to_signed,
    upsample_plan,
)
from training.families.layers import ConvGenerator, GeneratorSampler, down_stack

# Config fields that only change how the sampler draws, which `imagegen export --set` may change.
SAMPLING_FIELDS: tuple[str, ...] = ()

PRESETS = {
    "default": {},
    "seed": {"guidance": "reference", "class_weight": 0.0, "g_cond": "concat", "mode_seeking": 0.0},
}
GUIDANCES = ("energy", "reference")


@dataclass(frozen=True)
class Config:
    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    variant: str = "default"
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
    def create(cls, variant: str = "default", guidance: str | None = None, **fields) -> Config:
        if guidance == "reference":
            variant = "seed"  # the seed's scheme is the seed baseline
        cfg = create_config(cls, PRESETS, variant, **fields)
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
        return self.to_code(self.features(x).flatten(1))  # (B, k)

    def decode(self, code: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            code = code + self.embed(label)
        return self.decode_net(self.from_code(code).view(-1, self.ch, self.base, self.base))

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


class Model(FamilyModel):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        c = config
        self.inputs = ("z", "label") if c.conditional else ("z",)
        self.generator = ConvGenerator(
            c.latent_dim, c.num_classes, c.embed_dim, c.channels, c.image_size, c.g_width, c.g_cond
        )
        self.evaluator = AutoEncoder(c)
        self.generator.apply(init_weights)

    def configure_optimizers(self):
        c = self.config
        betas = (c.beta1, c.beta2)
        return {
            "g": torch.optim.Adam(self.generator.parameters(), c.lr, betas=betas),
            "d": torch.optim.Adam(self.evaluator.parameters(), c.lr, betas=betas),
        }

    def _fake(self, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        z = randn(y.shape[0], self.config.latent_dim, device=y.device, gen=gen)
        return torch.tanh(self.generator(z, y))

    def _class_loss(self, code: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        head = self.evaluator.classify
        if head is None or self.config.guidance == "reference":
            return code.new_zeros(())
        return self.config.class_weight * F.cross_entropy(head(code), y)

    def d_loss(self, real, fake, y, y_fake=None) -> torch.Tensor:
        y_fake = y if y_fake is None else y_fake
        e_real, code = self.evaluator(real, y)
        if self.config.guidance == "reference":
            return e_real.mean()  # the seed's autoencoder learns real images only
        e_fake, _ = self.evaluator(fake, y_fake)
        return e_real.mean() + F.relu(self.config.margin - e_fake).mean() + self._class_loss(code, y)

    def g_loss(self, real, fake, y, y_fake=None) -> torch.Tensor:
        y_fake = y if y_fake is None else y_fake
        if self.config.guidance == "reference":
            with torch.no_grad():
                ref = self.evaluator.encode(real)
            return F.mse_loss(self.evaluator.encode(fake), ref)
        e_fake, code = self.evaluator(fake, y_fake)
        return e_fake.mean() + self.config.pt_weight * pulling_away(code) + self._class_loss(code, y_fake)

    def train_step(self, x, y, opts):
        self.train()
        c = self.config
        real = to_signed(x)
        y_fake = paired_labels(y) if c.mode_seeking else y
        z = torch.randn(x.shape[0], c.latent_dim, device=x.device)
        fake = torch.tanh(self.generator(z, y_fake))
        d_loss = self.d_loss(real, fake.detach(), y, y_fake)
        opts["d"].zero_grad(set_to_none=True)
        d_loss.backward()
        opts["d"].step()
        g_loss = self.g_loss(real, fake, y, y_fake)
        if c.mode_seeking:
            g_loss = g_loss + c.mode_seeking * mode_seeking_loss(fake, z)
        opts["g"].zero_grad(set_to_none=True)
        g_loss.backward()
        opts["g"].step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    @torch.no_grad()
    def probe_loss(self, x, y, gen):
        with batch_stats(self):
            return self.d_loss(to_signed(x), self._fake(y, gen), y).item()

    def before_sampling(self, gen: torch.Generator) -> None:
        c = self.config
        refresh_generator_batchnorm(self.generator, c.latent_dim, c.num_classes, gen)

    def sampler(self) -> nn.Module:
        return GeneratorSampler(self.generator, self.config.conditional).eval()
