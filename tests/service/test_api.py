"""Every endpoint against the real server and the real models: what a client gets back."""

from __future__ import annotations

import base64
import io
import math

import httpx
import numpy as np
import pytest
from PIL import Image

from service.http.etag import image_etag
from tests.service.conftest import decode_png


def _shape(model: dict) -> tuple[int, int, int]:
    image = model["manifest"]["image"]
    return image["height"], image["width"], image["channels"]


def test_sample_png_headers(client: httpx.Client, conditional: dict) -> None:
    r = client.get("/sample", params={"model": conditional["id"], "seed": 42})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-model-id"] == conditional["id"]
    assert r.headers["x-model-version"] == str(conditional["version"])
    assert r.headers["x-seed"] == "42"
    assert r.headers["etag"].startswith('"')
    assert r.headers["x-request-id"]
    h, w, c = _shape(conditional)
    assert decode_png(r.content).shape == (h, w, c)


def test_generate_with_digit_and_scale(client: httpx.Client, conditional: dict) -> None:
    r = client.get("/generate", params={"model": conditional["id"], "digit": 1, "seed": 3, "scale": 3})
    assert r.status_code == 200
    h, w, c = _shape(conditional)
    big = decode_png(r.content)
    assert big.shape == (3 * h, 3 * w, c)
    small = decode_png(
        client.get("/generate", params={"model": conditional["id"], "digit": 1, "seed": 3}).content
    )
    assert np.array_equal(big[::3, ::3], small)  # nearest-neighbour: every 3rd pixel is the original


def test_family_name_resolves_to_default_dataset(client: httpx.Client, catalog: list[dict]) -> None:
    default = client.get("/v1/models").json()["default_dataset"]
    for model in catalog:
        if model["dataset"] != default or model["baseline"]:
            continue
        r = client.get("/sample", params={"model": model["family"], "seed": 1})
        assert r.status_code == 200
        resolved = r.headers["x-model-id"]
        assert resolved.startswith(model["family"]) and not resolved.endswith("-seed")
        r2 = client.get("/sample", params={"model": model["family"], "dataset": default, "seed": 1})
        assert r2.headers["x-model-id"] == resolved


def test_grid_shape(client: httpx.Client, conditional: dict) -> None:
    h, w, c = _shape(conditional)
    for n in (2, 5, 16):
        r = client.get("/sample", params={"model": conditional["id"], "seed": 7, "n": n})
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        assert decode_png(r.content).shape == (rows * h, cols * w, c)


def test_json_format(client: httpx.Client, conditional: dict) -> None:
    r = client.get("/sample", params={"model": conditional["id"], "seed": 10, "n": 3, "format": "json"})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == conditional["id"] and body["seed"] == 10
    names = conditional["manifest"]["class_names"]
    num = conditional["manifest"]["num_classes"]
    assert [i["seed"] for i in body["images"]] == [10, 11, 12]
    assert [i["label"] for i in body["images"]] == [s % num for s in (10, 11, 12)]
    assert [i["class_name"] for i in body["images"]] == [names[s % num] for s in (10, 11, 12)]
    single = client.get("/sample", params={"model": conditional["id"], "seed": 11}).content
    assert base64.b64decode(body["images"][1]["png_base64"]) == single


def test_class_by_name_case_insensitive(client: httpx.Client, catalog: list[dict]) -> None:
    for model in catalog:
        if "label" not in model["manifest"]["inputs"]:
            continue
        names = model["manifest"]["class_names"]
        index = len(names) - 1
        by_name = client.get(
            "/generate", params={"model": model["id"], "class": names[index].upper(), "seed": 5}
        )
        by_digit = client.get("/generate", params={"model": model["id"], "digit": index, "seed": 5})
        assert by_name.status_code == 200, by_name.text
        assert by_name.content == by_digit.content


def test_label_family_ignores_seed(client: httpx.Client, label_only: dict) -> None:
    a = client.get("/generate", params={"model": label_only["id"], "digit": 3, "seed": 1})
    b = client.get("/generate", params={"model": label_only["id"], "digit": 3, "seed": 999})
    assert a.status_code == b.status_code == 200
    assert np.array_equal(decode_png(a.content), decode_png(b.content))
    # n > 1 with a digit: the same class n times; without: classes seed, seed+1, ... (seed % classes).
    grid = decode_png(client.get("/generate", params={"model": label_only["id"], "digit": 3, "n": 4}).content)
    h, w, _ = _shape(label_only)
    tiles = [grid[r * h : (r + 1) * h, c * w : (c + 1) * w] for r in range(2) for c in range(2)]
    assert all(np.array_equal(t, tiles[0]) for t in tiles)


def test_unconditional_model(client: httpx.Client, unconditional: dict) -> None:
    r = client.get("/sample", params={"model": unconditional["id"], "seed": 4, "format": "json"})
    assert r.status_code == 200
    assert r.json()["images"][0]["label"] is None


EMOJI_FAMILIES = ("gan", "vae", "evaluator")


@pytest.mark.parametrize("family", EMOJI_FAMILIES)
def test_emoji_models_serve_rgb_64x64_by_family_and_dataset(client: httpx.Client, family: str) -> None:
    r = client.get("/sample", params={"model": family, "dataset": "emoji", "seed": 7})
    assert r.status_code == 200, r.text
    assert r.headers["x-model-id"] == f"{family}-emoji"
    image = Image.open(io.BytesIO(r.content))
    assert (image.mode, image.size) == ("RGB", (64, 64))
    pixels = decode_png(r.content)
    assert pixels.std() > 0  # a picture, not a flat fill
    grid = Image.open(
        io.BytesIO(client.get("/sample", params={"model": family, "dataset": "emoji", "n": 4}).content)
    )
    assert (grid.mode, grid.size) == ("RGB", (128, 128))


def test_emoji_classes_by_name_json_and_bulk(client: httpx.Client) -> None:
    base = {"model": "vae", "dataset": "emoji", "seed": 7}
    params = {**base, "class": "smileys-emotion"}
    by_name = client.get("/generate", params=params)
    assert by_name.status_code == 200, by_name.text
    names = client.get("/v1/models/vae-emoji").json()["manifest"]["class_names"]
    by_index = client.get("/generate", params={**base, "digit": names.index("smileys-emotion")})
    assert by_index.content == by_name.content
    body = client.get("/generate", params={**params, "format": "json"}).json()
    assert body["images"][0]["label"] == names.index("smileys-emotion")
    bad = client.get("/generate", params={**params, "class": "unicorns"})
    assert bad.status_code == 422 and bad.json()["error"]["allowed"] == names
    bulk = client.post(
        "/v1/images", json={"model": "gan-emoji", "seeds": [1, 2], "labels": ["flags", 6], "format": "npy"}
    )
    assert bulk.status_code == 200, bulk.text
    assert np.load(io.BytesIO(bulk.content), allow_pickle=False).shape == (2, 3, 64, 64)


def test_etag_and_304(client: httpx.Client, conditional: dict) -> None:
    params = {"model": conditional["id"], "seed": 77, "n": 2}
    first = client.get("/sample", params=params)
    again = client.get("/sample", params=params, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    other = client.get("/sample", params={**params, "seed": 78})
    assert other.headers["etag"] != first.headers["etag"]
    json_tag = client.get("/sample", params={**params, "format": "json"}).headers["etag"]
    assert json_tag != first.headers["etag"]


def test_etag_covers_the_provider(client: httpx.Client, conditional: dict) -> None:
    """CPU and CUDA agree within float tolerance, not byte for byte: their ETags must differ."""
    model = client.get(f"/v1/models/{conditional['id']}").json()
    served = client.get("/sample", params={"model": conditional["id"], "seed": 9, "n": 2})
    args = (conditional["id"], model["version"])
    tail = (9, None, 2, 1, "png")
    assert served.headers["etag"] == image_etag(*args, model["provider"], *tail)
    assert image_etag(*args, "cuda", *tail) != image_etag(*args, "cpu", *tail)


def test_no_seed_draws_one_and_reports_it(client: httpx.Client, conditional: dict) -> None:
    r = client.get("/sample", params={"model": conditional["id"]})
    assert r.status_code == 200
    seed = int(r.headers["x-seed"])
    assert "etag" not in r.headers
    again = client.get("/sample", params={"model": conditional["id"], "seed": seed})
    assert again.content == r.content


def test_post_images_png_base64(client: httpx.Client, conditional: dict) -> None:
    names = conditional["manifest"]["class_names"]
    body = {"model": conditional["id"], "seeds": [5, 6], "labels": [0, names[1]], "scale": 2}
    r = client.post("/v1/images", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == conditional["id"]
    assert [i["label"] for i in out["images"]] == [0, 1]
    expected = client.get("/generate", params={"model": conditional["id"], "seed": 6, "digit": 1, "scale": 2})
    assert base64.b64decode(out["images"][1]["png_base64"]) == expected.content


def test_post_images_npy(client: httpx.Client, conditional: dict) -> None:
    r = client.post("/v1/images", json={"model": conditional["id"], "seeds": [1, 2, 3], "format": "npy"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-npy"
    array = np.load(io.BytesIO(r.content), allow_pickle=False)
    h, w, c = _shape(conditional)
    assert array.shape == (3, c, h, w) and array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0
    png = decode_png(client.get("/sample", params={"model": conditional["id"], "seed": 2}).content)
    assert np.array_equal(np.rint(array[1].transpose(1, 2, 0) * 255).astype(np.uint8), png)


def test_post_images_labels_only(client: httpx.Client, conditional: dict) -> None:
    r = client.post("/v1/images", json={"model": conditional["id"], "labels": [2, 2, 2]})
    assert r.status_code == 200
    seeds = [i["seed"] for i in r.json()["images"]]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]
    assert r.headers["x-seed"] == str(seeds[0])


def test_models_endpoints(client: httpx.Client, conditional: dict) -> None:
    listing = client.get("/v1/models").json()
    assert listing["loaded"] is True and listing["provider"] in ("cpu", "cuda")
    ids = [m["id"] for m in listing["models"]]
    assert conditional["id"] in ids
    one = client.get(f"/v1/models/{conditional['id']}").json()
    assert one["state"] == "ready" and one["manifest"]["id"] == conditional["id"]
    assert one["provider"] in ("cpu", "cuda")


def test_health_ready_metrics_docs_playground(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "imagegen_model_ready" in metrics.text
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    params = {p["name"] for p in spec["paths"]["/generate"]["get"]["parameters"]}
    assert {"model", "seed", "n", "scale", "format", "digit", "class", "dataset"} <= params
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/models" in page.text


def _outline(value: object) -> object:
    """Keys all the way down (the first item of a list), values' types otherwise."""
    if isinstance(value, dict):
        return {k: _outline(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_outline(value[0])] if value else []
    return type(value).__name__


def test_the_openapi_examples_have_the_shape_of_real_answers(client: httpx.Client) -> None:
    """ReDoc showed `null` as the sample 200 and Swagger UI could not preview a PNG."""
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/sample", "/generate"):
        content = paths[route]["get"]["responses"]["200"]["content"]
        assert content["image/png"]["schema"] == {"type": "string", "format": "binary"}
        real = client.get(route, params={"model": "gan-mnist", "seed": 42, "format": "json"}).json()
        assert _outline(content["application/json"]["example"]) == _outline(real)
    content = paths["/v1/images"]["post"]["responses"]["200"]["content"]
    real = client.post("/v1/images", json={"model": "gan-mnist", "seeds": [1]}).json()
    assert _outline(content["application/json"]["example"]) == _outline(real)


def test_request_id_echoed(client: httpx.Client) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}).headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 32


def test_metric_names(client: httpx.Client, conditional: dict) -> None:
    client.get("/sample", params={"model": conditional["id"], "seed": 1})
    text = client.get("/metrics").text
    for name in (
        "imagegen_requests_total",
        "imagegen_request_seconds_bucket",
        "imagegen_inference_seconds_bucket",
        "imagegen_queue_seconds_bucket",
        "imagegen_encode_seconds_bucket",
        "imagegen_batch_size_bucket",
        "imagegen_queue_depth",
        "imagegen_images_total",
        "imagegen_model_ready",
    ):
        assert name in text, name
    assert f'imagegen_requests_total{{model="{conditional["id"]}",route="/sample",status="200"}}' in text
    assert f'imagegen_model_ready{{model="{conditional["id"]}"}} 1.0' in text


def test_a_class_of_another_dataset_suggests_that_dataset(client: httpx.Client) -> None:
    """`model=gan&class=bag` resolves to the default dataset's gan; the answer says where bags are."""
    r = client.get("/sample", params={"model": "gan", "class": "bag", "seed": 1})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["suggest"]["dataset"] == "fashion"
    assert "gan-fashion" in error["suggest"]["models"]
    assert all(not m.endswith("-seed") for m in error["suggest"]["models"])
    assert "dataset=fashion" in error["message"]
    followed = client.get("/sample", params={"model": "gan", "class": "bag", "seed": 1, "dataset": "fashion"})
    assert followed.status_code == 200
