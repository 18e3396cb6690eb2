"""Checkpoints that rebuild their model: family, model config, run config, progress, state dicts,
optimiser and RNG states. Export and resume read only this file.

Progress is `epoch` (epochs finished), `step` (optimiser steps in all) and `epoch_step` (steps
done in the unfinished epoch: 0 at an epoch's end, more when Ctrl+C stopped a run mid-epoch).
`rng["data"]` is the data order's generator as it was before that unfinished epoch drew its
permutation, so a resumed run draws the same order and skips the `epoch_step` batches done."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from training.families import get_family
from training.families.base import FamilyModel

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def build_model(family: str, model_config: dict[str, Any]) -> FamilyModel:
    module = get_family(family)
    return module.Model(module.Config(**model_config))


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a run killed mid-write keeps its last checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def make_state(
    model: FamilyModel,
    opts: dict[str, torch.optim.Optimizer],
    *,
    family: str,
    run_config: dict[str, Any],
    dataset: dict[str, Any],
    epoch: int,
    step: int,
    duration_s: float,
    rng: dict[str, Any],
    epoch_step: int = 0,
) -> dict[str, Any]:
    return {
        "family": family,
        "model_config": dataclasses.asdict(model.config),
        "run_config": run_config,
        "dataset": dataset,
        "epoch": epoch,
        "step": step,
        "epoch_step": epoch_step,
        "duration_s": duration_s,
        "model": model.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in opts.items()},
        "rng": rng,
        "torch": str(torch.__version__),
    }


def load_checkpoint(path: Path | str) -> tuple[FamilyModel, dict[str, Any]]:
    """(model with its weights, on CPU, the checkpoint dict)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path} (train first: imagegen train ... --out {path.parent})"
        )
    # tensors and plain data only, so loading runs no code; TorchVersion is a str that older
    # checkpoints stored for torch.__version__
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["family"], ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model, ckpt
