"""`imagegen train`: train one family on one dataset, in one visible order.

seed -> device -> data -> model -> optimisers -> (resume) -> loop over epochs
(steps with a progress bar and a CSV loss row each; at epoch end a sample grid from fixed
inputs, a loss-curve PNG and a checkpoint to resume from).

    imagegen train --family gan --dataset mnist --epochs 5 --out runs/gan-mnist
    imagegen train --family gan --dataset imagefolder --data-dir /data/emoji --epochs 10
    torchrun --nproc-per-node 2 -m imagegen.cli train --family gan --dataset mnist --epochs 5 --ddp

With --ddp every process torchrun starts trains a replica on its share of each global batch
(training/distributed.py); rank 0 alone logs, draws grids and writes checkpoints.

Ctrl+C stops at the next step boundary and saves a checkpoint there (mid-epoch: the data order's
generator from before the epoch's permutation, the step within the epoch, the RNG state, the
optimisers, losses.csv up to that step), so `--resume` continues exactly as if never stopped.
`--tensorboard DIR` also writes each step's losses and each epoch's grid for TensorBoard.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from imagegen.contract.manifest import default_model_id
from training import distributed
from training.checkpoint import CHECKPOINT_NAME, load_checkpoint, make_state, save_checkpoint
from training.cli_help import DefaultsHelpFormatter
from training.data import DatasetError, ImageDataset, default_data_dir, load_dataset
from training.families import FAMILIES, get_family, parse_overrides
from training.families.base import FamilyModel
from training.grid import grid_inputs, save_grid
from training.weights import load_weights, read_metadata, weights_path

LOSS_CSV = "losses.csv"


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run that is not the model's own hyper-parameters."""

    family: str
    dataset: str  # mnist | fashion | imagefolder
    epochs: int
    out: str
    data_dir: str = "data"
    dataset_name: str = ""  # the name in the model id; defaults to the dataset / folder name
    image_size: int = 64  # image folders only; IDX sets are 28x28
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0 = torch's default
    variant: str = "default"
    guidance: str = ""  # evaluator only: energy | reference
    max_samples: int = 0  # 0 = all training images; else a seeded subset (seed baselines on a budget)
    balance_classes: bool = False  # draw every class equally often (with replacement), not by its share
    # an exported model (models/<id>[/<version>]) whose training weights and progress start the run
    resume_from: str = ""
    # NHWC tensors for the nets and batches: 1.7x faster convolutions on this AVX2 CPU (DEVICE.md)
    channels_last: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields (--set k=v)
    # data-parallel across the processes torchrun starts (training/distributed.py); batch_size
    # stays the global batch, split evenly among them
    ddp: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("imagegen train: --device cuda requested but CUDA is not available")
    return torch.device(name)


def load_training_data(run: RunConfig) -> ImageDataset:
    ds = load_dataset(run.dataset, run.data_dir, "train", run.image_size, run.dataset_name or None)
    if run.max_samples and run.max_samples < len(ds):
        pick = np.sort(np.random.default_rng(run.seed).permutation(len(ds))[: run.max_samples])
        ds = ImageDataset(ds.name, ds.images[pick], ds.labels[pick], ds.class_names)
    return ds


def build_model(run: RunConfig, ds: ImageDataset) -> FamilyModel:
    if run.resume_from:
        return model_from_weights(run, ds)
    module = get_family(run.family)
    extra: dict[str, Any] = dict(run.overrides)
    if run.guidance:  # a field of the evaluator's config; other families refuse it by name
        extra["guidance"] = run.guidance
    channels, height, width = ds.shape
    cfg = module.Config.create(
        run.variant, channels=channels, image_size=height, num_classes=max(ds.num_classes, 1), **extra
    )
    return module.Model(cfg)


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


def _rng_state(data_state: torch.Tensor, replicas: distributed.Replicas) -> dict[str, Any]:
    """The RNG states a checkpoint keeps; `data_state` is the data order's generator as it was
    before the unfinished epoch (if any) drew its permutation."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "data": data_state}
    if replicas.parallel:  # each rank's own noise stream
        state["ranks"] = distributed.rng_states(replicas)
    return state


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl+C stopped the run at a step boundary, after `checkpoint` was saved there."""

    def __init__(self, checkpoint: Path, epoch: int, epoch_step: int, step: int, report: bool) -> None:
        super().__init__(f"interrupted at step {step}")
        self.checkpoint, self.epoch, self.epoch_step, self.step = checkpoint, epoch, epoch_step, step
        self.report = report  # rank 0 (or the only process) says what was saved


class StopOnCtrlC:
    """While active, SIGINT asks the run to stop at the next step boundary instead of raising
    in the middle of a step (which would leave one net stepped and the other not).

    A second Ctrl+C in a single process quits at once (KeyboardInterrupt; the last saved
    checkpoint stands). Under --ddp a repeated SIGINT is expected, not impatience: the terminal
    signals every process and torchrun forwards its own, so repeats are ignored there, and the
    ranks agree on the step (`agreed()` is a collective: any rank's request stops them all)."""

    def __init__(self, replicas: distributed.Replicas) -> None:
        self.replicas = replicas
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnCtrlC:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.requested and not self.replicas.parallel:
            raise KeyboardInterrupt
        if not self.requested and self.replicas.is_main:
            print(
                "\nimagegen train: stopping after this step to save a checkpoint "
                "(Ctrl+C again to quit without saving)",
                file=sys.stderr,
                flush=True,
            )
        self.requested = True

    def agreed(self) -> bool:
        """Whether to stop before the next step; the same answer on every rank."""
        if not self.replicas.parallel:
            return self.requested
        return any(distributed.gather(self.requested, self.replicas))


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


def train(run: RunConfig, resume: bool = False, progress: bool = True, tensorboard: str | Path = "") -> Path:
    """Train and return the run directory (checkpoint, config.json, losses.csv, samples/);
    with `tensorboard` a directory, also TensorBoard events there (TensorBoardLog)."""
    # seed, threads, device
    torch.manual_seed(run.seed)
    np.random.seed(run.seed)
    if run.threads:
        torch.set_num_threads(run.threads)
    if run.ddp:  # this process's rank, and its device (its own GPU under CUDA)
        replicas, device = distributed.join(run.device)
    else:
        replicas, device = distributed.Replicas(), resolve_device(run.device)
    out = Path(run.out)
    if resume and not (out / CHECKPOINT_NAME).exists():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {out / CHECKPOINT_NAME}; run without --resume to start a new run"
        )
    out.mkdir(parents=True, exist_ok=True)

    # data: kept as uint8 on the device, converted to float per batch
    ds = load_training_data(run)
    images = torch.from_numpy(ds.images).to(device)
    labels = torch.from_numpy(ds.labels).to(device)
    n = len(ds)
    batch = min(run.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # drop the last partial batch (batch norm wants > 1)
    per_process = distributed.local_batch(batch, replicas)
    dataset_info = {
        "name": ds.name,
        "kind": run.dataset,
        "class_names": ds.class_names,
        "channels": ds.shape[0],
        "image_size": ds.shape[1],
        "train_images": n,
    }

    # model and optimisers
    model = build_model(run, ds).to(device)
    memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # type: ignore[call-overload]  # torch's stubs lack it
    opts = model.configure_optimizers()
    distributed.copy_from_main(model, replicas)  # every rank starts from rank 0's weights
    distributed.average_gradients_on_step(opts, replicas)
    distributed.seed_noise(run.seed, replicas)
    data_gen = torch.Generator().manual_seed(run.seed)
    epoch, step, epoch_step, duration = 0, 0, 0, 0.0

    ckpt_path = out / CHECKPOINT_NAME
    csv_path = out / LOSS_CSV
    if resume and ckpt_path.exists():
        saved_model, ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(saved_model.state_dict())
        for name, opt in opts.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        torch.set_rng_state(distributed.own_rng_state(ckpt["rng"], run.seed, replicas))
        data_gen.set_state(ckpt["rng"]["data"])  # before the unfinished epoch's permutation
        epoch, step, duration = ckpt["epoch"], ckpt["step"], ckpt["duration_s"]
        epoch_step = ckpt.get("epoch_step", 0)
        within = f", {epoch_step} steps into epoch {epoch + 1}" if epoch_step else ""
        print(f"resuming {out} from epoch {epoch} (step {step}{within})", flush=True)
        if replicas.is_main:
            _truncate_csv(csv_path, step)
    else:
        if run.resume_from:  # saved as the file itself: models/<id> moves on to newer versions
            weights = weights_path(run.resume_from)
            run = dataclasses.replace(run, resume_from=str(weights))
            meta = read_metadata(weights)
            epoch, step, duration = meta.get("epoch", 0), meta.get("step", 0), meta.get("duration_s", 0.0)
            model.after_resume_from_weights()
            print(f"continuing {weights} from epoch {epoch} (step {step})", flush=True)
        if replicas.is_main:  # the other ranks leave the run directory to rank 0
            csv_path.unlink(missing_ok=True)
            (out / "config.json").write_text(
                json.dumps(
                    {
                        "run": dataclasses.asdict(run),
                        "model": dataclasses.asdict(model.config),
                        "family": run.family,
                        "dataset": dataset_info,
                    },
                    indent=2,
                    sort_keys=True,
                )
                + "\n"
            )

    title = f"{default_model_id(run.family, ds.name, run.variant)} ({run.variant})"
    print(
        f"training {title}: {n} images {ds.shape}, {ds.num_classes} classes, {run.epochs} epochs x "
        f"{steps_per_epoch} steps of {batch}, device {device}, threads {torch.get_num_threads()}"
        + (f", {replicas.world} processes of {per_process}" if replicas.parallel else ""),
        flush=True,
    )

    def checkpoint(data_state: torch.Tensor, seconds: float) -> None:
        """Save the progress so far (every rank takes part: RNG states and digests are gathered)."""
        distributed.copy_buffers_from_main(model, replicas)
        state = make_state(
            model,
            opts,
            family=run.family,
            run_config=dataclasses.asdict(run),
            dataset=dataset_info,
            epoch=epoch,
            step=step,
            epoch_step=epoch_step,
            duration_s=seconds,
            rng=_rng_state(data_state, replicas),
        )
        state["device"] = str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)
        state["threads"] = torch.get_num_threads()
        if replicas.parallel:  # every rank's weight digest: they must agree
            state["replicas"] = distributed.replica_record(model, replicas)
        if replicas.is_main:
            save_checkpoint(ckpt_path, state)
        distributed.barrier(replicas)
        if replicas.parallel:
            distributed.check_replicas(state["replicas"], epoch)

    # rank 0 logs the global batch's losses; the other ranks write theirs to nowhere. Each row is
    # flushed as it is written: a checkpoint (at an epoch's end or on Ctrl+C) finds its rows on
    # disk, and `--resume` drops any rows a killed run wrote past its checkpoint.
    csv_file = csv_path.open("a", newline="") if replicas.is_main else open(os.devnull, "w")  # noqa: SIM115
    board = None
    if tensorboard and replicas.is_main:  # a resumed run's events continue after its checkpoint's step
        board = TensorBoardLog(Path(tensorboard), resumed_at=step + 1 if resume else None)
    writer: csv.DictWriter[str] | None = None
    run_started, first_step, total_steps = time.perf_counter(), step, run.epochs * steps_per_epoch
    try:
        with StopOnCtrlC(replicas) as stop:
            while epoch < run.epochs:
                started = time.perf_counter()
                data_state = data_gen.get_state()  # a checkpoint in this epoch redraws its order from here
                perm = epoch_order(labels, data_gen, run.balance_classes).to(device)
                bar = tqdm(
                    range(epoch_step, steps_per_epoch),
                    initial=epoch_step,
                    total=steps_per_epoch,
                    desc=f"epoch {epoch + 1}/{run.epochs}",
                    disable=not (progress and replicas.is_main),
                    mininterval=1.0 if sys.stderr.isatty() else 30.0,
                    file=sys.stderr,
                )
                for i in bar:
                    if stop.agreed():
                        bar.close()
                        checkpoint(data_state, duration + time.perf_counter() - started)
                        raise TrainingInterrupted(ckpt_path, epoch, epoch_step, step, replicas.is_main)
                    idx = distributed.shard(perm[i * batch : (i + 1) * batch], replicas)
                    x = images[idx].float().div_(255.0).contiguous(memory_format=memory_format)
                    losses = distributed.mean_losses(model.train_step(x, labels[idx], opts), replicas)
                    step += 1
                    epoch_step += 1
                    eta = _eta(time.perf_counter() - run_started, step - first_step, total_steps - step)
                    bar.set_description(f"epoch {epoch + 1}/{run.epochs}, run ETA {eta}", refresh=False)
                    if writer is None:
                        writer = csv.DictWriter(csv_file, fieldnames=["epoch", "step", *losses])
                        if csv_file.tell() == 0:
                            writer.writeheader()
                    writer.writerow(
                        {"epoch": epoch + 1, "step": step, **{k: f"{v:.6g}" for k, v in losses.items()}}
                    )
                    csv_file.flush()
                    if board:
                        board.losses(losses, step)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
                epoch += 1
                epoch_step = 0
                model.before_sampling(torch.Generator().manual_seed(run.seed * 1000 + epoch))
                distributed.copy_buffers_from_main(model, replicas)
                duration += time.perf_counter() - started
                if replicas.is_main:
                    grid = draw_grid(model, out / "samples" / f"epoch_{epoch:03d}.png", device)
                    plot_losses(csv_path, out / "losses.png", title)
                    if board:
                        board.grid(grid, step)
                checkpoint(data_gen.get_state(), duration)
                print(
                    f"epoch {epoch}/{run.epochs} done in {time.perf_counter() - started:.0f}s "
                    f"(total {duration:.0f}s); last losses {bar.postfix}",
                    flush=True,
                )
    finally:
        csv_file.close()
        if board:
            board.close()
    distributed.leave(replicas)
    return out


def _eta(elapsed: float, done: int, remaining: int) -> str:
    """The whole run's time left at this run's pace so far, as h:mm:ss."""
    seconds = round(elapsed / done * remaining) if done else 0
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _resume_command(argv: list[str]) -> str:
    """The command line that continues this run: its own options and --resume (under torchrun
    for a --ddp run, with as many processes per node)."""
    kept_args = [shlex.quote(a) for a in argv if a != "--resume"]
    command = ["imagegen", "train"]
    if "--ddp" in argv:
        per_node = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "2"))
        command = ["torchrun", "--nproc-per-node", per_node, "-m", "imagegen.cli", "train"]
    return " ".join([*command, *kept_args, "--resume"])


def _stopped(stop: TrainingInterrupted, argv: list[str]) -> str:
    """What Ctrl+C saved at the step where the run stopped, and how to continue."""
    where = (
        f"epoch {stop.epoch + 1}, after {stop.epoch_step} of its steps"
        if stop.epoch_step
        else (f"the end of epoch {stop.epoch}")
    )
    return (
        f"imagegen train: interrupted; saved {stop.checkpoint} at step {stop.step} ({where}). "
        f"Continue with:\n  {_resume_command(argv)}"
    )


def _interrupted(out: Path, argv: list[str]) -> str:
    """What an interruption outside the steps (loading, or a second Ctrl+C) leaves behind: the
    last saved checkpoint, if any, and how to continue."""
    ckpt = out / CHECKPOINT_NAME
    if not ckpt.exists():
        return f"imagegen train: interrupted before the first checkpoint; nothing saved in {out}"
    try:
        ckpt_info = load_checkpoint(ckpt)[1]
        kept = f"step {ckpt_info['step']} (epoch {ckpt_info['epoch']} finished)"
    except Exception:  # noqa: BLE001 - the message must not fail
        kept = "the last saved step"
    return (
        f"imagegen train: interrupted; {ckpt} keeps {kept}, later steps are not saved. "
        f"Continue with:\n  {_resume_command(argv)}"
    )


def _truncate_csv(path: Path, step: int) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagegen train",
        description="Train a model family on a dataset. Ctrl+C saves a checkpoint at the step where "
        "it stops and prints the command that continues it (--resume).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--family", required=True, choices=sorted(FAMILIES), help="model family to train")
    p.add_argument(
        "--dataset",
        required=True,
        choices=["mnist", "fashion", "imagefolder"],
        help="IDX set (mnist, fashion) or a folder of images with one subfolder per class",
    )
    p.add_argument(
        "--epochs", type=int, required=True, help="epochs to reach (counted from the start on --resume)"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="IDX root (default $IMAGEGEN_DATA_DIR or data); for imagefolder the image folder itself",
    )
    p.add_argument(
        "--name", default="", help="dataset name in the model id (default the dataset, or the folder's name)"
    )
    p.add_argument("--image-size", type=int, default=64, help="image folders only (IDX sets are 28x28)")
    p.add_argument(
        "--batch-size", type=int, default=128, help="images per optimiser step (the global batch under --ddp)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the data order and the noise")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cuda if present")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument(
        "--variant",
        default="default",
        choices=["default", "seed"],
        help="the family's tuned configuration, or the seed project's original one",
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC tensors (faster convs on CPU)")
    p.add_argument(
        "--guidance",
        default="",
        choices=["", "energy", "reference"],
        help="evaluator: energy (EBGAN, default) or reference (the seed's scheme)",
    )
    p.add_argument(
        "--max-samples", type=int, default=0, help="train on a seeded subset of this size (0 = all images)"
    )
    p.add_argument(
        "--balance-classes",
        action="store_true",
        help="draw each class equally often per epoch (for folders where one class dominates)",
    )
    p.add_argument(
        "--resume-from",
        default="",
        metavar="MODEL",
        help="continue an exported model (models/<id> or models/<id>/<version>) from the training "
        "weights kept beside it, on this dataset: more epochs, or fine-tuning on new images",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field, e.g. --set g_width=8 (repeatable)",
    )
    p.add_argument("--out", default="", help="run directory (default runs/<family>-<dataset>[-seed])")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run's checkpoint (an epoch's end, or where Ctrl+C stopped it); "
        "an error when --out has none",
    )
    p.add_argument(
        "--tensorboard",
        default="",
        metavar="DIR",
        help="also write each step's losses and each epoch's sample grid here for TensorBoard "
        "(tensorboard --logdir DIR)",
    )
    p.add_argument(
        "--ddp",
        action="store_true",
        help="data-parallel across the processes torchrun starts (gloo on CPU, nccl on GPUs); "
        "--batch-size is the global batch: torchrun --nproc-per-node 2 -m imagegen.cli train ... --ddp",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the per-epoch lines remain)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir = args.data_dir or str(default_data_dir())
    name = args.name or (Path(data_dir).name if args.dataset == "imagefolder" else args.dataset)
    variant = "seed" if args.guidance == "reference" else args.variant
    try:
        overrides = parse_overrides(args.family, args.overrides)
        run = RunConfig(
            family=args.family,
            dataset=args.dataset,
            epochs=args.epochs,
            out=args.out or f"runs/{default_model_id(args.family, name, variant)}",
            data_dir=data_dir,
            dataset_name=name,
            image_size=args.image_size,
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            variant=variant,
            guidance=args.guidance,
            max_samples=args.max_samples,
            balance_classes=args.balance_classes,
            resume_from=args.resume_from,
            channels_last=args.channels_last,
            overrides=overrides,
            ddp=args.ddp,
        )
        out = train(run, resume=args.resume, progress=not args.no_progress, tensorboard=args.tensorboard)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"imagegen train: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        if stop.report:  # the other ranks leave the message to rank 0
            print(_stopped(stop, list(sys.argv[1:] if argv is None else argv)), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        out_dir = Path(args.out or f"runs/{default_model_id(args.family, name, variant)}")
        print(_interrupted(out_dir, list(sys.argv[1:] if argv is None else argv)), file=sys.stderr)
        return 130
    print(f"run saved in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
