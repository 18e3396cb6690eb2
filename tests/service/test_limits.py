"""Hostile request shapes (issue 16, rows 1, 2, 3 and 13) against a real server: each gets a small
4xx in our JSON error shape, with X-Request-Id, and the server stays responsive meanwhile.

Time bounds here are generous liveness checks ("answered within 5 s"), never performance claims.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from service.http.params import read_query
from tests.service.conftest import Server, read_until_closed, start_server

MODEL = "gan-mnist"
SMALL_ERROR = 2048  # bytes: an error body never carries more than a short prefix of the input


@pytest.fixture(scope="module")
def wide(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the largest query-string limit the settings allow (64 KiB), so repeated
    parameters reach the parser instead of the 414 in front of it."""
    if not (models_dir / MODEL).is_dir():
        pytest.skip(f"{MODEL} is not in the model repository")
    root = tmp_path_factory.mktemp("limits-repo")
    shutil.copytree(models_dir / MODEL, root / MODEL)
    srv = start_server(root, tmp_path_factory.mktemp("wide"), env={"IMAGEGEN_MAX_QUERY_BYTES": "65536"})
    yield srv
    srv.stop()


def _assert_code(r: httpx.Response, status: int, code: str) -> dict:
    """A small JSON error of this status and code, with a request id; returns its details."""
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]
    assert len(r.content) < SMALL_ERROR, len(r.content)
    err = r.json()["error"]
    assert err["code"] == code, err
    return err


def test_repeated_parameters_are_parsed_in_linear_time() -> None:
    """25,000 repeats (issue 16, row 1) are refused by counting, not by pairwise comparison."""
    from service.errors import InvalidParameter

    with pytest.raises(InvalidParameter) as caught:
        read_query([("model", MODEL)] + [("seed", "")] * 25_000)
    assert caught.value.details["parameters"] == ["seed"]


def test_a_long_query_string_gets_414_before_parsing(client: httpx.Client, conditional: dict) -> None:
    query = f"model={conditional['id']}" + "&seed" * 25_000  # ~125 KB, as in the report
    err = _assert_code(client.get("/sample?" + query[:60_000]), 414, "query_too_long")
    assert err["limit"] == 4096


def test_repeated_parameters_do_not_stall_other_requests(wide: Server) -> None:
    """Hostile clients send 60 KB of repeated parameters while /healthz is asked: every hostile
    request gets its 422 and /healthz answers within a liveness bound."""
    query = f"/sample?model={MODEL}" + "&seed" * 12_000
    statuses: list[int] = []

    def hostile() -> None:
        with httpx.Client(base_url=wide.url, timeout=60) as c:
            for _ in range(5):
                statuses.append(c.get(query).status_code)

    threads = [threading.Thread(target=hostile) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            assert httpx.get(wide.url + "/healthz", timeout=5).status_code == 200
    finally:
        for t in threads:
            t.join(60)
    assert statuses == [422] * 20
    r = httpx.get(wide.url + query)
    assert _assert_code(r, 422, "invalid_parameter")["parameters"] == ["seed"]


def test_a_request_line_past_the_http_parser_limit(client: httpx.Client, server: Server) -> None:
    """Over max_query_bytes, clients get our JSON 414; past the header bound or the HTTP parser's
    own limit (issue 16 row 13) the refusal is in our error shape too."""
    _assert_code(client.get("/sample?model=x&pad=" + "a" * 60_000), 414, "query_too_long")
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"GET /sample?pad=" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    # 431 where our header bound (IMAGEGEN_MAX_HEADER_BYTES) meets it first, 400 where the parser's does
    assert head.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] in ("headers_too_large", "bad_request")


def test_many_bad_labels_give_a_small_answer_at_once(client: httpx.Client, conditional: dict) -> None:
    """340,000 bad labels in a 1 MB body (issue 16, row 2): refused by count, in a small body."""
    body = json.dumps({"model": conditional["id"], "labels": [{}] * 340_000}, separators=(",", ":"))
    r = client.post("/v1/images", content=body.encode(), headers={"content-type": "application/json"})
    assert _assert_code(r, 422, "limit_exceeded")["max"] == 1024
    # Within the count limit: only the first few errors are listed, without the values sent.
    labels = [{"nested": "x" * 500}] * 1000
    r = client.post("/v1/images", json={"model": conditional["id"], "labels": labels})
    err = _assert_code(r, 422, "invalid_request")
    assert len(err["errors"]) == 5 and err["more_errors"] > 0
    assert "xxxxx" not in r.text


@pytest.mark.parametrize("field", ["dataset", "model"])
def test_long_strings_are_never_echoed(client: httpx.Client, conditional: dict, field: str) -> None:
    body = {"model": conditional["id"], "seeds": [1], field: "d" * 1_000_000}
    r = client.post("/v1/images", json=body)
    err = _assert_code(r, 422, "invalid_request")
    assert err["errors"][0]["loc"] == [field]
    r = client.get("/sample", params={"model": conditional["id"], field: "d" * 3000})
    assert _assert_code(r, 422, "invalid_parameter")["parameter"] == field


def test_unknown_long_parameter_names_are_clipped(client: httpx.Client, conditional: dict) -> None:
    r = client.get("/sample", params={"model": conditional["id"], "z" * 3000: "1"})
    err = _assert_code(r, 422, "unknown_parameter")
    assert len(err["parameters"][0]) < 100


def test_deep_json_is_a_4xx_with_a_request_id(client: httpx.Client, server: Server) -> None:
    """1,000 levels of nesting (issue 16, row 3) was a 500 with a 135-line traceback per request."""
    before = server.log().count("Traceback")
    for depth in (17, 1_000, 100_000):
        body = b"[" * depth + b"]" * depth
        r = client.post("/v1/images", content=body, headers={"content-type": "application/json"})
        assert _assert_code(r, 400, "json_too_deep")["max_depth"] == 16
    nested = {"model": "x", "seeds": [1], "dataset": json.loads("[" * 15 + "]" * 15)}
    _assert_code(client.post("/v1/images", json=nested), 422, "invalid_request")  # deep enough to parse
    assert server.log().count("Traceback") == before


def test_openapi_declares_errors_and_enums(client: httpx.Client, catalog: list[dict]) -> None:
    """Row 13: every operation declares its 4xx/5xx in our error shape; model ids, families and
    class names are enums, so a schema-driven client reaches image generation."""
    spec = client.get("/openapi.json").json()
    error_ref = "#/components/schemas/ErrorBody"
    ours = {
        path: ops for path, ops in spec["paths"].items() if not path.startswith("/v2")
    }  # protocol's shape
    for path, operations in ours.items():
        for method, operation in operations.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert "500" in errors, (method, path)
            for status, response in errors.items():
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == error_ref, (method, path, status)
    assert {"code", "message"} <= set(spec["components"]["schemas"]["ErrorDetail"]["properties"])
    params = {p["name"]: p for p in spec["paths"]["/sample"]["get"]["parameters"]}
    assert {m["id"] for m in catalog} | {m["family"] for m in catalog} <= set(
        params["model"]["schema"]["enum"]
    )
    names = {n for m in catalog for n in m["manifest"]["class_names"]}
    assert names <= set(params["class"]["schema"]["enum"])
    assert params["seed"]["schema"]["type"] == "integer" and params["model"]["required"]
    assert {"400", "413", "415", "422"} <= set(spec["paths"]["/v1/images"]["post"]["responses"])
