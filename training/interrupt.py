"""Ctrl+C in a training run: stop at the next step boundary (`StopOnCtrlC`), where the trainer
saves a checkpoint and raises `TrainingInterrupted`."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from training import distributed


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

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
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
