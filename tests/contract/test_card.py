"""The model card in the manifest (imagegen.contract.card): typed, whole or absent, never blank;
every shipped model has one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from imagegen.contract.card import CARD_FIELDS, ModelCard
from imagegen.contract.manifest import MANIFEST_NAME, Manifest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "models").glob(f"*/{MANIFEST_NAME}"))


def shipped(model_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "models" / model_id / MANIFEST_NAME).read_text())
    return data


def test_every_shipped_manifest_carries_a_whole_card() -> None:
    assert len(SHIPPED) >= 10
    for path in SHIPPED:
        manifest = Manifest.read(path.parent)
        assert manifest.card is not None, f"{path} has no card"
        assert all(getattr(manifest.card, f) for f in CARD_FIELDS)


@pytest.mark.parametrize(
    ("model_id", "license", "credit"),
    [
        ("gan-mnist", "CC-BY-SA-3.0", "Yann LeCun, Corinna Cortes"),
        ("vae-fashion", "MIT", "Zalando Research"),
        ("gan-emoji", "CC-BY-4.0 AND Apache-2.0", "Twemoji graphics by Twitter, Inc. and other contributors"),
    ],
)
def test_shipped_cards_name_their_datasets_licence(model_id: str, license: str, credit: str) -> None:
    card = Manifest.read(REPO / "models" / model_id).card
    assert card is not None and card.license == license and credit in card.attribution


def test_a_manifest_from_before_cards_loads_without_one() -> None:
    older = shipped("gan-mnist")
    del older["card"]
    manifest = Manifest.model_validate(older)
    assert manifest.card is None
    assert manifest.model_dump(mode="json")["card"] is None  # what /v1/models reports


def test_a_card_round_trips_through_the_manifest_file(tmp_path: Path) -> None:
    manifest = Manifest.model_validate(shipped("vae-mnist"))
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path).card == manifest.card
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["card"]["license"] == "CC-BY-SA-3.0"


@pytest.mark.parametrize("field", CARD_FIELDS)
def test_a_card_missing_a_field_is_refused_naming_it(field: str) -> None:
    data = shipped("gan-mnist")
    del data["card"][field]
    with pytest.raises(ValidationError, match=rf"card\.{field}\s+Field required"):
        Manifest.model_validate(data)


def test_a_blank_field_or_an_unknown_one_is_refused() -> None:
    data = shipped("gan-fashion")
    data["card"]["license"] = "   "
    with pytest.raises(ValidationError, match=r"card\.license\s+Value error, must not be blank"):
        Manifest.model_validate(data)
    data = shipped("gan-fashion")
    data["card"]["licence"] = "MIT"  # misspelt: an error where it is written
    with pytest.raises(ValidationError, match=r"card\.licence\s+Extra inputs are not permitted"):
        Manifest.model_validate(data)


def test_card_fields_are_stripped() -> None:
    card = ModelCard(license=" MIT ", attribution="a", training_data="b", intended_use="c", limitations="d")
    assert card.license == "MIT"
