"""Model cards at export (training.cards): derived from the dataset and family where we know the
data's licence, refused for an image folder nobody has described, given by card.json or flags."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from imagegen.contract.manifest import Manifest
from tests.training.conftest import EMOJI_DIR, tiny_run_config
from training.cards import CardMissing, render_cards
from training.export import export_run, main
from training.trainer import train

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny gan trained on a user's own image folder (real images: a copy of the test Twemoji
    subset under another name, so nothing marks it as our emoji set), and that folder."""
    root = tmp_path_factory.mktemp("user-data")
    folder = root / "stickers"
    shutil.copytree(EMOJI_DIR / "twemoji", folder)
    out = tmp_path_factory.mktemp("run-stickers")
    config = tiny_run_config(out, "gan", "imagefolder", data_dir=str(folder), dataset_name="stickers")
    return train(config, progress=False), folder


def test_an_image_folder_without_a_card_is_refused_naming_what_to_add(user_run, tmp_path):
    run, folder = user_run
    with pytest.raises(CardMissing) as refused:
        export_run(run, tmp_path)
    message = str(refused.value)
    assert "'stickers' has no model card" in message and "license and attribution" in message
    assert "--license ..." in message and "--attribution ..." in message
    assert str(folder / "card.json") in message
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_the_cli_refuses_it_too_and_takes_the_card_as_flags(user_run, tmp_path, capsys):
    run, _ = user_run
    models = tmp_path / "models"
    assert main([str(run), "--models-dir", str(models), "--no-gate"]) == 1
    assert "imagegen export: dataset 'stickers' has no model card" in capsys.readouterr().err
    assert not (models / "gan-stickers").exists()
    blank = ["--license", " ", "--attribution", "Me"]
    assert main([str(run), "--models-dir", str(models), "--no-gate", *blank]) == 1
    assert "--license ..." in capsys.readouterr().err
    given = ["--license", "CC0-1.0", "--attribution", "Stickers drawn by A. Person", "--limitations", "Few."]
    assert main([str(run), "--models-dir", str(models), "--no-gate", *given]) == 0
    card = Manifest.read(models / "gan-stickers").card
    assert card is not None and card.license == "CC0-1.0"
    assert card.attribution == "Stickers drawn by A. Person"
    assert card.limitations == "Few."  # a given field replaces the derived one
    assert "class-conditional DCGAN" in card.intended_use  # the rest comes from the family
    assert "images of the image folder 'stickers'" in card.training_data


def test_a_card_file_in_the_folder_describes_it(user_run, tmp_path):
    run, folder = user_run
    card_file = folder / "card.json"
    try:
        card_file.write_text(json.dumps({"license": "CC-BY-4.0", "attribution": "Twemoji by Twitter"}))
        card = export_run(run, tmp_path).card
        assert card is not None and (card.license, card.attribution) == ("CC-BY-4.0", "Twemoji by Twitter")
        card_file.write_text(json.dumps({"license": "MIT", "licence": "MIT"}))
        with pytest.raises(CardMissing, match=r"unknown: \['licence'\]"):
            export_run(run, tmp_path)
    finally:
        card_file.unlink(missing_ok=True)


def fill_cards() -> ModuleType:
    """scripts/fill_cards.py, loaded as a module."""
    spec = importlib.util.spec_from_file_location("fill_cards", REPO / "scripts" / "fill_cards.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_shipped_cards_are_what_export_derives():
    """scripts/fill_cards.py --check: every shipped manifest's card is the one the export source
    gives now (the emoji folder is known by its layout, which tests/data/emoji shares)."""
    script = fill_cards()
    assert script.main(["--models-dir", str(REPO / "models"), "--data-dir", str(DATA), "--check"]) == 0


def test_fill_cards_writes_only_the_card(tmp_path):
    script = fill_cards()
    shipped = REPO / "models" / "vae-mnist-seed" / "manifest.json"
    older = json.loads(shipped.read_text())
    del older["card"]
    target = tmp_path / "vae-mnist-seed" / "manifest.json"
    target.parent.mkdir()
    target.write_text(json.dumps(older, indent=2, sort_keys=True) + "\n")
    assert script.main(["--models-dir", str(tmp_path), "--check"]) == 1
    assert script.main(["--models-dir", str(tmp_path)]) == 0
    assert target.read_text() == shipped.read_text()  # byte for byte, the card the only change
    card = Manifest.read(tmp_path / "vae-mnist-seed").card
    assert card is not None and "Unconditional" in card.limitations


def test_quality_md_shows_every_shipped_card():
    """docs/quality.md's "Model cards" rows are what training.report renders from the manifests."""
    manifests = [Manifest.read(p.parent) for p in sorted((REPO / "models").glob("*/manifest.json"))]
    rows = render_cards([(m.id, m.card) for m in manifests])[7:]
    assert len(rows) == len(manifests) and all(m.card is not None for m in manifests)
    doc = (REPO / "docs" / "quality.md").read_text().splitlines()
    section = doc[doc.index("## Model cards"):]
    assert sorted(rows) == sorted(line for line in section if line.startswith("| `"))
