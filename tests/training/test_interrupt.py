"""Ctrl+C in `imagegen train`: a real subprocess on the committed MNIST subset is sent SIGINT
mid-epoch, saves a checkpoint at the step where it stopped, prints the command that continues
it, and that command ends bit-identical (weights and losses.csv) to a run never interrupted.

The test pauses the run (SIGSTOP, to its own pid only) where losses.csv -- flushed every step --
shows it is not next to an epoch boundary, then sends SIGINT and lets it continue: it stops at
the step it had logged or at the one it was taking, both mid-epoch, so the checkpoint under test
is always a mid-epoch one.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.training.conftest import DATA_DIR, ROOT, TINY
from training.checkpoint import load_checkpoint
from training.distributed import digest
from training.train_cli import main

IMAGES, BATCH, EPOCHS = 300, 8, 3
STEPS_PER_EPOCH = IMAGES // BATCH


def gan_argv(out: Path, epochs: int = EPOCHS) -> list[str]:
    argv = ["--family", "gan", "--dataset", "mnist", "--data-dir", str(DATA_DIR), "--epochs", str(epochs)]
    argv += ["--batch-size", str(BATCH), "--threads", "1", "--device", "cpu", "--no-progress"]
    argv += [f"--set={k}={v}" for k, v in TINY["gan"].items()]
    return [*argv, "--out", str(out)]


def logged_steps(csv_path: Path) -> int:
    """Complete rows in losses.csv (the header and a half-written last line not counted)."""
    if not csv_path.exists():
        return 0
    return max(0, csv_path.read_text().count("\n") - 1)


def mid_epoch(done: int, epochs: int, steps_per_epoch: int) -> bool:
    """Stopping at `done` or `done + 1` steps is stopping inside an epoch."""
    return 0 < done < epochs * steps_per_epoch - 1 and done % steps_per_epoch not in (0, steps_per_epoch - 1)


def interrupt_mid_epoch(
    signal_run: Callable[[int], None], running: Callable[[], bool], csv_path: Path, epochs: int, steps: int
) -> int:
    """Send SIGINT while the run is paused mid-epoch; returns the steps logged at that moment."""
    while running():
        if mid_epoch(logged_steps(csv_path), epochs, steps):
            signal_run(signal.SIGSTOP)
            done = logged_steps(csv_path)  # it may have moved on before it stopped
            if mid_epoch(done, epochs, steps):
                signal_run(signal.SIGINT)
                signal_run(signal.SIGCONT)
                return done
            signal_run(signal.SIGCONT)
        time.sleep(0.005)  # poll losses.csv again
    raise AssertionError("the run ended before it could be interrupted")


def run_cli(argv: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "imagegen.cli", "train", *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ctrl_c_saves_mid_epoch_and_the_printed_resume_ends_as_an_uninterrupted_run(tmp_path):
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "imagegen.cli", "train", *gan_argv(out)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        running = lambda: proc.poll() is None  # noqa: E731
        done = interrupt_mid_epoch(proc.send_signal, running, out / "losses.csv", EPOCHS, STEPS_PER_EPOCH)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err

    _, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] in (done, done + 1)  # the logged step, or the one it was taking
    assert ckpt["epoch_step"] == ckpt["step"] % STEPS_PER_EPOCH > 0
    assert ckpt["epoch"] == ckpt["step"] // STEPS_PER_EPOCH
    assert logged_steps(out / "losses.csv") == ckpt["step"]  # the rows up to the saved step
    assert f"saved {out / 'checkpoint.pt'} at step {ckpt['step']}" in err

    resume = err.strip().splitlines()[-1].strip()
    assert resume.startswith("imagegen train --family gan") and resume.endswith("--resume")
    resumed = run_cli(shlex.split(resume)[2:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{ckpt['epoch_step']} steps into epoch {ckpt['epoch'] + 1}" in resumed.stdout

    straight = tmp_path / "straight"
    assert main(gan_argv(straight)) == 0
    final, straight_final = load_checkpoint(out)[0], load_checkpoint(straight)[0]
    assert digest(final.state_dict()) == digest(straight_final.state_dict())
    assert (out / "losses.csv").read_text() == (straight / "losses.csv").read_text()
    assert logged_steps(out / "losses.csv") == EPOCHS * STEPS_PER_EPOCH


def test_resume_from_an_interrupted_checkpoint_drops_rows_logged_after_it(tmp_path):
    """A run killed outright (no Ctrl+C handling) after its last checkpoint leaves rows past it;
    --resume truncates losses.csv to the checkpoint's step before logging again."""
    out = tmp_path / "run"
    assert main(gan_argv(out, epochs=1)) == 0
    with (out / "losses.csv").open("a") as f:  # what a killed second epoch would have flushed
        f.write(f"2,{STEPS_PER_EPOCH + 1},1.0,1.0\n")
    assert main([*gan_argv(out, epochs=2), "--resume"]) == 0
    steps = [int(line.split(",")[1]) for line in (out / "losses.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))


DDP_STEPS_PER_EPOCH = 128 // BATCH  # gan_args() trains on a 128-image subset


def torchrun(out: Path, *args: str) -> list[str]:
    """The torchrun command test_ddp uses (2 CPU ranks on loopback), with this file's batch."""
    from tests.training.test_ddp import WORLD, free_port, gan_args

    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(WORLD)]
    command += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    command += ["-m", "imagegen.cli", "train"]
    command += ["--ddp", "--dataset", "mnist", "--data-dir", str(DATA_DIR), "--batch-size", str(BATCH)]
    command += ["--device", "cpu", "--threads", "1", "--no-progress", *gan_args(), "--out", str(out)]
    return [*command, *args]


def test_ctrl_c_under_torchrun_saves_where_the_ranks_agree_and_resumes_exactly(tmp_path):
    """Ctrl+C in a terminal signals torchrun and both ranks (the process group; torchrun then
    forwards its own SIGINT too): the ranks agree on one step, rank 0 saves it, and the printed
    command continues every rank's noise stream and data shard to the straight run's end."""
    out, epochs = tmp_path / "interrupted", 2
    proc = subprocess.Popen(
        torchrun(out, "--epochs", str(epochs)),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        done = interrupt_mid_epoch(
            lambda sig: os.killpg(proc.pid, sig),
            lambda: proc.poll() is None,
            out / "losses.csv",
            epochs,
            DDP_STEPS_PER_EPOCH,
        )
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0  # torchrun reports its workers' exit 130 as a failure
    _, ckpt = load_checkpoint(out / "checkpoint.pt")
    # the ranks stop at the first step they agree on after the signal: on a loaded machine that
    # can be a few steps after the one rank 0 had logged when it was paused, never before it
    assert ckpt["step"] >= done and ckpt["epoch_step"] > 0
    assert len(set(ckpt["replicas"]["digests"])) == 1 and len(ckpt["rng"]["ranks"]) == 2
    assert logged_steps(out / "losses.csv") == ckpt["step"]
    resume = next(line.strip() for line in err.splitlines() if line.strip().startswith("torchrun "))
    assert "--ddp" in resume and resume.endswith("--resume")

    resumed_args = shlex.split(resume)[shlex.split(resume).index("train") + 1 :]
    straight = tmp_path / "straight"
    for command in (torchrun(out, *resumed_args), torchrun(straight, "--epochs", str(epochs))):
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr
    final, straight_final = load_checkpoint(out)[0], load_checkpoint(straight)[0]
    assert digest(final.state_dict()) == digest(straight_final.state_dict())
    assert (out / "losses.csv").read_text() == (straight / "losses.csv").read_text()
