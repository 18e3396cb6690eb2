"""`vae` family (seed 004): a convolutional variational autoencoder; the decoder samples from the prior.

- default: class-conditional (CVAE): the encoder sees the image plus one-hot label planes, the
  decoder z plus the one-hot label; 4x4 stride-2 convolutions; per-pixel BCE (summed) + KL.
  Export: the decoder (z, label) -> image, and the encoder (image, label) -> (mu, logvar) as a
  second ONNX file.
- seed: seed 004's plain VAE as far as it can be inferred (the Keras example shape):
  unconditional, Conv 3x3 32/64 stride 2, a dense 16 hidden layer, latent 2, decoder
  ConvTranspose 64/32 stride 2 then 3x3 to the image; BCE + KL, Adam 1e-3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from training.families.base import (
    BaseConfig,
    ExportSpec,
    FamilyModel,
    Optimizers,
    optimiser_step,
    randn,
    upsample_plan,
)
from training.families.layers import down_stack, given, one_hot_maps

# Config fields that only change how the sampler draws, which `imagegen export --set` may change.
SAMPLING_FIELDS: tuple[str, ...] = ("temperature",)


@dataclass(frozen=True)
class Config(BaseConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        "seed": {"conditional": False, "latent_dim": 2, "kernel": 3, "hidden": 16, "width": 32, "lr": 1e-3},
    }

    conditional: bool = True
    latent_dim: int = 16
    width: int = 32  # encoder: (B, w, 14, 14) -> (B, 2w, 7, 7); decoder mirrors it
    kernel: int = 4
    hidden: int = 0  # a dense hidden layer between conv features and (mu, logvar); 0 = none
    kl_weight: float = 1.0
    # One-hot label planes into every decoder stage, not only the first dense layer: on emoji the
    # label entering once was ignored (each z drew the same image in all nine categories).
    label_every_stage: bool = False
    # A learnt Gaussian prior per class, N(mu_y, sigma_y), instead of N(0, I): the KL pulls each
    # class's codes to its own region, so a prior sample of class y decodes to a class-y image.
    # With N(0, I), emoji codes of all classes overlapped and z, not the label, set the picture.
    class_prior: bool = False
    # The sampler scales z by this before decoding (reduced-temperature sampling, as in Glow and
    # NVAE): below 1 it trades variety for images nearer their class's typical look. Training
    # ignores it; it can be set when resuming for the last epoch before export.
    temperature: float = 1.0
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999

    @property
    def is_conditional(self) -> bool:
        return self.conditional and self.num_classes > 1


class Encoder(nn.Module):
    """(B, C[+K], 28, 28) -> (B, w, 14, 14) -> (B, 2w, 7, 7) -> (mu, logvar) (B, latent)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        extra = cfg.num_classes if cfg.is_conditional else 0
        self.features, ch, size = down_stack(
            cfg.channels + extra, cfg.image_size, cfg.width, kernel=cfg.kernel, act="relu"
        )
        feat = ch * size * size
        self.hidden: nn.Module = nn.Identity()
        if cfg.hidden:
            self.hidden = nn.Sequential(nn.Linear(feat, cfg.hidden), nn.ReLU(True))
            feat = cfg.hidden
        self.head = nn.Linear(feat, 2 * cfg.latent_dim)

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.is_conditional:
            planes = one_hot_maps(given(label), self.cfg.num_classes, image.shape[-1])
            image = torch.cat([image, planes], dim=1)
        h = self.hidden(self.features(image).flatten(1))
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """z[+onehot] -> (B, 2w, 7, 7) -> (B, w, 14, 14) -> (B, C, 28, 28) logits."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        base, stages = upsample_plan(cfg.image_size)
        ch = cfg.width * 2 ** (stages - 1)
        self.base, self.ch = base, ch
        in_dim = cfg.latent_dim + (cfg.num_classes if cfg.is_conditional else 0)
        self.fc = nn.Sequential(nn.Linear(in_dim, ch * base * base), nn.ReLU(True))
        self.label_every_stage = cfg.is_conditional and cfg.label_every_stage
        extra = cfg.num_classes if self.label_every_stage else 0
        layers: list[nn.Module] = []
        if cfg.kernel == 3:  # seed: ConvT(3, s2) keeping then halving width, then a 3x3 to the image
            out = ch
            for _ in range(stages):
                layers += [nn.ConvTranspose2d(ch + extra, out, 3, 2, 1, output_padding=1), nn.ReLU(True)]
                ch, out = out, out // 2
            layers.append(nn.ConvTranspose2d(ch + extra, cfg.channels, 3, 1, 1))
        else:
            for _ in range(stages - 1):
                layers += [nn.ConvTranspose2d(ch + extra, ch // 2, 4, 2, 1), nn.ReLU(True)]
                ch //= 2
            layers.append(nn.ConvTranspose2d(ch + extra, cfg.channels, 4, 2, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.is_conditional:
            z = torch.cat([z, F.one_hot(given(label), self.cfg.num_classes).float()], dim=1)
        h: torch.Tensor = self.fc(z).view(-1, self.ch, self.base, self.base)
        if not self.label_every_stage:
            logits: torch.Tensor = self.net(h)
            return logits
        for layer in self.net:
            if isinstance(layer, nn.ConvTranspose2d):  # (B, ch, s, s) -> (B, ch + K, s, s)
                h = torch.cat([h, one_hot_maps(given(label), self.cfg.num_classes, h.shape[-1])], dim=1)
            h = layer(h)
        return h  # logits


class ClassPrior(nn.Module):
    """p(z | y) = N(mu_y, exp(logvar_y)), learnt; starts as N(0, I) for every class."""

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.mu = nn.Embedding(num_classes, latent_dim)
        self.logvar = nn.Embedding(num_classes, latent_dim)
        nn.init.zeros_(self.mu.weight)
        nn.init.zeros_(self.logvar.weight)

    def forward(self, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(label), self.logvar(label)


def gaussian_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_mu: torch.Tensor | float = 0.0,
    prior_logvar: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)), summed over all elements."""
    prior_logvar = torch.as_tensor(prior_logvar, device=mu.device)
    ratio = (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp()
    return 0.5 * torch.sum(prior_logvar - logvar + ratio - 1)


class LatentMap(nn.Module):
    """How the sampler's z ~ N(0, I) becomes a decoder code, in one place for both directions:
    code = shift_y + scale_y * z, with (shift_y, scale_y) = (mu_y, sigma_y * temperature) under a
    class prior and (0, temperature) without one."""

    def __init__(self, prior: ClassPrior | None, temperature: float) -> None:
        super().__init__()
        self.prior = prior
        self.temperature = temperature

    @property
    def is_identity(self) -> bool:
        return self.prior is None and self.temperature == 1.0

    def _shift_and_log_scale(
        self, label: torch.Tensor | None
    ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        log_t = math.log(self.temperature)
        if self.prior is None:
            return 0.0, log_t
        mu, logvar = self.prior(label)
        return mu, 0.5 * logvar + log_t

    def to_code(self, z: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        shift, log_scale = self._shift_and_log_scale(label)
        return shift + torch.exp(torch.as_tensor(log_scale)) * z

    def from_code(
        self, mu: torch.Tensor, logvar: torch.Tensor, label: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's N(mu, e^logvar) over codes, as a distribution over the sampler's z."""
        shift, log_scale = self._shift_and_log_scale(label)
        log_scale = torch.as_tensor(log_scale)
        return (mu - shift) * torch.exp(-log_scale), logvar - 2.0 * log_scale


class Sampler(nn.Module):
    """(z ~ N(0, I)[, label]) -> image, z mapped to a code by the latent map first."""

    def __init__(self, decoder: Decoder, latent: LatentMap) -> None:
        super().__init__()
        self.decoder = decoder
        self.latent = latent

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if not self.latent.is_identity:
            z = self.latent.to_code(z, label)
        return torch.sigmoid(self.decoder(z, label))


class StandardisedEncoder(nn.Module):
    """The exported encoder when the latent map is not the identity: (mu, logvar) in the
    sampler's z space, so its mu fed to the model reconstructs the image."""

    def __init__(self, encoder: Encoder, latent: LatentMap) -> None:
        super().__init__()
        self.encoder = encoder
        self.latent = latent

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(image, label)
        return self.latent.from_code(mu, logvar, label)


class Model(FamilyModel):
    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.inputs = ("z", "label") if config.is_conditional else ("z",)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.prior = (
            ClassPrior(config.num_classes, config.latent_dim)
            if config.is_conditional and config.class_prior
            else None
        )

    def configure_optimizers(self) -> Optimizers:
        c = self.config
        return {"vae": torch.optim.Adam(self.parameters(), c.lr, betas=(c.beta1, c.beta2))}

    def losses(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, y)
        z = mu + torch.exp(0.5 * logvar) * randn(*mu.shape, device=mu.device, gen=gen)
        logits = self.decoder(z, y)
        b = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / b
        kl = gaussian_kl(mu, logvar, *(self.prior(y) if self.prior is not None else ())) / b
        return recon, kl

    def train_step(self, x: torch.Tensor, y: torch.Tensor, opts: Optimizers) -> dict[str, float]:
        self.train()
        recon, kl = self.losses(x, y)
        loss = recon + self.config.kl_weight * kl
        optimiser_step(opts["vae"], loss)
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    @torch.no_grad()
    def probe_loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> float:
        self.eval()
        recon, kl = self.losses(x, y, gen)
        return (recon + self.config.kl_weight * kl).item()

    def sampler(self) -> nn.Module:
        return Sampler(self.decoder, self.latent_map()).eval()

    def latent_map(self) -> LatentMap:
        return LatentMap(self.prior, self.config.temperature)

    def export_specs(self) -> dict[str, ExportSpec]:
        specs = super().export_specs()
        c = self.config
        image = torch.rand(3, c.channels, c.image_size, c.image_size)
        label = torch.arange(3, dtype=torch.int64) % c.num_classes
        cond = c.is_conditional
        latent = self.latent_map()
        encoder = self.encoder if latent.is_identity else StandardisedEncoder(self.encoder, latent)
        specs["encoder"] = ExportSpec(
            encoder.eval(),
            (image, label) if cond else (image,),
            ("image", "label") if cond else ("image",),
            ("mu", "logvar"),
            {"image": [c.channels, c.image_size, c.image_size], **({"label": []} if cond else {})},
            {"mu": [c.latent_dim], "logvar": [c.latent_dim]},
        )
        return specs
