"""Building blocks shared by the families: the DCGAN-style generator and conv down-sampling stacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from training.families.base import to_unit, upsample_plan


class CondBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift come from the class (conditional BN, as in SNGAN and
    BigGAN); with one class it is plain batch norm."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conditional = num_classes > 1
        self.bn = nn.BatchNorm2d(channels)  # affine too: the ONNX exporter needs its channel count
        if self.conditional:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        h: torch.Tensor = self.bn(x)
        if not self.conditional:
            return h
        gain: torch.Tensor = self.gain(label)
        bias: torch.Tensor = self.bias(label)
        return h * (1.0 + gain)[:, :, None, None] + bias[:, :, None, None]


class ConvGenerator(nn.Module):
    """z -> Linear -> (B, w*2^k, base, base) -> k ConvTranspose x2 stages -> (B, C, H, W)
    pre-activation. 28x28: (B, 4w, 7, 7) -> (B, 2w, 14, 14) -> (B, C, 28, 28);
    64x64: (B, 8w, 8, 8) -> (B, 4w, 16, 16) -> (B, 2w, 32, 32) -> (B, C, 64, 64).

    The label enters either through class-conditional batch norm after every layer
    (`cond="cbn"`, the default: the generator cannot turn the label into a fixed image and
    ignore z, which the concatenated version did within 3 MNIST epochs) or as an embedding
    concatenated to z (`cond="concat"`, the seeds' way). Batch norm trains with batch
    statistics; the family refreshes the running statistics before sampling/export."""

    def __init__(
        self,
        latent_dim: int,
        num_classes: int,
        embed_dim: int,
        channels: int,
        image_size: int,
        width: int,
        cond: str = "cbn",
    ) -> None:
        super().__init__()
        if cond not in ("cbn", "concat"):
            raise ValueError(f"unknown generator conditioning {cond!r}; known: cbn, concat")
        multi = num_classes > 1
        self.concat = multi and cond == "concat" and embed_dim > 0
        norm_classes = num_classes if multi and cond == "cbn" else 1
        self.embed = nn.Embedding(num_classes, embed_dim) if self.concat else None
        base, stages = upsample_plan(image_size)
        ch = width * 2**stages
        self.base, self.ch = base, ch
        in_dim = latent_dim + (embed_dim if self.concat else 0)
        self.fc = nn.Linear(in_dim, ch * base * base, bias=False)
        self.norms = nn.ModuleList([CondBatchNorm2d(ch, norm_classes)])
        self.ups = nn.ModuleList()
        for _ in range(stages - 1):
            self.ups.append(nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False))
            self.norms.append(CondBatchNorm2d(ch // 2, norm_classes))
            ch //= 2
        self.out = nn.ConvTranspose2d(ch, channels, 4, 2, 1)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = z
        if self.embed is not None:
            h = torch.cat([z, self.embed(label)], dim=1)
        h = self.fc(h).unflatten(1, (self.ch, self.base, self.base))  # (B, w*2^k, base, base)
        h = F.relu(self.norms[0](h, label))
        for up, norm in zip(self.ups, self.norms[1:], strict=True):
            h = F.relu(norm(up(h), label))  # x2
        out: torch.Tensor = self.out(h)  # (B, C, H, W), pre-activation
        return out


def down_stack(
    channels: int, image_size: int, width: int, *, sn: bool = False, kernel: int = 4, act: str = "lrelu"
) -> tuple[nn.Sequential, int, int]:
    """Conv x1/2 stages down to the generator's base size: 28 -> 14 -> 7, 64 -> 32 -> 16 -> 8.
    Returns (stack, out channels, out size)."""
    base, stages = upsample_plan(image_size)
    wrap = spectral_norm if sn else as_is
    layers: list[nn.Module] = []
    ch_in, ch = channels, width
    for _ in range(stages):
        pad = (kernel - 1) // 2 if kernel % 2 else 1
        layers += [
            wrap(nn.Conv2d(ch_in, ch, kernel, 2, pad)),
            nn.LeakyReLU(0.2, True) if act == "lrelu" else nn.ReLU(True),
        ]
        ch_in, ch = ch, ch * 2
    return nn.Sequential(*layers), ch_in, base


def as_is(module: nn.Module) -> nn.Module:
    """No wrapper: a layer without spectral norm."""
    return module


def given(label: torch.Tensor | None) -> torch.Tensor:
    """The label that a class-conditional net needs."""
    if label is None:
        raise ValueError("a class-conditional net needs a label")
    return label


def one_hot_maps(label: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """(B,) -> (B, K, size, size) one-hot planes, for conditioning by concatenation."""
    return F.one_hot(label, num_classes).float()[:, :, None, None].expand(-1, -1, size, size)


class GeneratorSampler(nn.Module):
    """What the gan and evaluator families export: (z[, label]) -> tanh image mapped to [0, 1]."""

    def __init__(self, generator: ConvGenerator, conditional: bool, truncation: float = 1.0) -> None:
        super().__init__()
        self.generator = generator
        self.conditional = conditional
        self.truncation = truncation

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.truncation != 1.0:
            z = z * self.truncation
        return to_unit(torch.tanh(self.generator(z, label if self.conditional else None)))
