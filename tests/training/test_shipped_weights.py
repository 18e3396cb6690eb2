"""The training weights committed beside shipped versions: each one is the version it sits
beside (its sampler draws what the served ONNX file draws), so `--resume-from models/<id>`
continues that version. Every colour model ships with them (the quality issue's fourth item)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from imagegen.contract.manifest import MANIFEST_NAME, Manifest, sha256_file
from training.weights import load_weights

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = [Manifest.read(p.parent) for p in sorted(MODELS.glob(f"*/{MANIFEST_NAME}"))]
WITH_WEIGHTS = [m for m in SHIPPED if m.training is not None and m.training.weights_file]


def test_every_colour_model_ships_with_its_training_weights():
    colour = [m.id for m in SHIPPED if m.image.channels == 3 and not m.baseline]
    assert colour and colour == [m.id for m in WITH_WEIGHTS if m.image.channels == 3]


@pytest.mark.parametrize("manifest", WITH_WEIGHTS, ids=lambda m: m.id)
def test_the_weights_draw_what_the_served_version_draws(manifest):
    model_dir = MODELS / manifest.id
    assert sha256_file(model_dir / manifest.training.weights_file) == manifest.training.weights_sha256
    model, meta = load_weights(model_dir)
    assert meta["family"] == manifest.family and meta["epoch"] == manifest.training.epochs
    rng = np.random.default_rng(11)
    feeds = {"label": np.arange(4, dtype=np.int64) % manifest.num_classes}
    if "z" in manifest.inputs:
        feeds["z"] = rng.standard_normal((4, manifest.latent_dim)).astype(np.float32)
    session = ort.InferenceSession(str(manifest.onnx_path(model_dir)), providers=["CPUExecutionProvider"])
    served = session.run(["image"], feeds)[0]
    model.eval()
    with torch.no_grad():
        drawn = model.sampler()(*(torch.from_numpy(feeds[name]) for name in model.inputs)).numpy()
    np.testing.assert_allclose(drawn, served, atol=1e-4)
