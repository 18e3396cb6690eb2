"""The `imagegen train` command line: its options are the fields of `RunConfig` (the run) and
`CommandOptions` (how this invocation runs it), each declared once with its help; Ctrl+C is
answered with what was saved and the command that continues the run."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from training.cli_help import DefaultsHelpFormatter, add_options, from_args, option
from training.data import DatasetError
from training.families import parse_overrides
from training.interrupt import TrainingInterrupted
from training.run_config import RunConfig, resolved
from training.trainer import train


@dataclass(frozen=True, kw_only=True)
class CommandOptions:
    """How this invocation runs the run; not recorded in it (a resumed run may change them)."""

    resume: bool = option(
        False,
        help="continue from the run's checkpoint (an epoch's end, or where Ctrl+C stopped it); "
        "an error when --out has none",
    )
    tensorboard: str = option(
        "",
        metavar="DIR",
        help="also write each step's losses and each epoch's sample grid here for TensorBoard "
        "(tensorboard --logdir DIR)",
    )
    no_progress: bool = option(False, help="no progress bar (the per-epoch lines remain)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegen train",
        description="Train a model family on a dataset. Ctrl+C saves a checkpoint at the step where "
        "it stops and prints the command that continues it (--resume).",
        formatter_class=DefaultsHelpFormatter,
    )
    add_options(parser, RunConfig)
    add_options(parser, CommandOptions)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command: CommandOptions = from_args(CommandOptions, args)
    run: RunConfig = resolved(from_args(RunConfig, args, overrides={}))
    try:
        run = dataclasses.replace(run, overrides=parse_overrides(run.family, args.overrides))
        out = train(
            run, resume=command.resume, progress=not command.no_progress, tensorboard=command.tensorboard
        )
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"imagegen train: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        if stop.report:  # the other ranks leave the message to rank 0
            print(_stopped(stop, argv), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(_interrupted(Path(run.out), argv), file=sys.stderr)
        return 130
    print(f"run saved in {out}")
    return 0


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
