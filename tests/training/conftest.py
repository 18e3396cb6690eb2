"""Shared fixtures for the training tests: the committed real subsets and tiny model sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.run_config import RunConfig
from training.trainer import train

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "tests" / "data"
EMOJI_DIR = DATA_DIR / "emoji"

# Tiny widths so a few steps run in well under a second on 2 cores.
TINY: dict[str, dict] = {
    "label": {"width": 4},
    "gan": {"g_width": 4, "d_width": 8, "latent_dim": 8, "embed_dim": 4},
    "evaluator": {"g_width": 4, "d_width": 8, "latent_dim": 8, "embed_dim": 4, "code_dim": 8},
    "vae": {"width": 8, "latent_dim": 4},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny nets: a second thread only adds contention


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def emoji_dir() -> Path:
    return EMOJI_DIR


def tiny_run_config(out: Path, family: str, dataset: str = "mnist", **fields) -> RunConfig:
    overrides = dict(TINY[family])
    if fields.get("variant") == "seed" and family == "vae":
        overrides = {"width": 8}  # keep the seed's latent size
    overrides.update(fields.pop("overrides", {}))
    base = {
        "family": family,
        "dataset": dataset,
        "epochs": 1,
        "out": str(out),
        "data_dir": str(EMOJI_DIR if dataset == "imagefolder" else DATA_DIR),
        "batch_size": 32,
        "seed": 0,
        "device": "cpu",
        "overrides": overrides,
    }
    if dataset == "imagefolder":
        base.update(batch_size=16, image_size=64, dataset_name="emoji")
    base.update(fields)
    return RunConfig(**base)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Trained tiny runs, made once per (family, dataset, variant) and shared by tests."""
    cache: dict[tuple[str, str, str], Path] = {}

    def get(family: str, dataset: str = "mnist", variant: str = "default") -> Path:
        key = (family, dataset, variant)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"run-{family}-{dataset}-{variant}")
            cache[key] = train(tiny_run_config(out, family, dataset, variant=variant), progress=False)
        return cache[key]

    return get
