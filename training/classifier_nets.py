"""The reference classifiers' networks: two architectures with different inductive biases.

- `cnn` (reference classifier A, `classifiers/<dataset>/`, and the selection classifier):
  VGG-style stages (conv-BN-ReLU x2, 2x2 max-pool) down to <= 7 pixels, then the flattened map
  through a linear layer: features keep where things are.
- `resnet` (reference classifier B, `classifiers/<dataset>/resnet/`): a strided stem, residual
  blocks that halve the resolution with strided convs (no pooling), then global average
  pooling: features forget where things are, so the two judge images by different cues.

Both take images in [0, 1], NCHW, normalise inside (callers and the ONNX graph feed generator
output as is) and return (logits, features); features is the penultimate layer that FID,
precision/recall and within-class diversity use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("cnn", "resnet")


@dataclass(frozen=True)
class ClassifierConfig:
    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    width: int = 16  # channels of the first stage, doubled per stage up to 4x
    feature_dim: int = 128  # size of the penultimate layer: the space FID and precision/recall use
    dropout: float = 0.3
    arch: str = "cnn"

    def stage_widths(self) -> list[int]:
        """Stages of halving resolution until <= 7 pixels (28 -> 7: two, 64 -> 4: four)."""
        widths, size, w = [], self.image_size, self.width
        while size > 7:
            widths.append(w)
            size //= 2
            w = min(w * 2, self.width * 4)
        return widths


class ConvNet(nn.Module):
    """Architecture `cnn`: VGG-style stages, flattened map -> features."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in, size = cfg.channels, cfg.image_size
        for w in cfg.stage_widths():
            layers += [
                nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in, size = w, size // 2
        self.body = nn.Sequential(*layers)  # (B, c_in, size, size); 28 -> 7, 64 -> 4
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * size * size, cfg.feature_dim), nn.BatchNorm1d(cfg.feature_dim),
            nn.ReLU(inplace=True),
        )  # (B, feature_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(self.body((x - 0.5) / 0.5))
        return self.head(self.drop(features)), features


class ResidualBlock(nn.Module):
    """conv(stride s)-BN-ReLU-conv-BN plus a 1x1 strided shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)), inplace=True)))
        return F.relu(y + self.shortcut(x), inplace=True)


class ResNet(nn.Module):
    """Architecture `resnet`: stem, one residual block per stage, each halving the map,
    global average pooling -> features."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.stage_widths()
        # 64x64 images: a strided stem, so the blocks see 32 -> 16 -> 8 -> 4 as the cnn's stages do
        stem_stride = 2 if cfg.image_size > 32 else 1
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
        )
        blocks, c_in = [], widths[0]
        for i, w in enumerate(widths):
            # a strided stem did the first halving already
            blocks.append(ResidualBlock(c_in, w, stride=1 if i == 0 and stem_stride == 2 else 2))
            c_in = w
        self.body = nn.Sequential(*blocks)  # (B, widths[-1], 7, 7) for 28; (B, widths[-1], 4, 4) for 64
        self.embed = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, cfg.feature_dim),
            nn.BatchNorm1d(cfg.feature_dim), nn.ReLU(inplace=True),
        )  # (B, feature_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(self.body(self.stem((x - 0.5) / 0.5)))
        return self.head(self.drop(features)), features


def build_classifier(cfg: ClassifierConfig) -> nn.Module:
    if cfg.arch == "cnn":
        return ConvNet(cfg)
    if cfg.arch == "resnet":
        return ResNet(cfg)
    raise ValueError(f"unknown classifier architecture {cfg.arch!r}; known: {list(ARCHITECTURES)}")
