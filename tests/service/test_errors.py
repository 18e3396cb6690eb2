"""Bad input -> a 4xx in the error shape of docs/design.md, naming what was wrong and what is allowed."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

MAX_SEED = 2**63 - 1


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_unknown_model_lists_models(client: httpx.Client, catalog: list[dict]) -> None:
    err = _error(client.get("/sample", params={"model": "no-such-model"}), 404, "unknown_model")
    assert {m["id"] for m in catalog} <= set(err["models"])
    _error(client.get("/v1/models/no-such-model"), 404, "unknown_model")


def test_missing_model(client: httpx.Client) -> None:
    err = _error(client.get("/sample", params={"seed": 1}), 422, "invalid_parameter")
    assert err["parameter"] == "model" and err["models"]


def test_family_without_dataset_model(client: httpx.Client, conditional: dict) -> None:
    err = _error(
        client.get("/sample", params={"model": conditional["family"], "dataset": "nope"}),
        404,
        "unknown_model",
    )
    assert conditional["dataset"] in err["datasets"]
    wrong = _error(
        client.get("/sample", params={"model": conditional["id"], "dataset": "nope"}),
        422,
        "invalid_parameter",
    )
    assert wrong["allowed"] == [conditional["dataset"]]


def test_digit_out_of_range_gives_range(client: httpx.Client, conditional: dict) -> None:
    top = conditional["manifest"]["num_classes"] - 1
    for digit in (top + 1, -1, "x", "1.5"):
        err = _error(
            client.get("/generate", params={"model": conditional["id"], "digit": digit}),
            422,
            "invalid_parameter",
        )
        assert err["min"] == 0 and err["max"] == top and err["parameter"] == "digit"


def test_unknown_class_name_lists_names(client: httpx.Client, conditional: dict) -> None:
    err = _error(
        client.get("/generate", params={"model": conditional["id"], "class": "unicorn"}),
        422,
        "invalid_parameter",
    )
    assert err["allowed"] == conditional["manifest"]["class_names"]
    _error(
        client.get("/generate", params={"model": conditional["id"], "class": "1", "digit": "1"}),
        422,
        "invalid_parameter",
    )


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("n", "1000000", "limit_exceeded"),
        ("n", "0", "invalid_parameter"),
        ("n", "two", "invalid_parameter"),
        ("scale", "1000", "limit_exceeded"),
        ("scale", "0", "invalid_parameter"),
        ("seed", "-1", "invalid_parameter"),
        ("seed", "1.5", "invalid_parameter"),
        ("seed", "abc", "invalid_parameter"),
        ("seed", str(MAX_SEED + 1), "invalid_parameter"),
        ("seed", "9" * 400, "invalid_parameter"),
        ("seed", "9" * 3000, "invalid_parameter"),
        ("seed", "", "invalid_parameter"),
        ("format", "gif", "invalid_parameter"),
    ],
)
def test_bad_query_values(client: httpx.Client, conditional: dict, name: str, value: str, code: str) -> None:
    err = _error(client.get("/sample", params={"model": conditional["id"], name: value}), 422, code)
    assert err["parameter"] == name


def test_output_size_is_capped(client: httpx.Client, conditional: dict) -> None:
    image = conditional["manifest"]["image"]
    per_image = image["channels"] * image["height"] * image["width"]
    scale = 16
    n = 2**24 // (per_image * scale * scale) + 1
    if n <= 64:
        err = _error(
            client.get("/sample", params={"model": conditional["id"], "n": n, "scale": scale}),
            422,
            "limit_exceeded",
        )
        assert err["max_values"] == 2**24
    body = {"model": conditional["id"], "seeds": list(range(1024)), "scale": 16}
    _error(client.post("/v1/images", json=body), 422, "limit_exceeded")


def test_seed_plus_n_past_the_top(client: httpx.Client, conditional: dict) -> None:
    ok = client.get("/sample", params={"model": conditional["id"], "seed": MAX_SEED})
    assert ok.status_code == 200
    _error(
        client.get("/sample", params={"model": conditional["id"], "seed": MAX_SEED, "n": 2}),
        422,
        "invalid_parameter",
    )


def test_unknown_and_repeated_parameters(client: httpx.Client, conditional: dict) -> None:
    err = _error(
        client.get("/sample", params={"model": conditional["id"], "digt": 3}), 422, "unknown_parameter"
    )
    assert err["parameters"] == ["digt"] and "digit" in err["allowed"]
    _error(client.get(f"/sample?model={conditional['id']}&seed=1&seed=2"), 422, "invalid_parameter")


def test_class_for_unconditional_model(client: httpx.Client, unconditional: dict) -> None:
    for param in ("digit", "class"):
        err = _error(
            client.get("/generate", params={"model": unconditional["id"], param: "1"}),
            422,
            "parameter_not_supported",
        )
        assert err["parameter"] == param
    _error(
        client.post("/v1/images", json={"model": unconditional["id"], "labels": [1]}),
        422,
        "parameter_not_supported",
    )


def test_post_wrong_content_type(client: httpx.Client, conditional: dict) -> None:
    r = client.post(
        "/v1/images", content=b'{"model": "x", "seeds": [1]}', headers={"content-type": "text/plain"}
    )
    _error(r, 415, "unsupported_media_type")
    _error(client.post("/v1/images", data={"model": conditional["id"]}), 415, "unsupported_media_type")


@pytest.mark.parametrize("body", [b"{", b"", b"\xff\xfe", b"[1, 2", b"nan"])
def test_post_malformed_json(client: httpx.Client, body: bytes) -> None:
    r = client.post("/v1/images", content=body, headers={"content-type": "application/json"})
    _error(r, 400, "malformed_json")


@pytest.mark.parametrize(
    "patch",
    [
        {"seeds": [1.5]},
        {"seeds": [-1]},
        {"seeds": [MAX_SEED + 1]},
        {"seeds": [True]},
        {"seeds": ["1"]},
        {"seeds": "1"},
        {"format": "gif"},
        {"scale": 0},
        {"surprise": 1},
        {"model": 3},
    ],
)
def test_post_schema_errors(client: httpx.Client, conditional: dict, patch: dict) -> None:
    body = {"model": conditional["id"], "seeds": [1], **patch}
    err = _error(client.post("/v1/images", json=body), 422, "invalid_request")
    assert err["errors"] and "loc" in err["errors"][0]


def test_post_huge_integer(client: httpx.Client, conditional: dict) -> None:
    body = '{"model": "' + conditional["id"] + '", "seeds": [' + "9" * 5000 + "]}"
    r = client.post("/v1/images", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"]["code"] in ("malformed_json", "invalid_request")


def test_post_semantic_errors(client: httpx.Client, conditional: dict) -> None:
    mid = conditional["id"]
    _error(client.post("/v1/images", json={"model": mid}), 422, "invalid_request")
    _error(client.post("/v1/images", json={"model": mid, "seeds": []}), 422, "invalid_request")
    _error(
        client.post("/v1/images", json={"model": mid, "seeds": [1, 2], "labels": [1]}), 422, "invalid_request"
    )
    _error(
        client.post("/v1/images", json={"model": mid, "seeds": list(range(100_000))}), 422, "limit_exceeded"
    )
    _error(
        client.post("/v1/images", json={"model": mid, "seeds": [1], "scale": 10_000}), 422, "limit_exceeded"
    )
    err = _error(client.post("/v1/images", json={"model": mid, "labels": [10_000]}), 422, "invalid_parameter")
    assert err["max"] == conditional["manifest"]["num_classes"] - 1
    _error(client.post("/v1/images", json={"model": mid, "labels": ["unicorn"]}), 422, "invalid_parameter")
    _error(client.post("/v1/images", json={"model": "no-such-model", "seeds": [1]}), 404, "unknown_model")
    _error(client.post("/v1/images", json=[1, 2]), 422, "invalid_request")


def test_routing_errors(client: httpx.Client) -> None:
    _error(client.get("/no/such/path"), 404, "not_found")
    r = client.delete("/sample")
    _error(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]
    _error(client.get("/v1/images"), 405, "method_not_allowed")


def test_garbage_never_gives_5xx(client: httpx.Client, conditional: dict) -> None:
    values = [
        "",
        " ",
        "-0",
        "+1",
        "0x10",
        "1e3",
        "٣",
        "\u00a0",
        "%00",
        "'",
        "99999999999999999999999",
        "None",
        "[]",
    ]
    names = ["seed", "n", "scale", "digit", "class", "format", "model", "dataset"]
    for name, value in itertools.product(names, values):
        params = {"model": conditional["id"], name: value}
        r = client.get("/generate", params=params)
        assert r.status_code < 500, (name, value, r.text)
