"""`imagegen train`: train one family on one dataset, in the order pytorch/examples reads:
seed -> device -> data -> model -> optimisers -> (resume) -> loop over epochs (steps with a
progress bar and a CSV loss row each; at epoch end a sample grid from fixed inputs, a loss-curve
PNG and a checkpoint to resume from). The command line is training/train_cli.py.

With --ddp every process torchrun starts trains a replica on its share of each global batch
(training/distributed.py); rank 0 alone logs, draws grids and writes checkpoints.

Ctrl+C stops at the next step boundary and saves a checkpoint there (mid-epoch: the data order's
generator from before the epoch's permutation, the step within the epoch, the RNG state, the
optimisers, losses.csv up to that step), so `--resume` continues exactly as if never stopped.
`--tensorboard DIR` also writes each step's losses and each epoch's grid for TensorBoard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagegen.contract.manifest import default_model_id
from training import distributed
from training.checkpoint import CHECKPOINT_NAME
from training.data import ImageDataset, load_dataset
from training.families import get_family
from training.families.base import FamilyModel
from training.loop import Batches, TrainingLoop
from training.run_config import RunConfig
from training.run_log import TensorBoardLog
from training.weights import load_weights


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("imagegen train: --device cuda requested but CUDA is not available")
    return torch.device(name)


def load_training_data(run: RunConfig) -> ImageDataset:
    ds = load_dataset(run.dataset, run.data_dir or None, "train", run.image_size, run.dataset_name or None)
    if run.max_samples and run.max_samples < len(ds):
        return ds.subset(np.sort(np.random.default_rng(run.seed).permutation(len(ds))[: run.max_samples]))
    return ds


def build_model(run: RunConfig, ds: ImageDataset) -> FamilyModel:
    if run.resume_from:
        return model_from_weights(run, ds)
    family = get_family(run.family)
    extra: dict[str, Any] = dict(run.overrides)
    if run.guidance:  # a field of the evaluator's config; other families refuse it by name
        extra["guidance"] = run.guidance
    channels, height, width = ds.shape
    cfg = family.Config.create(
        run.variant, channels=channels, image_size=height, num_classes=max(ds.num_classes, 1), **extra
    )
    return family.Model(cfg)


def model_from_weights(run: RunConfig, ds: ImageDataset) -> FamilyModel:
    """The exported model's nets, its configuration with `--set` changes applied; it must be of
    the run's family and take the dataset's image shape and classes."""
    model, _ = load_weights(run.resume_from, run.overrides, family=run.family)
    cfg = model.config
    channels, height, _ = ds.shape
    wanted = (channels, height, max(ds.num_classes, 1))
    if (cfg.channels, cfg.image_size, cfg.num_classes) != wanted:
        raise ValueError(
            f"--resume-from {run.resume_from} draws {cfg.channels}x{cfg.image_size}px images of "
            f"{cfg.num_classes} classes; the dataset has {channels}x{height}px and {wanted[2]}"
        )
    return model


def dataset_record(run: RunConfig, ds: ImageDataset) -> dict[str, Any]:
    """The dataset as config.json and every checkpoint describe it."""
    return {
        "name": ds.name,
        "kind": run.dataset,
        "class_names": ds.class_names,
        "channels": ds.shape[0],
        "image_size": ds.shape[1],
        "train_images": len(ds),
    }


def seed_and_threads(run: RunConfig) -> None:
    torch.manual_seed(run.seed)
    np.random.seed(run.seed)
    if run.threads:
        torch.set_num_threads(run.threads)


def join_device(run: RunConfig) -> tuple[distributed.Replicas, torch.device]:
    """This process's place among the replicas (alone without --ddp) and its device (its own
    GPU under CUDA)."""
    if run.ddp:
        return distributed.join(run.device)
    return distributed.Replicas(), resolve_device(run.device)


def run_directory(run: RunConfig, resume: bool) -> Path:
    out = Path(run.out)
    if resume and not (out / CHECKPOINT_NAME).exists():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {out / CHECKPOINT_NAME}; run without --resume to start a new run"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def train(run: RunConfig, resume: bool = False, progress: bool = True, tensorboard: str | Path = "") -> Path:
    """Train and return the run directory (checkpoint, config.json, losses.csv, samples/);
    with `tensorboard` a directory, also TensorBoard events there (TensorBoardLog)."""
    seed_and_threads(run)
    replicas, device = join_device(run)
    out = run_directory(run, resume)
    ds = load_training_data(run)
    batches = Batches.on_device(ds, run, device)
    model = build_model(run, ds).to(device)
    model = model.to(memory_format=batches.memory_format)  # type: ignore[call-overload]  # torch's stubs lack it
    opts = model.configure_optimizers()
    distributed.copy_from_main(model, replicas)  # every rank starts from rank 0's weights
    distributed.average_gradients_on_step(opts, replicas)
    distributed.seed_noise(run.seed, replicas)

    loop = TrainingLoop(run, out, device, replicas, model, opts, batches, dataset_record(run, ds))
    if resume:
        loop.resume()
    else:
        loop.start()
    title = f"{default_model_id(run.family, ds.name, run.variant)} ({run.variant})"
    processes = f", {replicas.world} processes of {distributed.local_batch(batches.size, replicas)}"
    print(
        f"training {title}: {len(ds)} images {ds.shape}, {ds.num_classes} classes, {run.epochs} epochs x "
        f"{batches.steps_per_epoch} steps of {batches.size}, device {device}, "
        f"threads {torch.get_num_threads()}"
        + (processes if replicas.parallel else ""),
        flush=True,
    )
    if loop.progress.epoch >= run.epochs and replicas.is_main:  # --epochs is the total, not "more"
        print(
            f"nothing to train: the run is at epoch {loop.progress.epoch} and --epochs {run.epochs} is "
            f"the total; pass --epochs {loop.progress.epoch + 1} or more to go on",
            flush=True,
        )
    board = None
    if tensorboard and replicas.is_main:  # a resumed run's events continue after its checkpoint's step
        board = TensorBoardLog(Path(tensorboard), resumed_at=loop.progress.step + 1 if resume else None)
    loop.run_epochs(title, progress, board)
    distributed.leave(replicas)
    return out
