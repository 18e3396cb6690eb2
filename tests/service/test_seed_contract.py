"""The sampling contract over HTTP: image i of an n-grid is the single image of seed+i; an image
does not depend on what shares its batch; the same request gives the same bytes; `imagegen sample`
writes the bytes the endpoint serves."""

from __future__ import annotations

import base64
import math
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from tests.service.conftest import REPO, decode_png


def _tiles(grid: np.ndarray, n: int, h: int, w: int) -> list[np.ndarray]:
    cols = math.ceil(math.sqrt(n))
    return [
        grid[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] for i in range(n)
    ]


def test_grid_tile_i_is_seed_plus_i(client: httpx.Client, conditional: dict) -> None:
    image = conditional["manifest"]["image"]
    n, seed = 7, 1234
    grid = decode_png(
        client.get("/sample", params={"model": conditional["id"], "seed": seed, "n": n}).content
    )
    for i, tile in enumerate(_tiles(grid, n, image["height"], image["width"])):
        single = client.get("/sample", params={"model": conditional["id"], "seed": seed + i})
        assert np.array_equal(tile, decode_png(single.content)), f"tile {i}"


def test_grid_with_class_uses_it_for_every_tile(client: httpx.Client, conditional: dict) -> None:
    image = conditional["manifest"]["image"]
    grid = decode_png(
        client.get("/generate", params={"model": conditional["id"], "seed": 50, "n": 4, "digit": 2}).content
    )
    for i, tile in enumerate(_tiles(grid, 4, image["height"], image["width"])):
        single = client.get("/generate", params={"model": conditional["id"], "seed": 50 + i, "digit": 2})
        assert np.array_equal(tile, decode_png(single.content))


def test_same_request_same_bytes_and_etag(client: httpx.Client, conditional: dict) -> None:
    params = {"model": conditional["id"], "seed": 99, "n": 9, "scale": 2}
    a, b = client.get("/sample", params=params), client.get("/sample", params=params)
    assert a.content == b.content and a.headers["etag"] == b.headers["etag"]


def test_image_independent_of_batch_neighbours(client: httpx.Client, conditional: dict) -> None:
    alone = client.post("/v1/images", json={"model": conditional["id"], "seeds": [31337]}).json()
    crowd = client.post(
        "/v1/images", json={"model": conditional["id"], "seeds": [7, 8, 31337, 2**40, 5]}
    ).json()
    assert alone["images"][0]["png_base64"] == crowd["images"][2]["png_base64"]
    assert alone["images"][0]["label"] == crowd["images"][2]["label"]


def test_cli_sample_writes_the_served_bytes(
    client: httpx.Client, conditional: dict, models_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "grid.png"
    cmd = [
        sys.executable,
        "-m",
        "imagegen.cli",
        "sample",
        "--model",
        conditional["id"],
        "--seed",
        "42",
        "--n",
        "16",
        "--scale",
        "2",
        "--out",
        str(out),
        "--models-dir",
        str(models_dir),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    served = client.get("/sample", params={"model": conditional["id"], "seed": 42, "n": 16, "scale": 2})
    assert out.read_bytes() == served.content
    # The JSON form carries the same PNG per image.
    js = client.get("/sample", params={"model": conditional["id"], "seed": 42, "format": "json"}).json()
    assert (
        base64.b64decode(js["images"][0]["png_base64"])
        == client.get("/sample", params={"model": conditional["id"], "seed": 42}).content
    )


def test_cli_sample_errors_are_clear(models_dir: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "imagegen.cli",
        "sample",
        "--model",
        "no-such-model",
        "--out",
        str(tmp_path / "x.png"),
        "--models-dir",
        str(models_dir),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown model" in done.stderr
