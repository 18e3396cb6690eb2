"""The trainer on the committed real subsets: outputs, determinism, resume, CLI errors."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.training.conftest import tiny_run_config
from training.checkpoint import load_checkpoint
from training.data import load_dataset
from training.families import parse_overrides
from training.loop import epoch_order
from training.train_cli import main
from training.trainer import train


def _weights(run_dir):
    model, _ = load_checkpoint(run_dir)
    return model.state_dict()


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_writes_checkpoint_grid_losses_and_sorted_config(tiny_runs):
    run = tiny_runs("gan")
    assert (run / "checkpoint.pt").exists()
    grid = Image.open(run / "samples" / "epoch_001.png")
    assert grid.width > grid.height  # 10 class columns, 8 seed rows of 28x28 (x2)
    with (run / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 // 32 and set(rows[0]) == {"epoch", "step", "d_loss", "g_loss"}
    assert (run / "losses.png").stat().st_size > 0
    text = (run / "config.json").read_text()
    config = json.loads(text)
    assert text == json.dumps(config, indent=2, sort_keys=True) + "\n"
    assert config["model"]["g_width"] == 4 and config["run"]["seed"] == 0


def test_checkpoint_rebuilds_its_model(tiny_runs):
    model, ckpt = load_checkpoint(tiny_runs("vae"))
    assert ckpt["family"] == "vae" and ckpt["epoch"] == 1 and ckpt["step"] == 9
    assert type(model.config).__name__ == "Config" and model.config.width == 8
    assert set(ckpt["optimizers"]) == {"vae"}
    assert ckpt["dataset"]["class_names"] == [str(d) for d in range(10)]


@pytest.mark.parametrize("family", ["gan", "label"])
def test_same_seed_gives_identical_weights_on_cpu(tmp_path, family):
    a = train(tiny_run_config(tmp_path / "a", family, max_samples=96), progress=False)
    b = train(tiny_run_config(tmp_path / "b", family, max_samples=96), progress=False)
    c = train(tiny_run_config(tmp_path / "c", family, max_samples=96, seed=1), progress=False)
    assert _same(_weights(a), _weights(b))
    assert not _same(_weights(a), _weights(c))


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = train(
        tiny_run_config(tmp_path / "straight", "evaluator", epochs=2, max_samples=96), progress=False
    )
    train(tiny_run_config(tmp_path / "split", "evaluator", epochs=1, max_samples=96), progress=False)
    split = train(
        tiny_run_config(tmp_path / "split", "evaluator", epochs=2, max_samples=96),
        resume=True,
        progress=False,
    )
    assert _same(_weights(straight), _weights(split))
    with (split / "losses.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 7))


def test_a_learning_rate_set_on_resume_takes_effect(tmp_path):
    """The saved optimiser state carries its own lr: a resumed run must train at the one it was
    given, as a run started with that lr would from the same point."""
    out = tmp_path / "run"
    train(tiny_run_config(out, "gan", epochs=1, max_samples=96), progress=False)
    slower = tiny_run_config(out, "gan", epochs=2, max_samples=96, overrides={"lr": 1e-5})
    train(slower, resume=True, progress=False)
    _, ckpt = load_checkpoint(out)
    for name, state in ckpt["optimizers"].items():
        assert [g["lr"] for g in state["param_groups"]] == [1e-5], name
    straight = tiny_run_config(tmp_path / "straight", "gan", epochs=2, max_samples=96)
    assert not _same(_weights(out), _weights(train(straight, progress=False)))


def test_cli_trains_and_reports_missing_data(tmp_path, data_dir, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "--family",
            "label",
            "--dataset",
            "fashion",
            "--epochs",
            "1",
            "--data-dir",
            str(data_dir),
            "--batch-size",
            "64",
            "--set",
            "width=4",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and (out / "checkpoint.pt").exists()
    code = main(
        [
            "--family",
            "gan",
            "--dataset",
            "mnist",
            "--epochs",
            "1",
            "--data-dir",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "missing file" in err
    # where the data comes from, how to point at it, and the small real set to try first
    assert "ossci-datasets.s3.amazonaws.com/mnist" in err and "fashion-mnist.s3-website" in err
    assert "--data-dir tests/data" in err


def test_overrides_are_typed_and_checked():
    assert parse_overrides("gan", ["g_width=8", "lr=1e-3", "spectral_norm=false", "loss=bce"]) == {
        "g_width": 8,
        "lr": 1e-3,
        "spectral_norm": False,
        "loss": "bce",
    }
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_overrides("gan", ["width=8"])


def test_guidance_is_for_the_evaluator_only(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config fields \['guidance'\]"):
        train(tiny_run_config(tmp_path, "gan", guidance="reference"), progress=False)


def test_balance_classes_draws_each_class_about_equally(data_dir):
    # real MNIST labels, made lopsided: every 0 and three 1s
    labels = torch.from_numpy(load_dataset("mnist", data_dir).labels)
    zeros, ones = (labels == 0).nonzero().flatten(), (labels == 1).nonzero().flatten()[:3]
    lopsided = labels[torch.cat([zeros, ones])]
    assert len(zeros) >= 20
    plain = epoch_order(lopsided, torch.Generator().manual_seed(0), balance_classes=False)
    assert sorted(plain.tolist()) == list(range(len(lopsided)))
    counts = torch.zeros(2)
    for seed in range(20):
        order = epoch_order(lopsided, torch.Generator().manual_seed(seed), balance_classes=True)
        assert len(order) == len(lopsided)
        counts += torch.bincount(lopsided[order], minlength=2)
    assert 0.4 < float(counts[1] / counts.sum()) < 0.6


def test_balance_classes_from_the_cli_is_recorded_in_the_run(tmp_path, emoji_dir):
    out = tmp_path / "balanced"
    argv = ["--family", "gan", "--dataset", "imagefolder", "--data-dir", str(emoji_dir), "--epochs", "1"]
    argv += ["--batch-size", "9", "--balance-classes", "--no-progress", "--out", str(out)]
    argv += ["--set", "g_width=4", "--set", "d_width=8", "--set", "augment=translation,cutout"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["balance_classes"] is True
    assert config["model"]["augment"] == "translation,cutout"


def _label_cli_args(data_dir, out, epochs: int) -> list[str]:
    return [
        "--family", "label", "--dataset", "fashion", "--epochs", str(epochs), "--data-dir", str(data_dir),
        "--batch-size", "64", "--set", "width=4", "--out", str(out), "--no-progress",
    ]  # fmt: skip


def test_resume_without_a_checkpoint_is_an_error_naming_the_path(tmp_path, data_dir, capsys):
    out = tmp_path / "never-trained"
    code = main([*_label_cli_args(data_dir, out, 1), "--resume"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(out / "checkpoint.pt") in err and "--resume" in err
    assert not (out / "checkpoint.pt").exists()


def test_resume_at_or_past_its_epochs_says_that_epochs_is_the_total(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert main(_label_cli_args(data_dir, out, 1)) == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert main([*_label_cli_args(data_dir, out, 1), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "nothing to train" in said and "--epochs 2" in said
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--family", "vae"], "is a label run, not vae"),
        (["--set", "width=8"], "a run keeps its shapes"),
        (["--dataset", "mnist"], "trained on fashion"),
    ],
)
def test_resume_with_another_family_shape_or_dataset_is_refused_by_name(
    tmp_path, data_dir, capsys, change, named
):
    out = tmp_path / "run"
    assert main(_label_cli_args(data_dir, out, 1)) == 0
    before = (out / "checkpoint.pt").read_bytes()
    code = main([*_label_cli_args(data_dir, out, 2), *change, "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "Traceback" not in err
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("module", ["training.train_cli", "training.export", "training.evaluate"])
def test_every_option_has_help_and_informative_defaults_are_shown(module):
    """`imagegen train|export|evaluate --help` describes every option and prints the defaults
    worth knowing (not an unset option's None, nor a switch's False)."""
    import importlib

    parser = importlib.import_module(module).build_parser()
    options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert options
    undocumented = [a.dest for a in options if not (a.help or "").strip()]
    assert undocumented == []
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    for action in options:
        informative = action.default is not False and action.default != ""
        if informative and isinstance(action.default, int | float | str | Path):
            assert f"(default: {action.default})" in text or "default" in action.help, action.dest


def test_run_eta_covers_the_whole_run():
    from training.run_log import eta

    assert eta(10.0, 5, 10) == "0:00:20"  # 2 s per step, 10 steps to go
    assert eta(3600.0, 1, 2) == "2:00:00"
    assert eta(0.0, 0, 100) == "0:00:00"
