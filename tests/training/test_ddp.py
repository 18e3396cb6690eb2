"""`imagegen train --ddp` under torchrun: 2 real CPU processes (gloo on loopback) on the committed
MNIST subset, against single-process runs of the same global batch.

The comparison runs the `label` family with `--set loss=bce`: it draws no noise, and its loss is
a mean over images, so two ranks averaging the gradients of their 16-image halves take exactly
the step of one 32-image batch -- except for batch norm, which normalises each rank's half with
that half's statistics. So the DDP trajectory (rank 0's losses.csv: the mean of the ranks'
losses) is checked twice:

- against the same global batch in one process with batch norm on each half, as the ranks see
  it (`per_shard_reference`): the same arithmetic in another order. Measured: at most 4.8e-7
  over 18 steps, which is the CSV's 6 significant digits; tolerance 1e-5. With gradient
  averaging switched off (each rank steps on its own half) the gap was 1.2e-3 by step 9, so
  this is the comparison that sees a broken averaging in the losses.
- against the plain single-process run (`imagegen train` without --ddp, batch norm over all 32):
  the per-half statistics are the one real difference. Measured: 9e-6 at the first step,
  growing to 2.9e-3 (0.5% of the loss) by step 18; tolerance 1e-2, a 3x margin that still
  fails a run that is off by a step (the loss falls ~0.01 a step). It cannot tell a broken
  averaging (2.6e-3 by step 9) from batch norm: the first check and the replicas' weight
  digests (the next tests) do that.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.training.conftest import DATA_DIR, ROOT, tiny_run_config
from training import distributed
from training.checkpoint import load_checkpoint
from training.grid import grid_inputs
from training.loop import epoch_order
from training.train_cli import main
from training.trainer import build_model, load_training_data, train

WORLD = 2
LABEL_BCE = {"width": 4, "loss": "bce"}  # conftest's tiny label net, with the plain mean loss
PER_SHARD_TOLERANCE = 1e-5
BATCH_NORM_TOLERANCE = 1e-2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_train(out: Path, *args: str, epochs: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 -m imagegen.cli train ... --ddp` on loopback, one thread each."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
    command += ["--nproc-per-node", str(WORLD), "--master-addr", "127.0.0.1"]
    command += ["--master-port", str(free_port())]
    command += ["-m", "imagegen.cli", "train", "--ddp", "--dataset", "mnist", "--data-dir", str(DATA_DIR)]
    command += ["--epochs", str(epochs), "--batch-size", "32", "--device", "cpu", "--threads", "1"]
    command += ["--no-progress", "--out", str(out), *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def label_args() -> list[str]:
    return ["--family", "label", *[f"--set={k}={v}" for k, v in LABEL_BCE.items()]]


def logged_losses(run_dir: Path, column: str = "loss") -> np.ndarray:
    with (run_dir / "losses.csv").open() as f:
        return np.array([float(row[column]) for row in csv.DictReader(f)])


def per_shard_reference(run_dir: Path, epochs: int) -> np.ndarray:
    """One process, the trainer's data order and global batch, each batch's loss taken on its
    two rank shards (batch norm per shard) and their gradients averaged before one Adam step."""
    torch.manual_seed(0)
    run = tiny_run_config(run_dir, "label", epochs=epochs, overrides={"loss": "bce"})
    ds = load_training_data(run)
    images, labels = torch.from_numpy(ds.images).float() / 255.0, torch.from_numpy(ds.labels)
    model = build_model(run, ds).train()
    (opt,) = model.configure_optimizers().values()
    data_gen = torch.Generator().manual_seed(run.seed)
    trajectory = []
    for _ in range(epochs):
        order = epoch_order(labels, data_gen, balance_classes=False)
        for i in range(len(ds) // run.batch_size):
            batch = order[i * run.batch_size : (i + 1) * run.batch_size]
            opt.zero_grad()
            shard_losses = []
            for rank in range(WORLD):
                shard = batch[rank::WORLD]
                loss = model.loss(images[shard], labels[shard])
                (loss / WORLD).backward()
                shard_losses.append(loss.item())
            opt.step()
            trajectory.append(np.mean(shard_losses))
    return np.array(trajectory)


@pytest.fixture(scope="module")
def ddp_label_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp-label") / "run"
    torchrun_train(out, *label_args())
    return out


def test_ddp_loss_trajectory_matches_one_process_of_the_same_global_batch(ddp_label_run, tmp_path):
    ddp = logged_losses(ddp_label_run)
    assert len(ddp) == 2 * (300 // 32)  # rank 0 alone logged, one row per global batch

    reference = per_shard_reference(tmp_path / "reference", epochs=2)
    assert np.abs(ddp - reference).max() < PER_SHARD_TOLERANCE

    single = train(
        tiny_run_config(tmp_path / "single", "label", epochs=2, overrides={"loss": "bce"}), progress=False
    )
    plain = logged_losses(single)
    assert np.abs(ddp - plain).max() < BATCH_NORM_TOLERANCE
    assert ddp[-1] < ddp[0] - 0.1  # and it learns


GAN = {"g_width": 4, "d_width": 8, "latent_dim": 8, "embed_dim": 4}  # conftest's tiny gan


@pytest.fixture(scope="module")
def ddp_gan_run(tmp_path_factory) -> Path:
    """The gan family: z drawn per rank, batch norm in the generator, spectral norm (whose
    power-iteration vectors are buffers) in the discriminator -- all must agree across ranks."""
    out = tmp_path_factory.mktemp("ddp-gan") / "run"
    torchrun_train(out, *gan_args())
    return out


def gan_args() -> list[str]:
    return ["--family", "gan", "--max-samples", "128", *[f"--set={k}={v}" for k, v in GAN.items()]]


def test_ranks_hold_identical_weights_and_the_checkpoint_exports(ddp_gan_run, tmp_path):
    import onnxruntime as ort  # only this test exports; the spawned ranks skip these imports

    from training.export import export_run

    _, ckpt = load_checkpoint(ddp_gan_run)
    record = ckpt["replicas"]
    assert record["world_size"] == WORLD
    # every rank's digest of its weights and buffers, gathered at the last checkpoint
    assert record["digests"] == [distributed.digest(ckpt["model"])] * WORLD
    assert len(ckpt["rng"]["ranks"]) == WORLD

    single = train(tiny_run_config(tmp_path / "single", "gan", epochs=2, max_samples=128), progress=False)
    ddp_manifest = export_run(ddp_gan_run, tmp_path / "ddp-models")
    one_manifest = export_run(single, tmp_path / "one-models")
    same = {"id", "family", "dataset", "version", "image", "latent_dim", "inputs", "outputs", "class_names"}
    assert ddp_manifest.model_dump(include=same) == one_manifest.model_dump(include=same)
    assert ddp_manifest.training is not None and ddp_manifest.training.epochs == 2
    onnx_path = ddp_manifest.onnx_path(tmp_path / "ddp-models" / ddp_manifest.id)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds, _ = grid_inputs(tuple(ddp_manifest.inputs), ddp_manifest.latent_dim, 10, rows=1)
    (images,) = session.run(["image"], feeds)
    assert images.shape == (10, 1, 28, 28) and 0.0 <= images.min() and images.max() <= 1.0


def test_resume_under_torchrun_continues_every_rank_exactly(ddp_gan_run, tmp_path):
    """Each rank draws its own z (seed + rank): a resumed run must restore every rank's noise
    stream, the data order and rank 0's weights, and end where the straight run ended."""
    torchrun_train(tmp_path / "split", *gan_args(), epochs=1)
    torchrun_train(tmp_path / "split", *gan_args(), "--resume", epochs=2)
    straight, _ = load_checkpoint(ddp_gan_run)
    split, ckpt = load_checkpoint(tmp_path / "split")
    assert distributed.digest(split.state_dict()) == distributed.digest(straight.state_dict())
    assert ckpt["epoch"] == 2 and len(set(ckpt["replicas"]["digests"])) == 1
    for column in ("d_loss", "g_loss"):
        np.testing.assert_array_equal(
            logged_losses(tmp_path / "split", column), logged_losses(ddp_gan_run, column)
        )


def _average_on_rank(rank: int, port: int, results: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    replicas = distributed.Replicas(rank, WORLD)
    weight, unused, local_only = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    opt = torch.optim.SGD([weight, unused, local_only], lr=1.0)
    distributed.average_gradients_on_step({"opt": opt}, replicas)
    weight.grad = torch.full((3,), float(rank + 1))  # rank 0: 1, rank 1: 2
    if rank == 1:
        local_only.grad = torch.full((3,), 4.0)  # a gradient only one rank has
    opt.step()
    torch.save((weight.detach().tolist(), unused.grad, local_only.detach().tolist()), results / f"{rank}.pt")
    torch.distributed.destroy_process_group()


def test_an_optimizer_step_averages_gradients_across_ranks(tmp_path):
    """SGD with lr 1 moves a parameter by minus the gradient it was given: the mean of the
    ranks' (1 and 2), not one rank's own, nor their sum; a gradient that only one rank has
    counts as zero on the others, and a parameter no rank has a gradient for stays untouched."""
    mp.spawn(_average_on_rank, args=(free_port(), tmp_path), nprocs=WORLD)
    for rank in range(WORLD):
        weight, unused_grad, local_only = torch.load(tmp_path / f"{rank}.pt")
        assert weight == [-1.5] * 3
        assert unused_grad is None
        assert local_only == [-2.0] * 3


def test_ddp_outside_torchrun_is_a_clear_error(tmp_path, monkeypatch, capsys):
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    argv = ["--ddp", "--family", "label", "--dataset", "mnist", "--data-dir", str(DATA_DIR)]
    assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--ddp runs under torchrun" in capsys.readouterr().err
