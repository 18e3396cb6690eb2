"""Model cards through the live server: `/v1/models/{id}` and `/v1/models` show each shipped
model's card as its manifest on disk holds it; a manifest written before cards still loads and
serves, reporting `card: null`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import copy_model, serving


def on_disk(models_dir: Path, model_id: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((models_dir / model_id / "manifest.json").read_text())["card"]
    return card


def test_one_model_shows_its_shipped_card(
    client: httpx.Client, models_dir: Path, catalog: list[dict[str, Any]]
) -> None:
    for model_id, licence in (("gan-mnist", "CC-BY-SA-3.0"), ("gan-emoji", "CC-BY-4.0 AND Apache-2.0")):
        if model_id not in {m["id"] for m in catalog}:
            pytest.skip(f"{model_id} is not a ready model")
        body = client.get(f"/v1/models/{model_id}").json()
        assert body["card"] == on_disk(models_dir, model_id) == body["manifest"]["card"]
        assert body["card"]["license"] == licence
        assert set(body["card"]) == {"license", "attribution", "training_data", "intended_use", "limitations"}


def test_the_listing_shows_every_models_card(client: httpx.Client, models_dir: Path) -> None:
    listing = client.get("/v1/models").json()["models"]
    assert listing
    for model in listing:
        assert model["card"] == on_disk(models_dir, model["id"]), model["id"]


def test_a_manifest_from_before_cards_serves_with_card_null(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    repo = tmp_path_factory.mktemp("older")
    target = copy_model(models_dir, "label-mnist", repo)
    manifest = json.loads((target / "manifest.json").read_text())
    del manifest["card"]
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with serving(repo, tmp_path_factory.mktemp("older-log")) as srv:
        body = httpx.get(srv.url + "/v1/models/label-mnist", timeout=30).json()
        assert body["state"] == "ready" and body["card"] is None and body["manifest"]["card"] is None
        image = httpx.get(srv.url + "/generate", params={"model": "label-mnist", "digit": 3}, timeout=30)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
