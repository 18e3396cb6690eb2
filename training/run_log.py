"""What a run writes as it goes, besides checkpoints: losses.csv (a row per step), the loss
curve (losses.png), each epoch's sample grid, and with --tensorboard the same for TensorBoard."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import IO

import numpy as np
import torch

from training.families.base import FamilyModel
from training.grid import grid_inputs, save_grid

LOSS_CSV = "losses.csv"


class LossLog:
    """losses.csv, a row per step. Each row is flushed as it is written: a checkpoint (at an
    epoch's end or on Ctrl+C) finds its rows on disk, and `--resume` drops any rows a killed run
    wrote past its checkpoint (`truncate_losses`). Only rank 0 logs; the other ranks write to
    nowhere."""

    def __init__(self, path: Path, is_main: bool) -> None:
        self.file: IO[str] = path.open("a", newline="") if is_main else open(os.devnull, "w")  # noqa: SIM115
        self.writer: csv.DictWriter[str] | None = None

    def write(self, epoch: int, step: int, losses: dict[str, float]) -> None:
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, fieldnames=["epoch", "step", *losses])
            if self.file.tell() == 0:
                self.writer.writeheader()
        self.writer.writerow({"epoch": epoch, "step": step, **{k: f"{v:.6g}" for k, v in losses.items()}})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def truncate_losses(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint's step (a run killed mid-epoch)."""
    if not path.exists():
        return
    with path.open() as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if int(r[1]) <= step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


class TensorBoardLog:
    """Each logged step's losses (`loss/<name>`) and each epoch's sample grid (`samples`), on
    the global step, for `tensorboard --logdir DIR`. A resumed run drops the events logged past
    its checkpoint's step (`purge_step`), as losses.csv drops those rows."""

    def __init__(self, log_dir: Path, resumed_at: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # the `tensorboard` package, in the train extra
            raise ValueError(f"--tensorboard needs the tensorboard package: {exc}") from exc
        self.writer = SummaryWriter(str(log_dir), purge_step=resumed_at)

    def losses(self, losses: dict[str, float], step: int) -> None:
        for name, value in losses.items():
            self.writer.add_scalar(f"loss/{name}", value, step)

    def grid(self, png: Path, step: int) -> None:
        from PIL import Image

        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image("samples", pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def draw_grid(model: FamilyModel, path: Path, device: torch.device) -> Path:
    """The epoch's sample grid from the fixed grid inputs (grid.grid_inputs)."""
    cfg = model.config
    feeds, cols = grid_inputs(model.inputs, cfg.latent_dim, cfg.num_classes)
    sampler = model.sampler().eval()
    with torch.no_grad():
        args = [torch.from_numpy(feeds[name]).to(device) for name in model.inputs]
        images = sampler(*args).cpu().numpy()
    model.train()
    return save_grid(images, cols, path, scale=2 if cfg.image_size <= 32 else 1)


def plot_losses(csv_path: Path, png_path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    names = [k for k in rows[0] if k not in ("epoch", "step")]
    steps = np.array([int(r["step"]) for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    window = max(1, len(rows) // 100)
    for name in names:
        values = np.array([float(r[name]) for r in rows])
        if window > 1:  # moving average; raw GAN losses are too noisy to read
            values = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[len(steps) - len(values) :], values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def eta(elapsed: float, done: int, remaining: int) -> str:
    """The whole run's time left at this run's pace so far, as h:mm:ss."""
    seconds = round(elapsed / done * remaining) if done else 0
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
