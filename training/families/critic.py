"""An adversarial critic for the `vae` family (VAE-GAN, Larsen et al. 2016).

A pixel-likelihood VAE draws the average of the images its code cannot tell apart: coats,
shirts and pullovers blur together, and on emoji whole categories became brown blurs. A critic
that sees real images and the decoder's images teaches the decoder what real ones look like:
- its score gives the decoder a non-saturating adversarial loss on prior samples and
  reconstructions (`adv_weight`);
- its intermediate features give a feature-matching loss between a real image and its
  reconstruction (`feature_weight`), which asks for the same edges and textures rather than the
  same pixels.
The critic is conditional (one-hot label planes beside the image), spectrally normalised, and
trained with the non-saturating logistic loss. Only the decoder is exported: the critic is a
training aid and lives in the training weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from training.families.base import to_signed
from training.families.layers import down_stack, one_hot_maps


class Critic(nn.Module):
    """(B, C, H, W) in [0, 1] [+ label] -> (score (B,), [features after each down stage])."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int) -> None:
        super().__init__()
        self.num_classes = num_classes if num_classes > 1 else 0
        self.stages, ch, size = down_stack(channels + self.num_classes, image_size, width, sn=True)
        self.head = spectral_norm(nn.Linear(ch * size * size, 1))

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = to_signed(image)
        if self.num_classes:
            h = torch.cat([h, one_hot_maps(label, self.num_classes, h.shape[-1])], dim=1)
        features: list[torch.Tensor] = []
        for layer in self.stages:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):  # (B, w, H/2, W/2), (B, 2w, H/4, W/4), ...
                features.append(h)
        return self.head(h.flatten(1)).squeeze(1), features


def critic_step(
    critic: Critic, opt: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor
) -> float:
    """One step of the critic: real images up, the decoder's (reconstructions and prior
    samples, detached) down."""
    labels = torch.cat([y, y.repeat(fake.shape[0] // y.shape[0])])
    real_score, _ = critic(real, y)
    fake_score, _ = critic(fake.detach(), labels[y.shape[0] :])
    loss = F.softplus(-real_score).mean() + F.softplus(fake_score).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item())


def decoder_terms(
    critic: Critic, real: torch.Tensor, recon: torch.Tensor, prior: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial loss on reconstructions and prior samples, feature matching of each
    reconstruction to its real image), both means; the critic's weights get no gradient here."""
    critic.requires_grad_(False)
    try:
        fake_score, recon_features = critic(torch.cat([recon, prior]), torch.cat([y, y]))
        with torch.no_grad():
            _, real_features = critic(real, y)
        adversarial = F.softplus(-fake_score).mean()
        b = real.shape[0]
        matching = sum(
            (F.l1_loss(f[:b], r) for f, r in zip(recon_features, real_features, strict=True)),
            torch.zeros((), device=real.device),
        )
    finally:
        critic.requires_grad_(True)
    return adversarial, matching / len(real_features)
