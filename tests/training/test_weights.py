"""Training weights beside each exported version: `imagegen train --resume-from models/<id>`
continues the shipped model where its run stopped (issue: no training progress may be lost)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from imagegen.contract.manifest import Manifest, sha256_file
from tests.training.conftest import tiny_run_config
from training.checkpoint import load_checkpoint
from training.export import export_run
from training.train_cli import main
from training.trainer import train
from training.weights import WEIGHTS_NAME, WeightsError, load_weights


def test_export_keeps_every_net_and_the_progress(tiny_runs, tmp_path):
    run = tiny_runs("gan")
    manifest = export_run(run, tmp_path)
    weights = tmp_path / manifest.id / "1" / WEIGHTS_NAME
    assert manifest.training.weights_file == f"1/{WEIGHTS_NAME}"
    assert manifest.training.weights_sha256 == sha256_file(weights)
    saved = load_file(str(weights))
    trained, ckpt = load_checkpoint(run)
    assert {k.split(".")[0] for k in saved} >= {"generator", "discriminator"}
    for name, tensor in trained.state_dict().items():
        assert torch.equal(saved[name], tensor), name
    model, meta = load_weights(tmp_path / manifest.id)
    assert meta["epoch"] == ckpt["epoch"] and meta["step"] == ckpt["step"]
    assert meta["family"] == "gan" and model.config == trained.config


def test_resume_from_a_model_continues_its_epochs(tiny_runs, tmp_path):
    manifest = export_run(tiny_runs("vae"), tmp_path / "models")
    cfg = tiny_run_config(
        tmp_path / "more", "vae", epochs=2, resume_from=str(tmp_path / "models" / manifest.id), overrides={}
    )
    out = train(cfg, progress=False)
    _, ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * manifest.training.steps
    assert ckpt["run_config"]["resume_from"].endswith(f"1/{WEIGHTS_NAME}")
    # the losses logged continue from the exported step, not from zero
    first_step = int((out / "losses.csv").read_text().splitlines()[1].split(",")[1])
    assert first_step == manifest.training.steps + 1
    continued = export_run(out, tmp_path / "models")
    assert continued.version == 2 and continued.training.epochs == 2
    assert continued.training.init_from.endswith(f"{manifest.id}/1/{WEIGHTS_NAME}")


def test_resume_from_refuses_another_family_or_shape(tiny_runs, tmp_path, capsys):
    manifest = export_run(tiny_runs("gan"), tmp_path / "models")
    source = str(tmp_path / "models" / manifest.id)
    wrong_family = tiny_run_config(tmp_path / "a", "vae", resume_from=source, overrides={})
    with pytest.raises(ValueError, match="is a gan model, not vae"):
        train(wrong_family, progress=False)
    wider = dataclasses.replace(
        tiny_run_config(tmp_path / "b", "gan", resume_from=source), overrides={"g_width": 8}
    )
    with pytest.raises(WeightsError, match="generator"):
        train(wider, progress=False)
    emoji = tiny_run_config(tmp_path / "c", "gan", dataset="imagefolder", resume_from=source, overrides={})
    with pytest.raises(ValueError, match="1x28px images of 10 classes"):
        train(emoji, progress=False)


def test_resume_from_a_model_without_weights_says_so(tmp_path, capsys, data_dir):
    shipped_before_weights = tmp_path / "old"
    shipped_before_weights.mkdir()
    Manifest.read(data_dir.parents[1] / "models" / "label-mnist").write(shipped_before_weights)
    code = main(
        [
            "--family",
            "label",
            "--dataset",
            "mnist",
            "--data-dir",
            str(data_dir),
            "--epochs",
            "2",
            "--resume-from",
            str(shipped_before_weights),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "no training weights" in capsys.readouterr().err


def _column(out, name: str) -> list[float]:
    lines = (out / "losses.csv").read_text().splitlines()
    index = lines[0].split(",").index(name)
    return [float(line.split(",")[index]) for line in lines[1:]]


def test_a_plain_vae_continues_as_a_vae_gan_and_its_warm_up_is_not_repeated(tiny_runs, tmp_path):
    """--set adv_weight on a plain VAE's weights: a fresh critic judges alone for critic_warmup
    steps, then teaches the decoder; resuming that run (its checkpoint has the critic) goes on
    teaching at once (each epoch of a driven run once began a new warm-up, so the terms never acted)."""
    manifest = export_run(tiny_runs("vae"), tmp_path / "models")
    gan_terms = {"adv_weight": 0.01, "feature_weight": 0.01, "critic_warmup": 2}
    source = str(tmp_path / "models" / manifest.id)
    out = train(
        tiny_run_config(tmp_path / "gan", "vae", epochs=2, resume_from=source, overrides=gan_terms),
        progress=False,
    )
    adv = _column(out, "adv")
    assert adv[:2] == [0.0, 0.0] and all(a > 0 for a in adv[2:]), adv
    resumed = tiny_run_config(tmp_path / "gan", "vae", epochs=3, resume_from=source, overrides=gan_terms)
    adv = _column(train(resumed, resume=True, progress=False), "adv")
    assert all(a > 0 for a in adv[2:]), adv  # the third epoch's steps too


def test_a_vae_gan_continues_with_a_label_blind_classifier(tiny_runs, tmp_path):
    """--set class_weight on a VAE-GAN's weights (critic included): the classifier is new, so
    it trains alone for the warm-up steps, then its cross-entropy on prior samples teaches the
    decoder; it never sees the label, and only the decoder is exported."""
    gan_terms = {"adv_weight": 0.01, "feature_weight": 0.01, "critic_warmup": 2}
    gan = train(tiny_run_config(tmp_path / "gan", "vae", overrides=gan_terms), progress=False)
    manifest = export_run(gan, tmp_path / "models")
    source = str(tmp_path / "models" / manifest.id)
    judged = tiny_run_config(
        tmp_path / "cls", "vae", epochs=2, resume_from=source, overrides={**gan_terms, "class_weight": 0.01}
    )
    out = train(judged, progress=False)
    calls = _column(out, "cls")
    assert calls[:2] == [0.0, 0.0] and all(c > 0 for c in calls[2:]), calls
    model, _ = load_checkpoint(out)
    assert model.critic.class_logits(torch.rand(4, 1, 28, 28)).shape == (4, 10)  # no label input
    exported = export_run(out, tmp_path / "more")
    saved = load_file(str(tmp_path / "more" / exported.id / "1" / WEIGHTS_NAME))
    assert any(k.startswith("critic.classes.") for k in saved)  # kept for the next continuation
    assert set(exported.inputs) == {"z", "label"}  # the sampler alone is served


def test_a_resumed_run_keeps_the_weights_it_began_from(tiny_runs, tmp_path):
    models = tmp_path / "models"
    manifest = export_run(tiny_runs("gan"), models)
    source = str(models / manifest.id)  # models/<id>: moves on when a new version is exported

    def config(epochs):
        return tiny_run_config(tmp_path / "more", "gan", epochs=epochs, resume_from=source, overrides={})

    train(config(manifest.training.epochs + 1), progress=False)
    assert export_run(tmp_path / "more", models).version == 2
    out = train(config(manifest.training.epochs + 2), resume=True, progress=False)
    _, ckpt = load_checkpoint(out)
    assert ckpt["run_config"]["resume_from"].endswith(f"{manifest.id}/1/{WEIGHTS_NAME}")
    assert export_run(out, models).training.init_from.endswith(f"{manifest.id}/1/{WEIGHTS_NAME}")


@pytest.mark.parametrize("family", ["gan", "evaluator"])
def test_a_moving_average_is_kept_once_in_the_onnx_file_beside(tmp_path, family):
    """The served generator is the average, weight for weight, so the weights file leaves it to
    the ONNX file (an evaluator-emoji version's weights were over the 10 MB file limit with it)."""
    run = train(tiny_run_config(tmp_path / "run", family, overrides={"ema": 0.9}), progress=False)
    manifest = export_run(run, tmp_path / "models")
    version = tmp_path / "models" / manifest.id / "1"
    saved = load_file(str(version / WEIGHTS_NAME))
    assert saved and not any(k.startswith("generator_ema.") for k in saved)
    trained, _ = load_checkpoint(run)
    assert not torch.equal(trained.generator.fc.weight, trained.generator_ema.fc.weight)
    model, meta = load_weights(tmp_path / "models" / manifest.id)
    assert meta["average_in"]["file"] == "model.onnx"
    for name, tensor in trained.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(model.state_dict()[name], tensor), name
    # continuing it starts from the same average, not from the trained generator
    more = tiny_run_config(tmp_path / "more", family, epochs=2, resume_from=str(version.parent))
    assert load_checkpoint(train(more, progress=False))[1]["epoch"] == 2


def test_weights_whose_onnx_file_changed_or_went_missing_say_so(tmp_path):
    run = train(tiny_run_config(tmp_path / "run", "gan", overrides={"ema": 0.9}), progress=False)
    manifest = export_run(run, tmp_path / "models")
    weights = tmp_path / "models" / manifest.id / "1" / WEIGHTS_NAME
    alone = tmp_path / "alone" / WEIGHTS_NAME
    alone.parent.mkdir()
    alone.write_bytes(weights.read_bytes())
    with pytest.raises(WeightsError, match="model.onnx, which is missing; keep the version's files together"):
        load_weights(alone)
    (weights.parent / "model.onnx").write_bytes(b"not the exported graph")
    with pytest.raises(WeightsError, match="which is changed"):
        load_weights(weights)
