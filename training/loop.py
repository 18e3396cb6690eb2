"""The training loop of one run: start it (or resume it from its checkpoint), then epochs of
steps, each epoch ending with a sample grid, the loss curve and a checkpoint; Ctrl+C stops it at
a step boundary with a checkpoint there (training/interrupt.py)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from training import distributed
from training.checkpoint import CHECKPOINT_NAME, load_checkpoint, make_state, save_checkpoint
from training.data import ImageDataset
from training.families.base import FamilyModel, Optimizers
from training.interrupt import StopOnCtrlC, TrainingInterrupted
from training.run_config import RunConfig
from training.run_log import LOSS_CSV, LossLog, TensorBoardLog, draw_grid, eta, plot_losses, truncate_losses
from training.weights import first_shape_mismatch, read_metadata, weights_path


def epoch_order(labels: torch.Tensor, gen: torch.Generator, balance_classes: bool) -> torch.Tensor:
    """Indices of one epoch's images: a permutation, or with `balance_classes` as many draws
    in which each class is equally likely (a conditional model is sampled over classes evenly,
    and a class with 4% of the images otherwise gets 4% of the generator's steps)."""
    labels = labels.cpu()
    if not balance_classes:
        return torch.randperm(len(labels), generator=gen)
    counts = torch.bincount(labels).float()
    weights = (1.0 / counts)[labels]
    return torch.multinomial(weights, len(labels), replacement=True, generator=gen)


def load_optimizer_keeping_settings(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load an optimiser's saved state (Adam's moments, step counts) but keep the settings this
    run was built with: a saved state brings its own lr and betas, and `--set lr=...` on
    `--resume` would otherwise be dropped without a word."""
    settings = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
    opt.load_state_dict(saved)
    for group, own in zip(opt.param_groups, settings, strict=True):
        group.update(own)


def refuse_another_model(
    path: Path, saved_family: str, saved: torch.nn.Module, family: str, model: torch.nn.Module
) -> None:
    """A run's family and weight shapes (widths, latent size, classes) are fixed at its start:
    `--resume` with others is refused naming the first difference, not a torch traceback."""
    if saved_family != family:
        raise ValueError(f"--resume: {path} is a {saved_family} run, not {family}")
    mismatch = first_shape_mismatch(saved.state_dict(), model.state_dict())
    if mismatch:
        raise ValueError(
            f"--resume: {path}: {mismatch}; a run keeps its shapes (start a new --out, or continue "
            "an exported model with --resume-from)"
        )


def refuse_other_images(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """`--resume` continues a run on its own images; new ones are a fine-tune (`--resume-from`)."""
    for key in ("name", "class_names", "channels", "image_size"):
        if key in saved and saved[key] != now[key]:
            raise ValueError(
                f"--resume: {path} trained on {saved.get('name')} ({key} {saved[key]}), this run "
                f"reads {now['name']} ({key} {now[key]}); to go on with other images, export the "
                "run and continue it with --resume-from"
            )


@dataclass
class Batches:
    """The training images on the device, kept as uint8 and converted to float per batch, and
    how an epoch splits them: the last partial batch is dropped (batch norm wants > 1)."""

    images: torch.Tensor
    labels: torch.Tensor
    size: int
    steps_per_epoch: int
    memory_format: torch.memory_format

    @classmethod
    def on_device(cls, ds: ImageDataset, run: RunConfig, device: torch.device) -> Batches:
        size = min(run.batch_size, len(ds))
        memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
        images, labels = torch.from_numpy(ds.images).to(device), torch.from_numpy(ds.labels).to(device)
        return cls(images, labels, size, max(1, len(ds) // size), memory_format)

    def take(
        self, order: torch.Tensor, i: int, replicas: distributed.Replicas
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `i` of the epoch's `order`: this process's share of it, images in [0, 1]."""
        idx = distributed.shard(order[i * self.size : (i + 1) * self.size], replicas)
        x = self.images[idx].float().div_(255.0).contiguous(memory_format=self.memory_format)
        return x, self.labels[idx]


@dataclass
class Progress:
    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps in all
    epoch_step: int = 0  # steps done in the unfinished epoch
    duration: float = 0.0  # seconds trained, over every session of the run


@dataclass
class TrainingLoop:
    run: RunConfig
    out: Path
    device: torch.device
    replicas: distributed.Replicas
    model: FamilyModel
    opts: Optimizers
    batches: Batches
    dataset: dict[str, Any]  # as config.json and every checkpoint describe it
    progress: Progress = dataclasses.field(default_factory=Progress)

    def __post_init__(self) -> None:
        self.data_gen = torch.Generator().manual_seed(self.run.seed)  # the order of the epochs' images
        self.ckpt_path = self.out / CHECKPOINT_NAME
        self.csv_path = self.out / LOSS_CSV

    def resume(self) -> None:
        """Continue from the run's checkpoint: weights, optimisers, RNG states and progress."""
        saved_model, ckpt = load_checkpoint(self.ckpt_path)
        refuse_another_model(self.ckpt_path, ckpt["family"], saved_model, self.run.family, self.model)
        refuse_other_images(self.ckpt_path, ckpt.get("dataset", {}), self.dataset)
        self.model.load_state_dict(saved_model.state_dict())
        self.model.warmup_left = ckpt.get("warmup_left", 0)  # a warm-up cut short goes on
        began_from = ckpt["run_config"].get("resume_from")
        if began_from:  # the file its start recorded: models/<id> may have moved on since
            self.run = dataclasses.replace(self.run, resume_from=began_from)
        for name, opt in self.opts.items():
            load_optimizer_keeping_settings(opt, ckpt["optimizers"][name])
        torch.set_rng_state(distributed.own_rng_state(ckpt["rng"], self.run.seed, self.replicas))
        self.data_gen.set_state(ckpt["rng"]["data"])  # before the unfinished epoch's permutation
        p = Progress(ckpt["epoch"], ckpt["step"], ckpt.get("epoch_step", 0), ckpt["duration_s"])
        self.progress = p
        within = f", {p.epoch_step} steps into epoch {p.epoch + 1}" if p.epoch_step else ""
        print(f"resuming {self.out} from epoch {p.epoch} (step {p.step}{within})", flush=True)
        if self.replicas.is_main:
            truncate_losses(self.csv_path, p.step)

    def start(self) -> None:
        """Begin the run (from an exported model's weights and progress with --resume-from) and
        write its config.json."""
        if self.run.resume_from:  # saved as the file itself: models/<id> moves on to newer versions
            weights = weights_path(self.run.resume_from)
            self.run = dataclasses.replace(self.run, resume_from=str(weights))
            meta = read_metadata(weights)
            p = Progress(meta.get("epoch", 0), meta.get("step", 0), 0, meta.get("duration_s", 0.0))
            self.progress = p
            self.model.after_resume_from_weights()
            print(f"continuing {weights} from epoch {p.epoch} (step {p.step})", flush=True)
        if self.replicas.is_main:  # the other ranks leave the run directory to rank 0
            self.csv_path.unlink(missing_ok=True)
            config = {
                "run": dataclasses.asdict(self.run),
                "model": dataclasses.asdict(self.model.config),
                "family": self.run.family,
                "dataset": self.dataset,
            }
            (self.out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def checkpoint(self, data_state: torch.Tensor, seconds: float) -> None:
        """Save the progress so far (every rank takes part: RNG states and digests are gathered);
        `data_state` is the data order's generator as it was before the unfinished epoch (if
        any) drew its permutation."""
        model, replicas, p = self.model, self.replicas, self.progress
        distributed.copy_buffers_from_main(model, replicas)
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "data": data_state}
        if replicas.parallel:  # each rank's own noise stream
            rng["ranks"] = distributed.rng_states(replicas)
        state = make_state(
            model,
            self.opts,
            family=self.run.family,
            run_config=dataclasses.asdict(self.run),
            dataset=self.dataset,
            epoch=p.epoch,
            step=p.step,
            epoch_step=p.epoch_step,
            duration_s=seconds,
            rng=rng,
        )
        state["warmup_left"] = model.warmup_left
        device = self.device
        state["device"] = str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)
        state["threads"] = torch.get_num_threads()
        if replicas.parallel:  # every rank's weight digest: they must agree
            state["replicas"] = distributed.replica_record(model, replicas)
        if replicas.is_main:
            save_checkpoint(self.ckpt_path, state)
        distributed.barrier(replicas)
        if replicas.parallel:
            distributed.check_replicas(state["replicas"], p.epoch)

    def run_epochs(self, title: str, show_progress: bool, board: TensorBoardLog | None) -> None:
        """Train up to the run's epochs; Ctrl+C saves a checkpoint at the step it stops at and
        raises TrainingInterrupted."""
        log = LossLog(self.csv_path, self.replicas.is_main)
        pace = (time.perf_counter(), self.progress.step)  # this session's start, for the ETA
        try:
            with StopOnCtrlC(self.replicas) as stop:
                while self.progress.epoch < self.run.epochs:
                    started = time.perf_counter()
                    last_losses = self.epoch_steps(stop, log, board, show_progress, started, pace)
                    self.end_epoch(title, board, started, last_losses)
        finally:
            log.close()
            if board:
                board.close()

    def epoch_steps(
        self,
        stop: StopOnCtrlC,
        log: LossLog,
        board: TensorBoardLog | None,
        show_progress: bool,
        started: float,
        pace: tuple[float, int],
    ) -> str:
        """The epoch's steps left (all of them unless a resumed run stopped mid-epoch); returns
        the last losses as the progress bar shows them."""
        run, p, replicas = self.run, self.progress, self.replicas
        data_state = self.data_gen.get_state()  # a checkpoint in this epoch redraws its order from here
        order = epoch_order(self.batches.labels, self.data_gen, run.balance_classes).to(self.device)
        steps = self.batches.steps_per_epoch
        bar = tqdm(
            range(p.epoch_step, steps),
            initial=p.epoch_step,
            total=steps,
            desc=f"epoch {p.epoch + 1}/{run.epochs}",
            disable=not (show_progress and replicas.is_main),
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            file=sys.stderr,
        )
        for i in bar:
            if stop.agreed():
                bar.close()
                self.checkpoint(data_state, p.duration + time.perf_counter() - started)
                raise TrainingInterrupted(self.ckpt_path, p.epoch, p.epoch_step, p.step, replicas.is_main)
            x, y = self.batches.take(order, i, replicas)
            losses = distributed.mean_losses(self.model.train_step(x, y, self.opts), replicas)
            p.step += 1
            p.epoch_step += 1
            left = eta(time.perf_counter() - pace[0], p.step - pace[1], run.epochs * steps - p.step)
            bar.set_description(f"epoch {p.epoch + 1}/{run.epochs}, run ETA {left}", refresh=False)
            log.write(p.epoch + 1, p.step, losses)
            if board:
                board.losses(losses, p.step)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        return str(bar.postfix)

    def end_epoch(self, title: str, board: TensorBoardLog | None, started: float, last_losses: str) -> None:
        """Refresh what sampling needs, draw the epoch's grid and loss curve, save a checkpoint."""
        run, p = self.run, self.progress
        p.epoch += 1
        p.epoch_step = 0
        self.model.before_sampling(torch.Generator().manual_seed(run.seed * 1000 + p.epoch))
        distributed.copy_buffers_from_main(self.model, self.replicas)
        p.duration += time.perf_counter() - started
        if self.replicas.is_main:
            grid = draw_grid(self.model, self.out / "samples" / f"epoch_{p.epoch:03d}.png", self.device)
            plot_losses(self.csv_path, self.out / "losses.png", title)
            if board:
                board.grid(grid, p.step)
        self.checkpoint(self.data_gen.get_state(), p.duration)
        print(
            f"epoch {p.epoch}/{run.epochs} done in {time.perf_counter() - started:.0f}s "
            f"(total {p.duration:.0f}s); last losses {last_losses}",
            flush=True,
        )
