"""An adversarial critic for the `vae` family (VAE-GAN, Larsen et al. 2016).

A pixel-likelihood VAE draws the average of the images its code cannot tell apart: coats,
shirts and pullovers blur together, and on emoji whole categories became brown blurs. A critic
that sees real images and the decoder's images teaches the decoder what real ones look like:
- its score gives the decoder a non-saturating adversarial loss on prior samples and
  reconstructions (`adv_weight`);
- its intermediate features give a feature-matching loss between a real image and its
  reconstruction (`feature_weight`), which asks for the same edges and textures rather than the
  same pixels.
- with `class_weight`, a classifier beside it (AC-GAN, Odena et al. 2017), trained on real
  images only, gives the decoder a cross-entropy loss on prior samples: realism conditioned on
  the label did not make a Fashion shirt look like a shirt rather than a T-shirt or a coat.
The critic is conditional (one-hot label planes beside the image), spectrally normalised, and
trained with the non-saturating logistic loss. The classifier cannot see the label (it would
read it instead of the image). Only the decoder is exported: critic and classifier are training
aids and live in the training weights.
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

    def __init__(
        self, channels: int, num_classes: int, image_size: int, width: int, classify: bool = False
    ) -> None:
        super().__init__()
        self.num_classes = num_classes if num_classes > 1 else 0
        self.stages, ch, size = down_stack(channels + self.num_classes, image_size, width, sn=True)
        self.head = spectral_norm(nn.Linear(ch * size * size, 1))
        self.classes: nn.Module | None = None
        if classify and self.num_classes:
            trunk, ch, size = down_stack(channels, image_size, width)
            head = nn.Linear(ch * size * size, num_classes)
            self.classes = nn.Sequential(trunk, nn.Flatten(), nn.Dropout(0.3), head)

    def class_logits(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, K): the label-blind classifier's logits."""
        assert self.classes is not None
        logits: torch.Tensor = self.classes(to_signed(image))
        return logits

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
    if critic.classes is not None:
        loss = loss + F.cross_entropy(critic.class_logits(real), y)
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


def class_term(critic: Critic, prior: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the classifier's call on the decoder's prior samples against the label
    they were drawn for; the classifier's weights get no gradient here."""
    assert critic.classes is not None
    critic.classes.requires_grad_(False)
    was_training = critic.classes.training
    critic.classes.eval()  # no dropout: the decoder is taught by the classifier as it judges
    try:
        return F.cross_entropy(critic.class_logits(prior), y)
    finally:
        critic.classes.train(was_training)
        critic.classes.requires_grad_(True)


def term_names(critic: Critic) -> list[str]:
    """The logged names of the decoder's terms: adversarial, feature matching[, class]."""
    return ["adv", "fm"] + (["cls"] if critic.classes is not None else [])


def decoder_loss(
    critic: Critic,
    weights: tuple[float, float, float],
    real: torch.Tensor,
    rebuilt: torch.Tensor,
    drawn: torch.Tensor,
    y: torch.Tensor,
    logs: dict[str, float],
) -> torch.Tensor:
    """The decoder's terms weighted by (adversarial, feature matching, class), each logged (a
    term weighted 0 is not computed and logs 0)."""
    adversarial = matching = torch.zeros((), device=real.device)
    if weights[0] or weights[1]:  # a classifier alone needs no pass through the critic
        adversarial, matching = decoder_terms(critic, real, rebuilt, drawn, y)
    terms = [adversarial, matching]
    if critic.classes is not None:
        terms.append(class_term(critic, drawn, y))
    logs.update({name: t.item() for name, t in zip(term_names(critic), terms, strict=False)})
    return sum((w * t for w, t in zip(weights, terms, strict=False)), torch.zeros((), device=real.device))
