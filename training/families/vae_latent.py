"""The `vae` family's latent space: a learnt prior per class, the KL to it, and the map between
the sampler's z ~ N(0, I) and the decoder's codes."""

from __future__ import annotations

import math

import torch
from torch import nn


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
