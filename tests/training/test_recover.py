"""`python -m training.recover`: training weights for a gan or evaluator exported before export
kept them, from its ONNX file (the generator) and a fresh critic, continued with d_warmup."""

from __future__ import annotations

import csv

import numpy as np
import onnxruntime as ort
import pytest
import torch

from imagegen.contract.manifest import Manifest, sha256_file
from tests.training.conftest import tiny_run_config
from training.checkpoint import load_checkpoint
from training.export import export_run
from training.recover import main
from training.trainer import train
from training.weights import WEIGHTS_NAME, load_weights


def _onnx_images(model_dir, manifest, z, label):
    session = ort.InferenceSession(str(manifest.onnx_path(model_dir)), providers=["CPUExecutionProvider"])
    return session.run(["image"], {"z": z, "label": label})[0]


@pytest.mark.parametrize("family", ["gan", "evaluator"])
def test_recovered_generator_draws_what_the_onnx_file_draws(tiny_runs, tmp_path, family, capsys):
    manifest = export_run(tiny_runs(family), tmp_path / "models")
    model_dir = tmp_path / "models" / manifest.id
    (model_dir / "1" / WEIGHTS_NAME).unlink()  # as the versions exported before weights were kept
    out = tmp_path / "recovered.safetensors"
    assert main([str(model_dir), "--out", str(out)]) == 0
    assert '"largest_gap_to_onnx"' in capsys.readouterr().out
    model, meta = load_weights(out, family=family)
    assert meta["run_config"]["recovered_from"].endswith("1/model.onnx") and meta["epoch"] == 0
    z = np.random.default_rng(3).standard_normal((6, manifest.latent_dim)).astype(np.float32)
    label = np.arange(6, dtype=np.int64) % manifest.num_classes
    with torch.no_grad():
        drawn = model.sampler()(torch.from_numpy(z), torch.from_numpy(label)).numpy()
    np.testing.assert_allclose(drawn, _onnx_images(model_dir, manifest, z, label), atol=1e-5)


def test_a_recovered_gan_continues_with_its_critic_learning_alone_first(tiny_runs, tmp_path):
    manifest = export_run(tiny_runs("gan"), tmp_path / "models")
    weights = tmp_path / "recovered.safetensors"
    assert main([str(tmp_path / "models" / manifest.id), "--out", str(weights)]) == 0
    steps = 1000  # more than the epoch has: only the fresh discriminator learns
    cfg = tiny_run_config(tmp_path / "run", "gan", resume_from=str(weights), overrides={"d_warmup": steps})
    run = train(cfg, progress=False)
    with (run / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and all(np.isnan(float(r["g_loss"])) for r in rows)
    trained, _ = load_checkpoint(run)
    recovered, _ = load_weights(weights)
    live = dict(trained.generator.named_parameters())  # its batch-norm statistics move; weights not
    for name, tensor in recovered.generator.named_parameters():
        assert torch.equal(live[name], tensor), name
    assert any(
        not torch.equal(tensor, recovered.discriminator.state_dict()[name])
        for name, tensor in trained.discriminator.state_dict().items()
    )
    # its critic has judged, its generator has not moved: kept beside the served version
    model_dir = tmp_path / "models" / manifest.id
    assert main([str(model_dir), "--attach", str(run / "checkpoint.pt")]) == 0
    attached = Manifest.read(model_dir)
    assert attached.version == manifest.version and attached.onnx == manifest.onnx
    assert attached.training.weights_sha256 == sha256_file(model_dir / attached.training.weights_file)
    served, meta = load_weights(model_dir)
    assert (meta["epoch"], meta["step"]) == (manifest.training.epochs, manifest.training.steps)
    for name, tensor in served.discriminator.state_dict().items():
        assert torch.equal(tensor, trained.discriminator.state_dict()[name]), name
    z = np.random.default_rng(4).standard_normal((6, manifest.latent_dim)).astype(np.float32)
    label = np.arange(6, dtype=np.int64)
    with torch.no_grad():
        drawn = served.sampler()(torch.from_numpy(z), torch.from_numpy(label)).numpy()
    np.testing.assert_allclose(drawn, _onnx_images(model_dir, manifest, z, label), atol=1e-5)


def test_a_run_whose_generator_trained_on_is_not_attached(tiny_runs, tmp_path, capsys):
    manifest = export_run(tiny_runs("gan"), tmp_path / "models")
    model_dir = tmp_path / "models" / manifest.id
    cfg = tiny_run_config(
        tmp_path / "run", "gan", epochs=manifest.training.epochs + 1, resume_from=str(model_dir)
    )
    run = train(cfg, progress=False)
    before = (model_dir / "manifest.json").read_bytes()
    assert main([str(model_dir), "--attach", str(run / "checkpoint.pt")]) == 2
    assert "export it as a new version" in capsys.readouterr().err
    assert (model_dir / "manifest.json").read_bytes() == before


def test_a_vae_or_a_missing_model_is_refused(tiny_runs, tmp_path, capsys):
    manifest = export_run(tiny_runs("vae"), tmp_path / "models")
    assert main([str(tmp_path / "models" / manifest.id), "--out", str(tmp_path / "w.safetensors")]) == 2
    assert "a vae model; only a gan's or an evaluator's generator" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "w.safetensors")]) == 2
    assert "recover: error:" in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists()


def test_a_warm_up_cut_short_by_an_interruption_goes_on_when_resumed(tiny_runs, tmp_path):
    manifest = export_run(tiny_runs("gan"), tmp_path / "models")
    source = str(tmp_path / "models" / manifest.id)
    steps_per_epoch = 3  # 96 images in batches of 32: the warm-up ends inside the second epoch

    def config(out, epochs):
        fields = {"resume_from": source, "max_samples": 96, "overrides": {"d_warmup": 4}}
        return tiny_run_config(tmp_path / out, "gan", epochs=epochs, **fields)

    done = manifest.training.epochs  # --epochs counts from the exported model's epoch
    straight = train(config("straight", done + 2), progress=False)
    train(config("split", done + 1), progress=False)
    split = train(config("split", done + 2), resume=True, progress=False)
    for run in (straight, split):
        with (run / "losses.csv").open() as f:
            g_loss = [float(r["g_loss"]) for r in csv.DictReader(f)]
        assert len(g_loss) == 2 * steps_per_epoch
        assert np.isnan(g_loss[:4]).all() and np.isfinite(g_loss[4:]).all(), g_loss
    trained = {name: load_checkpoint(run)[0].state_dict() for name, run in [("a", straight), ("b", split)]}
    for name, tensor in trained["a"].items():
        assert torch.equal(tensor, trained["b"][name]), name


def test_an_exported_run_with_an_average_attaches_both_of_its_generators(tmp_path):
    """A version whose weights were not kept (too big once) gets its own run's checkpoint back:
    the trained generator as the run left it, the average read from the served file."""
    run = train(tiny_run_config(tmp_path / "run", "evaluator", overrides={"ema": 0.9}), progress=False)
    manifest = export_run(run, tmp_path / "models", settings=["truncation=1.5"])
    model_dir = tmp_path / "models" / manifest.id
    (model_dir / "1" / WEIGHTS_NAME).unlink()
    assert main([str(model_dir), "--attach", str(run / "checkpoint.pt")]) == 0
    served, meta = load_weights(model_dir)
    trained, _ = load_checkpoint(run)
    assert meta["average_in"]["file"] == "model.onnx" and meta["model_config"]["truncation"] == 1.5
    for name, tensor in trained.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(served.state_dict()[name], tensor), name
    z = np.random.default_rng(5).standard_normal((6, manifest.latent_dim)).astype(np.float32)
    label = np.arange(6, dtype=np.int64)
    with torch.no_grad():
        drawn = served.sampler()(torch.from_numpy(z), torch.from_numpy(label)).numpy()
    np.testing.assert_allclose(drawn, _onnx_images(model_dir, manifest, z, label), atol=1e-5)
