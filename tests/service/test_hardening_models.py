"""Model-level hardening (issue 16, rows 8 and 10): a family request never falls back silently to
a `-seed` baseline, a model file deleted or changed on disk while served is reported, and no
client-facing error carries an absolute path or a library's message.

Each test builds a small repository from copies of real models and starts a real server on it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from imagegen.contract.manifest import sha256_file
from tests.service.conftest import copy_model, start_server

NEEDED = ("label-mnist", "label-mnist-seed", "gan-emoji-seed")


@pytest.fixture(scope="module")
def needed(models_dir: Path) -> Path:
    missing = [m for m in NEEDED if not (models_dir / m).is_dir()]
    if missing:
        pytest.skip(f"models {missing} are not in the repository")
    return models_dir


def _onnx_name(folder: Path) -> str:
    """The served version's ONNX file, as the manifest names it (e.g. 2/model.onnx)."""
    name: str = json.loads((folder / "manifest.json").read_text())["onnx"]["file"]
    return name


def _onnx(folder: Path) -> Path:
    return folder / _onnx_name(folder)


def test_family_requests_never_fall_back_to_a_baseline(needed: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    # label-mnist with a manifest that does not validate, beside its seed baseline.
    broken = copy_model(needed, "label-mnist", repo)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["num_classes"] = "ten"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    copy_model(needed, "label-mnist-seed", repo)
    # gan-emoji deleted: only its baseline is left.
    copy_model(needed, "gan-emoji-seed", repo)
    srv = start_server(repo, tmp_path)
    try:
        url = srv.url
        for params in ({"model": "label", "digit": "3"}, {"model": "label", "dataset": "mnist"}):
            r = httpx.get(url + "/generate", params=params)
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "model_unavailable"
            assert "label-mnist failed to load" in error["message"].replace("'", "")
            assert "invalid manifest" in error["message"]
        r = httpx.post(url + "/v1/images", json={"model": "label", "labels": [3]})
        assert r.status_code == 503 and "label-mnist" in r.json()["error"]["message"]

        r = httpx.get(url + "/sample", params={"model": "gan", "dataset": "emoji", "seed": 1})
        assert r.status_code == 503, r.text
        message = r.json()["error"]["message"]
        assert "gan-emoji is not in the repository" in message and "served only by its id" in message

        # The baselines still answer to their own ids.
        r = httpx.get(url + "/generate", params={"model": "label-mnist-seed", "digit": 3})
        assert r.status_code == 200 and r.headers["x-model-id"] == "label-mnist-seed"
        r = httpx.get(url + "/sample", params={"model": "gan-emoji-seed", "seed": 1})
        assert r.status_code == 200 and r.headers["x-model-id"] == "gan-emoji-seed"
    finally:
        srv.stop()


def test_a_model_file_deleted_or_changed_while_served_is_reported(needed: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    touched = copy_model(needed, "label-mnist", repo)
    gone = copy_model(needed, "label-mnist", repo, "label-gone")
    changed = copy_model(needed, "label-mnist", repo, "label-changed")
    srv = start_server(repo, tmp_path, env={"IMAGEGEN_DISK_CHECK_INTERVAL": "0.2"})
    try:
        listing = httpx.get(srv.url + "/v1/models").json()["models"]
        assert {m["id"]: m["on_disk"] for m in listing} == dict.fromkeys(
            ["label-changed", "label-gone", "label-mnist"], "ok"
        )
        os.utime(_onnx(touched))  # new mtime, same bytes: not a change
        _onnx(gone).unlink()
        with _onnx(changed).open("ab") as f:
            f.write(b"\0")
        deadline = time.monotonic() + 20
        while True:
            on_disk = {m["id"]: m["on_disk"] for m in httpx.get(srv.url + "/v1/models").json()["models"]}
            if on_disk["label-gone"] != "ok" and on_disk["label-changed"] != "ok":
                break
            assert time.monotonic() < deadline, f"changes not reported: {on_disk}"
            time.sleep(0.2)
        assert on_disk["label-mnist"] == "ok"
        name = _onnx_name(gone)
        assert f"{name} was deleted from disk" in on_disk["label-gone"]
        assert f"{name} changed on disk" in on_disk["label-changed"]
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 200  # the loaded copies still serve
        assert set(ready.json()["changed_on_disk"]) == {"label-gone", "label-changed"}
        r = httpx.get(srv.url + "/generate", params={"model": "label-gone", "digit": 1})
        assert r.status_code == 200
        assert f"label-gone: {name} was deleted" in srv.log()
    finally:
        srv.stop()


def test_no_absolute_path_or_library_message_in_client_errors(needed: Path, tmp_path: Path) -> None:
    """A corrupt ONNX file whose sha256 matches its manifest: onnxruntime refuses it with a
    message naming the absolute path. Clients see our reason; the log keeps onnxruntime's."""
    repo = tmp_path / "models"
    repo.mkdir()
    copy_model(needed, "label-mnist", repo)
    corrupt = copy_model(needed, "label-mnist", repo, "label-corrupt")
    onnx = _onnx(corrupt)
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 3])
    manifest = json.loads((corrupt / "manifest.json").read_text())
    manifest["onnx"]["sha256"] = sha256_file(onnx)
    (corrupt / "manifest.json").write_text(json.dumps(manifest))
    undecodable = copy_model(needed, "label-mnist", repo, "label-undecodable")
    (undecodable / "manifest.json").write_bytes(b"\xff\xfe{")  # Python's decoder would say so
    srv = start_server(repo, tmp_path)
    try:
        bodies = [
            httpx.get(srv.url + "/sample", params={"model": "label-corrupt", "seed": 1}),
            httpx.get(srv.url + "/v1/models/label-corrupt"),
            httpx.get(srv.url + "/v1/models"),
            httpx.get(srv.url + "/readyz"),
        ]
        assert bodies[0].status_code == 503
        reason = bodies[1].json()["reason"]
        assert reason == f"onnxruntime cannot load {_onnx_name(corrupt)} (details in the server log)"
        for r in bodies:
            assert str(tmp_path) not in r.text and "/model.onnx'" not in r.text, r.text
            assert "Protobuf" not in r.text and "INVALID" not in r.text  # onnxruntime's own words
        assert "invalid manifest: not UTF-8 JSON" in bodies[2].text and "codec" not in bodies[2].text
        # The operator still gets the library's words, with the path, in the log.
        assert str(onnx) in srv.log()
    finally:
        srv.stop()
