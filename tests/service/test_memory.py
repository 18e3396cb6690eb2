"""Memory (issue 16, row 5): the bytes of responses in flight are bounded. A client that does not
read keeps its response's bytes counted until it reads or leaves; past IMAGEGEN_MAX_RESPONSE_BYTES
new requests get 503 `overloaded` with Retry-After, and once it leaves they are served again.
A real server on loopback; the RSS figures themselves come from bench/memory.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.service.conftest import Server, start_server

MODEL = "gan-mnist"
# 1024 images of 28x28 at scale 4 as float32: 51 MB, far more than socket buffers absorb.
BIG = {"model": MODEL, "seeds": list(range(1024)), "scale": 4, "format": "npy"}


@pytest.fixture(scope="module")
def bounded_bytes(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not (models_dir / MODEL).is_dir():
        pytest.skip(f"{MODEL} is not in the model repository")
    root = tmp_path_factory.mktemp("memory-repo")
    shutil.copytree(models_dir / MODEL, root / MODEL)
    env = {"IMAGEGEN_MAX_RESPONSE_BYTES": str(64 << 20)}
    srv = start_server(root, tmp_path_factory.mktemp("memory"), "--no-access-log", env=env)
    yield srv
    srv.stop()


def _non_reader(srv: Server) -> socket.socket:
    parts = urlsplit(srv.url)
    body = json.dumps(BIG).encode()
    conn = socket.create_connection((parts.hostname, parts.port), timeout=10)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.sendall(
        b"POST /v1/images HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return conn


def _post_until(url: str, wanted: Callable[[httpx.Response], bool], within_s: float) -> httpx.Response:
    """POST the big request until an answer is `wanted` (or the time is up: the last answer)."""
    deadline = time.monotonic() + within_s
    while True:
        r = httpx.post(url + "/v1/images", json=BIG, timeout=60)
        if wanted(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def _bytes_refusal(r: httpx.Response) -> bool:
    return r.status_code == 503 and "bytes of responses" in r.json()["error"]["message"]


def test_a_client_that_does_not_read_holds_its_bytes_until_it_leaves(bounded_bytes: Server) -> None:
    assert httpx.post(bounded_bytes.url + "/v1/images", json=BIG, timeout=60).status_code == 200
    stalled = _non_reader(bounded_bytes)
    try:
        refused = _post_until(bounded_bytes.url, _bytes_refusal, within_s=30)
        assert _bytes_refusal(refused), refused.text[:300]
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        # Small responses still fit beside it.
        small = httpx.get(bounded_bytes.url + "/sample", params={"model": MODEL, "seed": 1}, timeout=30)
        assert small.status_code == 200
    finally:
        stalled.close()
    served = _post_until(bounded_bytes.url, lambda r: r.status_code == 200, within_s=30)
    assert served.status_code == 200 and len(served.content) > 50_000_000


def test_serve_limits_malloc_arenas_itself(models_dir: Path, tmp_path: Path) -> None:
    """Row 13 of "safe to expose": only the Docker image set MALLOC_ARENA_MAX, so a `pip install .`
    server kept an arena per thread and stayed at 2.2x its warm RSS after a burst."""
    if "MALLOC_ARENA_MAX" in os.environ:
        pytest.skip("MALLOC_ARENA_MAX is set in this environment, which the server leaves alone")
    srv = start_server(models_dir, tmp_path)
    try:
        assert "glibc malloc arenas: at most 2" in srv.log()
    finally:
        srv.stop()
    given = start_server(models_dir, tmp_path, env={"MALLOC_ARENA_MAX": "4"})
    try:  # the deployer's own setting wins, and then the server says nothing of it
        assert "glibc malloc arenas" not in given.log()
    finally:
        given.stop()
