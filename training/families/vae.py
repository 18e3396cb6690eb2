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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from training.families.base import (
    BaseConfig,
    ExportSpec,
    FamilyModel,
    Optimizers,
    optimiser_step,
    randn,
    upsample_plan,
)
from training.families.critic import Critic, critic_step, decoder_loss, term_names
from training.families.layers import down_stack, given, one_hot_maps
from training.families.vae_latent import ClassPrior, LatentMap, gaussian_kl

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
    # VAE-GAN (families/critic.py): weights, per image value, of a critic's adversarial loss on
    # the decoder's images and of feature matching between a reconstruction and its image; both 0 =
    # a plain VAE (no critic).
    adv_weight: float = 0.0
    feature_weight: float = 0.0
    # weight, per image value, of a label-blind classifier's cross-entropy on prior samples
    class_weight: float = 0.0
    d_width: int = 32
    # steps a new critic trains alone when a plain VAE's weights are continued with one
    critic_warmup: int = 500
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
        c = config
        judged = c.adv_weight or c.feature_weight or c.class_weight
        classify = c.class_weight > 0
        self.critic = Critic(c.channels, c.num_classes, c.image_size, c.d_width, classify) if judged else None

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        fresh = {} if self.critic is None else {"critic." + k: v for k, v in self.critic.state_dict().items()}
        if any(k not in state_dict for k in fresh):
            # a plain VAE's weights continued as a VAE-GAN, or a VAE-GAN's with a classifier: what
            # is new starts fresh and trains alone for the warm-up steps
            state_dict = {**fresh, **state_dict}
            self.warmup_left = self.config.critic_warmup
        elif self.critic is not None:  # a checkpoint of this run, critic included: it has judged
            self.warmup_left = 0
        loaded: _IncompatibleKeys = super().load_state_dict(state_dict, strict=strict, assign=assign)
        return loaded

    def configure_optimizers(self) -> Optimizers:
        c = self.config
        vae = [p for name, p in self.named_parameters() if not name.startswith("critic.")]
        opts: Optimizers = {"vae": torch.optim.Adam(vae, c.lr, betas=(c.beta1, c.beta2))}
        if self.critic is not None:
            opts["critic"] = torch.optim.Adam(self.critic.parameters(), 2e-4, betas=(0.5, 0.999))
        return opts

    def losses(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction loss, KL, the reconstruction's logits)."""
        mu, logvar = self.encoder(x, y)
        z = mu + torch.exp(0.5 * logvar) * randn(*mu.shape, device=mu.device, gen=gen)
        logits = self.decoder(z, y)
        b = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / b
        kl = gaussian_kl(mu, logvar, *(self.prior(y) if self.prior is not None else ())) / b
        return recon, kl, logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor, opts: Optimizers) -> dict[str, float]:
        self.train()
        recon, kl, logits = self.losses(x, y)
        loss = recon + self.config.kl_weight * kl
        logs = {"recon": recon.item(), "kl": kl.item()}
        if self.critic is not None:
            loss = loss + self._critic_terms(x, y, torch.sigmoid(logits), opts["critic"], logs)
        optimiser_step(opts["vae"], loss)
        return {"loss": loss.item(), **logs}

    def _critic_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        rebuilt: torch.Tensor,
        critic_opt: torch.optim.Optimizer,
        logs: dict[str, float],
    ) -> torch.Tensor:
        """Steps the critic, then returns the decoder's weighted terms (scaled by the values per
        image, as the summed reconstruction loss is)."""
        assert self.critic is not None
        c = self.config
        z = randn(x.shape[0], c.latent_dim, device=x.device)
        drawn = torch.sigmoid(self.decoder(LatentMap(self.prior, 1.0).to_code(z, y), y))
        logs["critic"] = critic_step(self.critic, critic_opt, x, torch.cat([rebuilt, drawn]).detach(), y)
        if self.warmup_left > 0:  # a new critic learns to judge before it teaches
            self.warmup_left -= 1
            logs.update(dict.fromkeys(term_names(self.critic), 0.0))
            return torch.zeros((), device=x.device)
        weights = (c.adv_weight, c.feature_weight, c.class_weight)
        terms: torch.Tensor = x[0].numel() * decoder_loss(self.critic, weights, x, rebuilt, drawn, y, logs)
        return terms

    @torch.no_grad()
    def probe_loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> float:
        self.eval()
        recon, kl, _ = self.losses(x, y, gen)
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
