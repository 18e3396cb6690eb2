"""`imagegen train --tensorboard DIR`: the event file TensorBoard reads holds every logged step's
losses and each epoch's sample grid, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.training.conftest import DATA_DIR, TINY
from training.train_cli import main

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason="the train extra's tensorboard"
)

STEPS_PER_EPOCH = 96 // 32


def train_argv(out: Path, board: Path, epochs: int) -> list[str]:
    argv = ["--family", "gan", "--dataset", "mnist", "--data-dir", str(DATA_DIR), "--epochs", str(epochs)]
    argv += ["--max-samples", "96", "--batch-size", "32", "--threads", "1", "--no-progress"]
    argv += [f"--set={k}={v}" for k, v in TINY["gan"].items()]
    return [*argv, "--out", str(out), "--tensorboard", str(board)]


def read_events(board: Path) -> event_accumulator.EventAccumulator:
    assert list(board.glob("events.out.tfevents.*")), f"no event file in {board}"
    events = event_accumulator.EventAccumulator(str(board), size_guidance={"scalars": 0, "images": 0})
    return events.Reload()


def test_losses_per_step_and_a_grid_per_epoch_reach_tensorboard(tmp_path):
    out, board = tmp_path / "run", tmp_path / "board"
    assert main(train_argv(out, board, epochs=2)) == 0
    events = read_events(board)
    assert set(events.Tags()["scalars"]) == {"loss/d_loss", "loss/g_loss"}
    with (out / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    d_loss = events.Scalars("loss/d_loss")
    assert [e.step for e in d_loss] == [int(r["step"]) for r in rows]
    assert [e.value for e in d_loss] == pytest.approx([float(r["d_loss"]) for r in rows], rel=1e-5)

    grids = events.Images("samples")
    assert [g.step for g in grids] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]  # at each epoch's end
    assert grids[0].width > grids[0].height > 0  # 10 class columns of 8 seed rows
    assert grids[0].encoded_image_string.startswith(b"\x89PNG")


def test_a_resume_drops_the_events_logged_after_its_checkpoint(tmp_path):
    """A run killed after logging past its checkpoint: the resumed run's curves go on from the
    checkpoint's step once, as losses.csv does, not twice over the lost steps."""
    out, board = tmp_path / "run", tmp_path / "board"
    assert main(train_argv(out, board, epochs=1)) == 0
    first_epoch = (out / "checkpoint.pt").read_bytes()
    assert main([*train_argv(out, board, epochs=2), "--resume"]) == 0  # logs steps 4-6
    (out / "checkpoint.pt").write_bytes(first_epoch)  # as if killed before epoch 2's checkpoint
    assert main([*train_argv(out, board, epochs=2), "--resume"]) == 0  # steps 4-6 again
    steps = [e.step for e in read_events(board).Scalars("loss/g_loss")]
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))
