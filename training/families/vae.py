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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.families.base import ExportSpec, FamilyModel, create_config, randn, upsample_plan
from training.families.layers import down_stack, one_hot_maps

PRESETS = {
    "default": {},
    "seed": {"conditional": False, "latent_dim": 2, "kernel": 3, "hidden": 16, "width": 32, "lr": 1e-3},
}


@dataclass(frozen=True)
class Config:
    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    variant: str = "default"
    conditional: bool = True
    latent_dim: int = 16
    width: int = 32  # encoder: (B, w, 14, 14) -> (B, 2w, 7, 7); decoder mirrors it
    kernel: int = 4
    hidden: int = 0  # a dense hidden layer between conv features and (mu, logvar); 0 = none
    kl_weight: float = 1.0
    # One-hot label planes into every decoder stage, not only the first dense layer: on emoji the
    # label entering once was ignored (each z drew the same image in all nine categories).
    label_every_stage: bool = False
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999

    @classmethod
    def create(cls, variant: str = "default", **fields) -> Config:
        return create_config(cls, PRESETS, variant, **fields)

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
        if cfg.hidden:
            self.hidden = nn.Sequential(nn.Linear(feat, cfg.hidden), nn.ReLU(True))
            feat = cfg.hidden
        else:
            self.hidden = nn.Identity()
        self.head = nn.Linear(feat, 2 * cfg.latent_dim)

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.is_conditional:
            image = torch.cat([image, one_hot_maps(label, self.cfg.num_classes, image.shape[-1])], dim=1)
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
            z = torch.cat([z, F.one_hot(label, self.cfg.num_classes).float()], dim=1)
        h = self.fc(z).view(-1, self.ch, self.base, self.base)
        if not self.label_every_stage:
            return self.net(h)  # logits
        for layer in self.net:
            if isinstance(layer, nn.ConvTranspose2d):  # (B, ch, s, s) -> (B, ch + K, s, s)
                h = torch.cat([h, one_hot_maps(label, self.cfg.num_classes, h.shape[-1])], dim=1)
            h = layer(h)
        return h  # logits


class Sampler(nn.Module):
    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z, label))


class Model(FamilyModel):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.inputs = ("z", "label") if config.is_conditional else ("z",)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def configure_optimizers(self):
        c = self.config
        return {"vae": torch.optim.Adam(self.parameters(), c.lr, betas=(c.beta1, c.beta2))}

    def losses(self, x, y, gen=None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, y)
        z = mu + torch.exp(0.5 * logvar) * randn(*mu.shape, device=mu.device, gen=gen)
        logits = self.decoder(z, y)
        b = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / b
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / b
        return recon, kl

    def train_step(self, x, y, opts):
        self.train()
        recon, kl = self.losses(x, y)
        loss = recon + self.config.kl_weight * kl
        opts["vae"].zero_grad(set_to_none=True)
        loss.backward()
        opts["vae"].step()
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    @torch.no_grad()
    def probe_loss(self, x, y, gen):
        self.eval()
        recon, kl = self.losses(x, y, gen)
        return (recon + self.config.kl_weight * kl).item()

    def sampler(self) -> nn.Module:
        return Sampler(self.decoder).eval()

    def export_specs(self) -> dict[str, ExportSpec]:
        specs = super().export_specs()
        c = self.config
        image = torch.rand(3, c.channels, c.image_size, c.image_size)
        label = torch.arange(3, dtype=torch.int64) % c.num_classes
        cond = c.is_conditional
        specs["encoder"] = ExportSpec(
            self.encoder.eval(),
            (image, label) if cond else (image,),
            ("image", "label") if cond else ("image",),
            ("mu", "logvar"),
            {"image": [c.channels, c.image_size, c.image_size], **({"label": []} if cond else {})},
            {"mu": [c.latent_dim], "logvar": [c.latent_dim]},
        )
        return specs
