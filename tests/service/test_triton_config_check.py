"""The repository scan checks each model's Triton config.pbtxt against its manifest (issue 18,
item 4): a file that no longer describes the model marks it failed with the difference; a folder
without one is served (older repositories) and logged once.

The reader and the check on the shipped files and edited copies of them; then a real server on
loopback over a repository with one tampered file and one missing.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagegen.contract.manifest import Manifest
from imagegen.contract.triton_config import CONFIG_NAME
from service.store.config_check import ConfigSyntaxError, config_problem, parse_pbtxt
from tests.service.conftest import Server, start_server

TAMPERED = "gan-mnist"  # config.pbtxt with z's dims changed
WITHOUT = "label-mnist"  # config.pbtxt deleted


def _shipped(models_dir: Path) -> list[Path]:
    found = sorted(models_dir.glob(f"*/{CONFIG_NAME}"))
    if not found:
        pytest.skip(f"no {CONFIG_NAME} in the model repository")
    return found


def test_every_shipped_config_describes_its_model(models_dir: Path) -> None:
    for path in _shipped(models_dir):
        assert config_problem(path.read_text(), Manifest.read(path.parent)) is None, path


def test_the_reader_takes_lists_repeated_fields_angle_brackets_and_comments() -> None:
    text = """
    # a comment
    name: "m"  platform: 'onnxruntime_onnx'
    max_batch_size: 0x10
    input < name: "z" data_type: TYPE_FP32 dims: 2 dims: 3 >
    input: { name: "label", dims: [ 1 ], reshape { shape: [ ] } };
    """
    config = parse_pbtxt(text)
    assert config["name"] == ["m"] and config["platform"] == ["onnxruntime_onnx"]
    assert config["max_batch_size"] == [16]
    assert [t["dims"] for t in config["input"]] == [[2, 3], [1]]
    assert config["input"][1]["reshape"] == [{"shape": []}]
    for broken in ('name: "m" input {', "input { name: ] }", 'name: "m" @'):
        with pytest.raises(ConfigSyntaxError):
            parse_pbtxt(broken)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('name: "{id}"', 'name: "other"', "name 'other'"),
        ('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"', "platform 'tensorrt_plan'"),
        ("max_batch_size: 64", "max_batch_size: 0", "max_batch_size 0"),
        ("TYPE_INT64", "TYPE_INT32", "'label' has data_type TYPE_INT32"),
        ('name: "z"', 'name: "noise"', "inputs ['label', 'noise']"),
        ("dims: [ 1, 28, 28 ]", "dims: [ 3, 28, 28 ]", "output 'image' has dims [3, 28, 28]"),
        ("dims: [ 1 ]\n    reshape {\n      shape: [ ]\n    }", "dims: [ 1 ]", "'label' needs reshape"),
        ("}", "", "not valid protobuf text"),
    ],
)
def test_a_config_that_differs_from_the_model_is_named(
    models_dir: Path, old: str, new: str, expected: str
) -> None:
    folder = models_dir / TAMPERED
    if not (folder / CONFIG_NAME).is_file():
        pytest.skip(f"{TAMPERED} has no {CONFIG_NAME}")
    manifest = Manifest.read(folder)
    text = (folder / CONFIG_NAME).read_text()
    old = old.replace("{id}", manifest.id)
    assert old in text, old
    problem = config_problem(text.replace(old, new, 1), manifest)
    assert problem is not None and expected in problem, problem
    assert CONFIG_NAME in problem


def test_edits_that_change_nothing_for_the_model_pass(models_dir: Path) -> None:
    folder = models_dir / TAMPERED
    if not (folder / CONFIG_NAME).is_file():
        pytest.skip(f"{TAMPERED} has no {CONFIG_NAME}")
    manifest = Manifest.read(folder)
    text = (folder / CONFIG_NAME).read_text()
    edited = (
        text.replace("max_batch_size: 64", "max_batch_size: 8")
        .replace("dims: [ 1, 28, 28 ]", "dims: 1\n dims: 28 dims: 28")
        .replace(f'name: "{manifest.id}"\n', "")  # Triton takes the folder's name
        + "instance_group [ { kind: KIND_CPU, count: 2 } ]\n"
    )
    assert config_problem(edited, manifest) is None


# -- a real server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("config-repo")
    for model in (TAMPERED, WITHOUT):
        if not (models_dir / model / CONFIG_NAME).is_file():
            pytest.skip(f"{model} (with its {CONFIG_NAME}) is not in the model repository")
        shutil.copytree(models_dir / model, root / model)
    config = root / TAMPERED / CONFIG_NAME
    latent = Manifest.read(root / TAMPERED).latent_dim
    text = config.read_text()
    assert f"dims: [ {latent} ]" in text
    config.write_text(text.replace(f"dims: [ {latent} ]", f"dims: [ {latent + 1} ]"))
    (root / WITHOUT / CONFIG_NAME).unlink()
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(repo, tmp_path_factory.mktemp("config-server"))
    yield srv
    srv.stop()


def test_a_tampered_config_fails_its_model_with_the_reason_and_others_serve(
    server: Server, repo: Path
) -> None:
    models = {m["id"]: m for m in httpx.get(server.url + "/v1/models", timeout=30).json()["models"]}
    tampered = models[TAMPERED]
    assert tampered["state"] == "failed"
    reason = tampered["reason"]
    assert CONFIG_NAME in reason and "'z'" in reason and "dims" in reason, reason
    assert str(repo) not in reason, reason
    r = httpx.get(server.url + "/sample", params={"model": TAMPERED, "seed": 1}, timeout=30)
    assert r.status_code == 503 and CONFIG_NAME in r.json()["error"]["message"]
    # The model without a config.pbtxt is served.
    assert models[WITHOUT]["state"] == "ready"
    r = httpx.get(server.url + "/sample", params={"model": WITHOUT, "seed": 1}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_a_missing_config_is_logged_once(server: Server) -> None:
    # A rescan (SIGHUP) checks every folder again; the missing file is still logged only once.
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while "repository rescanned" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "repository rescanned" in server.log()
    lines = [line for line in server.log().splitlines() if f"has no {CONFIG_NAME}" in line]
    assert len(lines) == 1 and WITHOUT in lines[0], lines
