"""What every family shares: the contract the trainer and export rely on, and small helpers.

A family module (`Family`) holds a frozen config dataclass (`Config`, built with
`Config.create(...)`), a `FamilyModel` subclass (`Model`) and the config fields that only change
how its sampler draws (`SAMPLING_FIELDS`). The trainer only calls the methods below, so it never
needs to know which family it runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import torch
from torch import nn

Optimizers = dict[str, torch.optim.Optimizer]


@dataclass(frozen=True)
class ExportSpec:
    """One ONNX graph to write: a module, example inputs, and the names of its inputs/outputs."""

    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # Shapes without the batch axis, for the manifest (e.g. {"z": [64], "label": []}).
    input_shapes: dict[str, list[int]]
    output_shapes: dict[str, list[int]]


class FamilyConfig(Protocol):
    """What the trainer, checkpoints and export read of any family's config (a frozen dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __init__(self, **fields: Any) -> None: ...

    @classmethod
    def create(cls, variant: str = ..., **fields: Any) -> Self: ...

    @property
    def channels(self) -> int: ...
    @property
    def image_size(self) -> int: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def variant(self) -> str: ...
    @property
    def latent_dim(self) -> int: ...


@dataclass(frozen=True)
class BaseConfig:
    """The fields every family's config starts with (the images it draws, its variant) and how
    a config is built: class defaults, then the variant's preset, then explicit fields."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}

    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    variant: str = "default"

    @classmethod
    def create(cls, variant: str = "default", **fields: Any) -> Self:
        """Unknown variants and field names are an error naming the known ones; a field given
        as None keeps its preset or default."""
        if variant not in cls.PRESETS:
            raise ValueError(f"unknown variant {variant!r}; known: {sorted(cls.PRESETS)}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {**cls.PRESETS[variant], **{k: v for k, v in fields.items() if v is not None}}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(variant=variant, **values)


class FamilyModel(nn.Module):
    """The nets of one family plus how to train and sample them."""

    config: FamilyConfig

    # Names of the sampler's inputs, a subset of ("z", "label") in that order.
    inputs: tuple[str, ...] = ("z", "label")

    def configure_optimizers(self) -> Optimizers:
        raise NotImplementedError

    def train_step(self, x: torch.Tensor, y: torch.Tensor, opts: Optimizers) -> dict[str, float]:
        """One optimisation step on a batch of images in [0, 1] (B, C, H, W) and labels (B,)."""
        raise NotImplementedError

    @torch.no_grad()
    def probe_loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> float:
        """A deterministic loss on a fixed batch (fixed noise from `gen`) that training lowers;
        tests compare it before and after a few steps."""
        raise NotImplementedError

    def sampler(self) -> nn.Module:
        """The exported generator: (z[, label]) -> image in [0, 1], NCHW; call in eval mode."""
        raise NotImplementedError

    # Steps left in which only a fresh critic learns (the gan's and evaluator's d_warmup, the
    # vae's critic_warmup); the checkpoint keeps it, so a resumed run finishes the warm-up.
    warmup_left: int = 0

    def after_resume_from_weights(self) -> None:
        """Called when a run starts from an exported model's weights (`--resume-from`)."""

    def export_specs(self) -> dict[str, ExportSpec]:
        """Graphs to export by role; "model" is the sampler, others go to `extra_onnx`."""
        cfg = self.config
        example: list[torch.Tensor] = []
        shapes: dict[str, list[int]] = {}
        if "z" in self.inputs:
            example.append(torch.randn(3, cfg.latent_dim))
            shapes["z"] = [cfg.latent_dim]
        if "label" in self.inputs:
            example.append(torch.arange(3, dtype=torch.int64) % cfg.num_classes)
            shapes["label"] = []
        return {
            "model": ExportSpec(
                self.sampler(),
                tuple(example),
                tuple(self.inputs),
                ("image",),
                shapes,
                {"image": [cfg.channels, cfg.image_size, cfg.image_size]},
            )
        }

    def before_sampling(self, gen: torch.Generator) -> None:
        """Called at the end of each epoch, before the sample grid and checkpoint (e.g. to
        refresh batch-norm statistics so eval mode matches training)."""


@runtime_checkable
class Family(Protocol):
    """A family module (label, evaluator, gan, vae): its config class, its model class, and the
    config fields that only change how the sampler draws (which `imagegen export --set` may
    change without retraining)."""

    @property
    def Config(self) -> type[FamilyConfig]: ...  # noqa: N802 (a class, as the module names it)
    @property
    def Model(self) -> type[FamilyModel]: ...  # noqa: N802
    @property
    def SAMPLING_FIELDS(self) -> tuple[str, ...]: ...  # noqa: N802


def optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`: clear the gradients, back-propagate, update."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def upsample_plan(image_size: int) -> tuple[int, int]:
    """(base size, number of x2 stages): 28 -> (7, 2), 32 -> (8, 2), 64 -> (8, 3)."""
    size, stages = image_size, 0
    while size % 2 == 0 and size > 8:
        size //= 2
        stages += 1
    if stages == 0:
        raise ValueError(f"image size {image_size} cannot be reached by x2 upsampling from <= 8")
    return size, stages


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) for convolutions and linears, N(1, 0.02) for norms."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clipped: ONNX Runtime's tanh can return a hair below -1."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


def randn(*shape: int, device: torch.device | str, gen: torch.Generator | None = None) -> torch.Tensor:
    """Normal noise on `device`; with `gen` (a CPU generator) it is drawn on the CPU so that
    fixed-noise probes and grids are the same on every device."""
    if gen is None:
        return torch.randn(*shape, device=device)
    return torch.randn(*shape, generator=gen).to(device)


class batch_stats:  # noqa: N801 (used as a context manager)
    """Run `net` with batch statistics (training-mode batch norm) without touching its running
    statistics: probes then measure what training optimises, without side effects."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.norms = batch_norms(net)

    def __enter__(self) -> nn.Module:
        self.was_training = self.net.training
        self.saved = [m.momentum for m in self.norms]
        for m in self.norms:
            m.momentum = 0.0  # running = 1.0 * running + 0.0 * batch
        self.net.train()
        return self.net

    def __exit__(self, *exc: object) -> None:
        for m, momentum in zip(self.norms, self.saved, strict=True):
            m.momentum = momentum
        self.net.train(self.was_training)
