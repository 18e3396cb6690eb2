"""Request bodies (service/http/body.py): a body that trickles in after complete headers is cut after
IMAGEGEN_BODY_TIMEOUT with a 408 in our error shape and the connection closed; uvicorn itself has
no such bound once the headers are in. Against a real server on loopback; the time bounds are
generous liveness bounds."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.service.conftest import Server, start_server

MODEL = "label-mnist"


@pytest.fixture(scope="module")
def quick_body_timeout(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not (models_dir / MODEL).is_dir():
        pytest.skip(f"{MODEL} is not in the model repository")
    root = tmp_path_factory.mktemp("body-repo")
    shutil.copytree(models_dir / MODEL, root / MODEL)
    srv = start_server(root, tmp_path_factory.mktemp("body"), env={"IMAGEGEN_BODY_TIMEOUT": "1"})
    yield srv
    srv.stop()


def _read_until_closed(conn: socket.socket, within_s: float) -> bytes:
    conn.settimeout(within_s)
    data = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            break
        except ConnectionError:
            break
        if not chunk:
            return data + b"<closed>"
        data += chunk
    return data


def test_a_body_that_trickles_in_gets_408_and_the_connection_is_closed(quick_body_timeout: Server) -> None:
    parts = urlsplit(quick_body_timeout.url)
    body = json.dumps({"model": MODEL, "seeds": [1, 2, 3]}).encode()
    head = (
        f"POST /v1/images HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(head + body[:5])  # complete headers, then a body that never finishes
        answer = _read_until_closed(conn, within_s=15)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert answer.endswith(b"<closed>"), "the rest of the body must not be read as a new request"
    payload = json.loads(answer.split(b"\r\n\r\n", 1)[1].removesuffix(b"<closed>"))
    assert payload["error"]["code"] == "body_timeout" and payload["error"]["timeout_s"] == 1


def test_a_body_sent_in_time_is_served(quick_body_timeout: Server) -> None:
    r = httpx.post(quick_body_timeout.url + "/v1/images", json={"model": MODEL, "seeds": [1]}, timeout=30)
    assert r.status_code == 200, r.text


def test_the_openapi_declares_the_408(quick_body_timeout: Server) -> None:
    spec = httpx.get(quick_body_timeout.url + "/openapi.json", timeout=30).json()
    assert "408" in spec["paths"]["/v1/images"]["post"]["responses"]
