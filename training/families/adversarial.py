"""What the gan and evaluator families share: a generator (`ConvGenerator`, tanh output) trained
against a critic net (the gan's discriminator, the evaluator's autoencoder), each net with its
own Adam, and the helpers both use against mode collapse and for sampling in eval mode.

Options for small image folders, the same in both families (`GeneratorOptions`, off by
default): `ema` samples a moving average of the generator; `augment` (DiffAugment,
training/families/augment.py) shows the critic randomly shifted / cut-out real and fake images
alike, so it cannot memorise a few hundred images per class; `truncation` scales the sampler's
z (BigGAN's truncation trick), a sampling setting that `imagegen export --set truncation=0.7`
can change without retraining; `d_warmup` lets a fresh critic learn alone first."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from training.families.augment import augment, parse_policy
from training.families.base import (
    FamilyConfig,
    FamilyModel,
    Optimizers,
    batch_norms,
    batch_stats,
    init_weights,
    optimiser_step,
    randn,
    to_signed,
)
from training.families.layers import ConvGenerator, GeneratorSampler


@dataclass(frozen=True)
class GeneratorOptions:
    """Config fields of both generator-and-critic families (their Config inherits them)."""

    # Decay of an exponential moving average of the generator's weights, which is what gets
    # sampled and exported (as in ProGAN/StyleGAN/BigGAN: the average of the last few thousand
    # steps draws cleaner images than the latest step); 0 = off.
    ema: float = 0.0
    augment: str = ""  # DiffAugment policy for every critic input, e.g. "translation,cutout"
    # The exported sampler draws z * truncation: below 1, images nearer the generator's typical
    # ones (more recognisable, less varied; BigGAN's truncation trick); a little above 1, more
    # varied ones (an EMA generator that drew too few styles regained recall at 1.1). Past 2, z
    # lies where the generator never trained. Sampling only.
    truncation: float = 1.0
    # Steps in which only the critic learns when a run continues an exported model
    # (--resume-from), e.g. on new images: the critic must learn them before it teaches the
    # generator (the gan-emoji v4 run used it with a fresh critic).
    d_warmup: int = 0

    def __post_init__(self) -> None:
        parse_policy(self.augment)
        if not 0.0 < self.truncation <= 2.0:
            raise ValueError(f"truncation must be in (0, 2], got {self.truncation}")


class GeneratorConfig(FamilyConfig, Protocol):
    """The config fields a generator-and-critic family has."""

    @property
    def g_cond(self) -> str: ...
    @property
    def embed_dim(self) -> int: ...
    @property
    def g_width(self) -> int: ...
    @property
    def mode_seeking(self) -> float: ...
    @property
    def lr(self) -> float: ...
    @property
    def beta1(self) -> float: ...
    @property
    def beta2(self) -> float: ...
    @property
    def conditional(self) -> bool: ...
    @property
    def ema(self) -> float: ...
    @property
    def augment(self) -> str: ...
    @property
    def truncation(self) -> float: ...
    @property
    def d_warmup(self) -> int: ...


class GeneratorCritic(FamilyModel):
    """A generator and a critic, trained in turns: the critic on real and fake images, then the
    generator on how the critic judges its fakes (plus the mode-seeking term when set).

    A subclass names its critic (`critic_name`: the attribute, and the prefix of its weights in
    every checkpoint) and gives its losses; `fake_batch_seen` hooks what the critic sees."""

    critic_name: ClassVar[str]
    config: GeneratorConfig

    def __init__(self, config: GeneratorConfig, make_critic: Callable[[Any], nn.Module]) -> None:
        super().__init__()
        self.config = config
        c = config
        self.inputs = ("z", "label") if c.conditional else ("z",)
        self.generator = ConvGenerator(
            c.latent_dim, c.num_classes, c.embed_dim, c.channels, c.image_size, c.g_width, c.g_cond
        )
        self.add_module(self.critic_name, make_critic(config))
        # initialised after the critic is built: the order of random draws of every run so far
        self.generator.apply(init_weights)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if c.ema else None
        self.augment_policy = parse_policy(c.augment)

    @property
    def critic(self) -> nn.Module:
        return self.get_submodule(self.critic_name)

    @property
    def sampled_generator(self) -> ConvGenerator:
        """The generator that sample grids and export draw with: the average, when kept."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        if self.generator_ema is not None and not any(k.startswith("generator_ema.") for k in state_dict):
            # a checkpoint from before the average was switched on: start it at the current weights
            ema = {
                "generator_ema." + k.removeprefix("generator."): v
                for k, v in state_dict.items()
                if k.startswith("generator.")
            }
            state_dict = {**state_dict, **ema}
        loaded: _IncompatibleKeys = super().load_state_dict(state_dict, strict=strict, assign=assign)
        return loaded

    def after_resume_from_weights(self) -> None:
        # on new images (fine-tuning) the critic must catch up before it teaches the generator
        self.warmup_left = self.config.d_warmup

    def configure_optimizers(self) -> Optimizers:
        c = self.config
        betas = (c.beta1, c.beta2)
        return {
            "g": torch.optim.Adam(self.generator.parameters(), c.lr, betas=betas),
            "d": torch.optim.Adam(self.critic.parameters(), c.lr, betas=betas),
        }

    def d_loss(
        self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor, y_fake: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(
        self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor, y_fake: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def seen(self, images: torch.Tensor) -> torch.Tensor:
        """Images as the critic sees them in training (DiffAugment, when set)."""
        return augment(images, self.augment_policy) if self.augment_policy else images

    def critic_only(self) -> bool:
        """Whether this step trains the critic alone (the warm-up on new images)."""
        if self.warmup_left <= 0:
            return False
        self.warmup_left -= 1
        return True

    def after_step(self) -> None:
        """Called after each generator step: the moving average follows the generator."""
        if self.generator_ema is not None:
            self._update_ema(self.generator_ema)

    @torch.no_grad()
    def _update_ema(self, average: ConvGenerator) -> None:
        for avg, new in zip(average.parameters(), self.generator.parameters(), strict=True):
            avg.lerp_(new, 1.0 - self.config.ema)
        for avg_buffer, new_buffer in zip(average.buffers(), self.generator.buffers(), strict=True):
            avg_buffer.copy_(new_buffer)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, opts: Optimizers) -> dict[str, float]:
        self.train()
        c = self.config
        real = to_signed(x)
        y_fake = paired_labels(y) if c.mode_seeking else y
        z = torch.randn(x.shape[0], c.latent_dim, device=x.device)
        fake = torch.tanh(self.generator(z, y_fake))
        d_loss = self.d_loss(self.seen(real), self.seen(fake.detach()), y, y_fake)
        optimiser_step(opts["d"], d_loss)
        if self.critic_only():
            return {"d_loss": d_loss.item(), "g_loss": float("nan")}
        g_loss = self.g_loss(real, fake, y, y_fake)
        if c.mode_seeking:
            g_loss = g_loss + c.mode_seeking * mode_seeking_loss(fake, z)
        optimiser_step(opts["g"], g_loss)
        self.after_step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    def fakes(self, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Generated images in [-1, 1] of classes `y`, from noise drawn with `gen`."""
        z = randn(y.shape[0], self.config.latent_dim, device=y.device, gen=gen)
        return torch.tanh(self.generator(z, y))

    @torch.no_grad()
    def probe_loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> float:
        with batch_stats(self):
            return float(self.d_loss(to_signed(x), self.fakes(y, gen), y).item())

    def before_sampling(self, gen: torch.Generator) -> None:
        c = self.config
        # statistics of untruncated z: refreshed on truncated z, the first batch norm would
        # scale fc(z) back up and undo the truncation
        refresh_generator_batchnorm(self.sampled_generator, c.latent_dim, c.num_classes, gen)

    def truncation(self) -> float:
        """The factor the sampler scales z by (1: none)."""
        return self.config.truncation

    def sampler(self) -> nn.Module:
        return GeneratorSampler(self.sampled_generator, self.config.conditional, self.truncation()).eval()


def paired_labels(y: torch.Tensor) -> torch.Tensor:
    """Labels whose first and second halves are equal, so fakes come in same-class pairs."""
    half = y.shape[0] // 2
    return torch.cat([y[:half], y[:half], y[2 * half :]])


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MSGAN (Mao et al. 2019): 1 / (|G(z1) - G(z2)| / |z1 - z2|) over same-class pairs (the
    first and second half of the batch). A generator that maps every z of a class to one image
    pays for it; without this term ours ignored z within the first MNIST epoch."""
    half = z.shape[0] // 2
    image_gap = (fake[:half] - fake[half : 2 * half]).abs().flatten(1).mean(dim=1)
    z_gap = (z[:half] - z[half : 2 * half]).abs().mean(dim=1)
    return 1.0 / ((image_gap / z_gap).mean() + 1e-5)


@torch.no_grad()
def refresh_batchnorm(
    net: nn.Module, make_inputs: Callable[[], tuple[torch.Tensor, ...]], batches: int = 8
) -> None:
    """Recompute batch-norm running statistics as a plain average over `batches` forward
    passes of the current weights, so that eval mode (what export uses) sees the same
    normalisation that training did, instead of an EMA that lags the weights."""
    norms = batch_norms(net)
    if not norms:
        return
    was_training = net.training
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for _ in range(batches):
        net(*make_inputs())
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    net.train(was_training)


def refresh_generator_batchnorm(
    generator: nn.Module, latent_dim: int, num_classes: int, gen: torch.Generator, n: int = 256
) -> None:
    """`refresh_batchnorm` for a (z, label) generator, fed fixed-noise latents and random labels."""
    dev = next(generator.parameters()).device

    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        z = randn(n, latent_dim, device=dev, gen=gen)
        return z, torch.randint(0, num_classes, (n,), generator=gen).to(dev)

    refresh_batchnorm(generator, inputs)
