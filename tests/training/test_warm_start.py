"""`imagegen train --init-from`: a run starts from an exported model's sampler weights."""

from __future__ import annotations

import csv

import numpy as np
import onnxruntime as ort
import torch

from imagegen.contract.manifest import Manifest
from training.export import export_run
from training.families import get_family
from training.trainer import main, train
from training.warm_start import WarmStartError, load_exported_weights

from .conftest import DATA_DIR, TINY, tiny_run_config


def _onnx_images(model_dir, z, label):
    manifest = Manifest.read(model_dir)
    session = ort.InferenceSession(str(manifest.onnx_path(model_dir)), providers=["CPUExecutionProvider"])
    return session.run(["image"], {"z": z, "label": label})[0]


def _inputs(latent_dim, n=6, classes=10):
    z = np.random.default_rng(1).standard_normal((n, latent_dim)).astype(np.float32)
    return z, np.arange(n, dtype=np.int64) % classes


def test_loaded_sampler_draws_what_the_onnx_file_draws(tiny_runs, tmp_path):
    export_run(tiny_runs("gan"), tmp_path)
    gan = get_family("gan")
    model = gan.Model(gan.Config.create(num_classes=10, ema=0.99, **TINY["gan"]))
    names = load_exported_weights(model.sampler(), tmp_path / "gan-mnist")
    model.after_warm_start()
    assert "generator.fc.weight" in names  # the one the exporter renames (MatMul on its transpose)
    z, label = _inputs(model.config.latent_dim)
    with torch.no_grad():
        drawn = model.sampler()(torch.from_numpy(z), torch.from_numpy(label)).numpy()
    np.testing.assert_allclose(drawn, _onnx_images(tmp_path / "gan-mnist", z, label), atol=1e-5)
    # the trained generator starts where the averaged (sampled) one does
    averaged = model.generator_ema.state_dict()
    assert all(torch.equal(v, averaged[k]) for k, v in model.generator.state_dict().items())


def test_a_vae_decoder_and_class_prior_load_from_their_onnx_file(tmp_path):
    overrides = {"class_prior": True, "label_every_stage": True, "temperature": 0.6}
    run = train(tiny_run_config(tmp_path / "run", "vae", overrides=overrides), progress=False)
    export_run(run, tmp_path / "models")
    vae = get_family("vae")
    model = vae.Model(vae.Config.create(num_classes=10, **TINY["vae"], **overrides))
    names = load_exported_weights(model.sampler(), tmp_path / "models" / "vae-mnist")
    assert "latent.prior.mu.weight" in names  # stored under its own path, prior.mu.weight
    z, label = _inputs(model.config.latent_dim)
    with torch.no_grad():
        drawn = model.sampler()(torch.from_numpy(z), torch.from_numpy(label)).numpy()
    np.testing.assert_allclose(drawn, _onnx_images(tmp_path / "models" / "vae-mnist", z, label), atol=1e-5)


def test_discriminator_warm_up_leaves_the_loaded_generator_alone(tiny_runs, tmp_path):
    export_run(tiny_runs("gan"), tmp_path / "models")
    steps = 1000  # more than one epoch has: only the discriminator learns in this run
    cfg = tiny_run_config(
        tmp_path / "run",
        "gan",
        init_from=str(tmp_path / "models" / "gan-mnist"),
        overrides={"d_warmup": steps},
    )
    run = train(cfg, progress=False)
    with (run / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and all(np.isnan(float(r["g_loss"])) for r in rows)
    assert all(np.isfinite(float(r["d_loss"])) for r in rows)
    warm = export_run(run, tmp_path / "models", model_id="warm")
    assert warm.training.init_from == str(tmp_path / "models" / "gan-mnist" / "1" / "model.onnx")
    z, label = _inputs(TINY["gan"]["latent_dim"])
    np.testing.assert_allclose(
        _onnx_images(tmp_path / "models" / "warm", z, label),
        _onnx_images(tmp_path / "models" / "gan-mnist", z, label),
        atol=1e-5,
    )


def test_a_model_of_another_size_or_family_is_refused(tiny_runs, tmp_path, capsys):
    export_run(tiny_runs("gan"), tmp_path / "models")
    export_run(tiny_runs("vae"), tmp_path / "models")
    gan = get_family("gan")
    wider = gan.Model(gan.Config.create(num_classes=10, **{**TINY["gan"], "g_width": 8}))
    try:
        load_exported_weights(wider.sampler(), tmp_path / "models" / "gan-mnist")
    except WarmStartError as exc:
        assert "has shape" in str(exc) and "same family and size settings" in str(exc)
    else:
        raise AssertionError("a wider generator was loaded from a narrower one")

    base = ["--family", "gan", "--dataset", "mnist", "--epochs", "1", "--out", str(tmp_path / "run")]
    base += ["--data-dir", str(DATA_DIR)]
    for key, value in TINY["gan"].items():
        base += ["--set", f"{key}={value}"]
    for source, expected in [
        (tmp_path / "models" / "vae-mnist", "lacks"),
        (tmp_path / "nowhere.onnx", "cannot read"),
        (tmp_path, "has no manifest.json"),
    ]:
        code = main([*base, "--init-from", str(source)])
        err = capsys.readouterr().err
        assert code == 2 and expected in err, err
