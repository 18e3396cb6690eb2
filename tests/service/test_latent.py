"""The latent tools on the real server: GET /interpolate and POST /v1/reconstruct, with hostile
uploads (not images, bombs, oversize bodies, wrong media types, broken multipart)."""

from __future__ import annotations

import base64
import gzip
import io
import struct
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from imagegen.contract.sampling import latent
from service.engine.latent import MAX_UPLOAD_PIXELS, interpolation_latents, slerp
from tests.service.conftest import REPO, decode_png

MNIST_TEST = REPO / "tests/data/mnist/t10k-images-idx3-ubyte.gz"


def _ready(catalog: list[dict[str, Any]], model_id: str) -> dict[str, Any]:
    for m in catalog:
        if m["id"] == model_id:
            return m
    pytest.skip(f"{model_id} is not a ready model of the repository")


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _mnist_digits(count: int) -> np.ndarray:
    """The first `count` real MNIST test digits, (count, 28, 28) uint8."""
    with gzip.open(MNIST_TEST) as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=16)[: count * 784].reshape(count, 28, 28)


def _bomb_png(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height 8-bit gray pixels (data for one row)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# -- the engine (no server) --------------------------------------------------------------------


def test_slerp_keeps_the_ends_and_walks_the_sphere() -> None:
    a, b = latent(1, 64), latent(2, 64)
    assert np.allclose(slerp(a, b, 0.0), a, atol=1e-5) and np.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    middle = slerp(a, b, 0.5)
    # the norm is interpolated, not shrunk as on the straight line between a and b
    expected = (np.linalg.norm(a) + np.linalg.norm(b)) / 2
    assert abs(np.linalg.norm(middle) - expected) < 1e-3
    assert np.linalg.norm((a + b) / 2) < 0.85 * expected
    # equal angles to both ends
    cos = lambda x, y: float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert abs(cos(middle, a) - cos(middle, b)) < 1e-5


def test_interpolation_latents_start_and_end_at_the_seeds() -> None:
    z = interpolation_latents(7, 9, 16, 5)
    assert z.shape == (5, 16) and z.dtype == np.float32
    assert np.array_equal(z[0], latent(7, 16)) and np.array_equal(z[-1], latent(9, 16))
    assert len({row.tobytes() for row in z}) == 5


# -- GET /interpolate ---------------------------------------------------------------------------


def test_interpolate_strip_ends_are_the_seeds_images(
    client: httpx.Client, conditional: dict[str, Any]
) -> None:
    model, image = conditional["id"], conditional["manifest"]["image"]
    params = {"model": model, "seed_a": 11, "seed_b": 12, "steps": 6, "class": 3, "scale": 2}
    r = client.get("/interpolate", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-model-id"] == model
    strip = decode_png(r.content)
    w, h = image["width"] * 2, image["height"] * 2
    assert strip.shape[:2] == (h, 6 * w)
    for seed, column in ((11, 0), (12, 5)):
        single = client.get("/sample", params={"model": model, "seed": seed, "class": 3, "scale": 2})
        expected = decode_png(single.content).astype(int)
        tile = strip[:, column * w : (column + 1) * w].astype(int)
        assert np.abs(tile - expected).max() <= 1, f"strip end for seed {seed}"
    tiles = [strip[:, i * w : (i + 1) * w] for i in range(6)]
    assert len({t.tobytes() for t in tiles}) >= 4, "the strip does not move between the seeds"


def test_interpolate_json_lists_each_step(client: httpx.Client, conditional: dict[str, Any]) -> None:
    r = client.get(
        "/interpolate",
        params={"model": conditional["id"], "seed_a": 1, "seed_b": 2, "steps": 3, "format": "json"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [item["t"] for item in body["images"]] == [0.0, 0.5, 1.0]
    assert body["label"] == 1 % conditional["manifest"]["num_classes"]  # seed_a's default class
    for item in body["images"]:
        Image.open(io.BytesIO(base64.b64decode(item["png_base64"]))).verify()


def test_interpolate_has_an_etag(client: httpx.Client, conditional: dict[str, Any]) -> None:
    params = {"model": conditional["id"], "seed_a": 5, "seed_b": 6}
    first = client.get("/interpolate", params=params)
    etag = first.headers["etag"]
    assert client.get("/interpolate", params=params, headers={"If-None-Match": etag}).status_code == 304
    other = client.get("/interpolate", params={**params, "steps": 4})
    assert other.headers["etag"] != etag


@pytest.mark.parametrize("steps", ["1", "33", "0", "abc", "-2", "2.5"])
def test_interpolate_steps_out_of_range_names_the_range(
    client: httpx.Client, conditional: dict[str, Any], steps: str
) -> None:
    r = client.get(
        "/interpolate", params={"model": conditional["id"], "seed_a": 1, "seed_b": 2, "steps": steps}
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["parameter"] == "steps" and (error["min"], error["max"]) == (2, 32)
    assert "[2, 32]" in error["message"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"seed_a": 1}, "seed_b"),
        ({"seed_a": 1, "seed_b": -1}, "seed"),
        ({"seed_a": 1, "seed_b": 2, "class": "nope"}, "class"),
        ({"seed_a": 1, "seed_b": 2, "format": "gif"}, "format"),
        ({"seed_a": 1, "seed_b": 2, "scale": 65}, "scale"),
    ],
)
def test_interpolate_bad_values_are_422(
    client: httpx.Client, conditional: dict[str, Any], params: dict[str, Any], parameter: str
) -> None:
    r = client.get("/interpolate", params={"model": conditional["id"], **params})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["parameter"] == parameter


def test_interpolate_unknown_parameter_and_model(client: httpx.Client, conditional: dict[str, Any]) -> None:
    r = client.get("/interpolate", params={"model": conditional["id"], "seed_a": 1, "seed_b": 2, "stesp": 4})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_parameter"
    assert "steps" in r.json()["error"]["allowed"]
    r = client.get("/interpolate", params={"model": "no-such-model", "seed_a": 1, "seed_b": 2})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"


def test_interpolate_refuses_a_model_without_latent(client: httpx.Client, label_only: dict[str, Any]) -> None:
    r = client.get("/interpolate", params={"model": label_only["id"], "seed_a": 1, "seed_b": 2})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "parameter_not_supported" and label_only["id"] not in error["models"]
    assert error["models"], "the error names the models that can interpolate"


# -- POST /v1/reconstruct ----------------------------------------------------------------------


def test_reconstruct_draws_a_real_digit_back(client: httpx.Client, catalog: list[dict[str, Any]]) -> None:
    _ready(catalog, "vae-mnist")
    digits = _mnist_digits(2)  # a 7 and a 2
    r = client.post(
        "/v1/reconstruct",
        params={"model": "vae-mnist", "format": "json"},
        content=_png(Image.fromarray(digits[0])),
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["latent"]) == 16 and body["class_given"] is False
    assert body["label"] == 7, "without class= the closest class is kept"
    out = decode_png(base64.b64decode(body["png_base64"]))[..., 0] / 255.0
    original, other = digits[0] / 255.0, digits[1] / 255.0
    assert out.shape == (28, 28)
    assert np.mean((out - original) ** 2) < 0.5 * np.mean((out - other) ** 2)
    assert np.mean((out - original) ** 2) < 0.03


def test_reconstruct_raw_png_with_class(client: httpx.Client, catalog: list[dict[str, Any]]) -> None:
    _ready(catalog, "vae-mnist")
    data = _png(Image.fromarray(_mnist_digits(1)[0]))
    r = client.post(
        "/v1/reconstruct",
        params={"model": "vae-mnist", "class": 3, "scale": 4},
        content=data,
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-class"] == "3"
    assert decode_png(r.content).shape == (112, 112, 1)


def test_reconstruct_converts_colour_jpeg_and_size(
    client: httpx.Client, catalog: list[dict[str, Any]]
) -> None:
    """A 300x200 colour JPEG to a 28x28 gray model, multipart like a browser form."""
    _ready(catalog, "vae-fashion")
    rgb = np.zeros((200, 300, 3), dtype=np.uint8)
    rgb[40:160, 100:200] = (200, 120, 40)
    data = _png(Image.fromarray(rgb), "JPEG")
    r = client.post(
        "/v1/reconstruct",
        params={"model": "vae-fashion", "format": "json"},
        files={"file": ("shirt.jpg", data, "image/jpeg")},
    )
    assert r.status_code == 200, r.text
    seen = decode_png(base64.b64decode(r.json()["input_png_base64"]))
    assert seen.shape == (28, 28, 1)
    assert seen[14, 14, 0] > 60 and seen[2, 2, 0] < 10  # the shape survived the conversion


def test_reconstruct_rgba_to_a_colour_model(client: httpx.Client, catalog: list[dict[str, Any]]) -> None:
    model = _ready(catalog, "vae-emoji")
    rgba = Image.new("RGBA", (90, 90), (0, 0, 0, 0))
    rgba.paste((250, 200, 0, 255), (20, 20, 70, 70))
    r = client.post(
        "/v1/reconstruct",
        params={"model": model["id"], "format": "json"},
        content=_png(rgba),
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    seen = decode_png(base64.b64decode(r.json()["input_png_base64"]))
    assert seen.shape == (64, 64, 3)
    assert tuple(seen[1, 1]) == (255, 255, 255), "transparency is laid on white, as in training"
    assert decode_png(base64.b64decode(r.json()["png_base64"])).shape == (64, 64, 3)


def test_reconstruct_refuses_a_model_without_encoder(
    client: httpx.Client, catalog: list[dict[str, Any]]
) -> None:
    model = next(m["id"] for m in catalog if "encoder" not in m["manifest"].get("extra_onnx", {}))
    r = _post(client, _png(Image.new("L", (28, 28))), "image/png", model=model)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "parameter_not_supported" and "encoder" in error["message"]
    assert error["models"] and all(m.startswith("vae-") for m in error["models"])


def _post(client: httpx.Client, content: bytes, ctype: str, model: str = "vae-mnist") -> httpx.Response:
    return client.post(
        "/v1/reconstruct", params={"model": model}, content=content, headers={"Content-Type": ctype}
    )


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b"this is not an image at all", "image/png"),
        (b"", "image/png"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/png"),  # a GIF: only PNG and JPEG are read
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x1c\x00\x00\x00\x1c\x08\x00", "image/png"),  # cut
        (b"\xff\xd8\xff\xe0garbage", "image/jpeg"),
    ],
)
def test_reconstruct_non_images_are_422(
    client: httpx.Client, catalog: list[dict[str, Any]], content: bytes, ctype: str
) -> None:
    _ready(catalog, "vae-mnist")
    r = _post(client, content, ctype)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_image"


def test_reconstruct_truncated_png_is_422(client: httpx.Client, catalog: list[dict[str, Any]]) -> None:
    _ready(catalog, "vae-mnist")
    data = _png(Image.fromarray(_mnist_digits(1)[0]))
    r = _post(client, data[: len(data) // 2], "image/png")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_image"


def test_reconstruct_refuses_a_decompression_bomb_before_decoding(
    client: httpx.Client, catalog: list[dict[str, Any]], server: Any
) -> None:
    _ready(catalog, "vae-mnist")
    bomb = _bomb_png(50_000, 50_000)  # 2.5 billion pixels declared, ~300 bytes sent
    assert len(bomb) < 1000
    r = _post(client, bomb, "image/png")
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "image_too_large"
    assert r.json()["error"]["max_pixels"] == MAX_UPLOAD_PIXELS
    just_over = _bomb_png(4097, 4096)
    assert _post(client, just_over, "image/png").status_code == 413
    assert client.get("/healthz").status_code == 200


def test_reconstruct_oversize_body_is_413(client: httpx.Client, catalog: list[dict[str, Any]]) -> None:
    _ready(catalog, "vae-mnist")
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    data = _png(Image.fromarray(noise))
    assert len(data) > 1 << 20
    r = _post(client, data, "image/png")
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("ctype", ["text/plain", "application/json", "image/gif", ""])
def test_reconstruct_wrong_media_type_is_415(
    client: httpx.Client, catalog: list[dict[str, Any]], ctype: str
) -> None:
    _ready(catalog, "vae-mnist")
    r = _post(client, _png(Image.new("L", (28, 28))), ctype)
    assert r.status_code == 415, r.text
    assert "image/png" in r.json()["error"]["allowed"]


def test_reconstruct_multipart_without_file_field(
    client: httpx.Client, catalog: list[dict[str, Any]]
) -> None:
    _ready(catalog, "vae-mnist")
    r = client.post(
        "/v1/reconstruct",
        params={"model": "vae-mnist"},
        files={"image": ("a.png", _png(Image.new("L", (28, 28))))},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_image"
    assert "file" in r.json()["error"]["message"]
    r = client.post(
        "/v1/reconstruct",
        params={"model": "vae-mnist"},
        content=b"--x\r\nno headers, no end",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 422, r.text


def test_reconstruct_bad_class_is_422(client: httpx.Client, catalog: list[dict[str, Any]]) -> None:
    _ready(catalog, "vae-mnist")
    r = client.post(
        "/v1/reconstruct",
        params={"model": "vae-mnist", "class": 10},
        content=_png(Image.new("L", (28, 28))),
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 422 and r.json()["error"]["parameter"] == "class"


def test_latent_routes_are_in_the_openapi(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/interpolate" in spec["paths"] and "/v1/reconstruct" in spec["paths"]
    params = {p["name"] for p in spec["paths"]["/interpolate"]["get"]["parameters"]}
    assert {"model", "seed_a", "seed_b", "steps", "class"} <= params
