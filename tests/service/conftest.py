"""Shared fixtures: a real `imagegen serve` on a free loopback port, over the real models in models/.

One server serves the whole session (`server`); tests that need other settings or a damaged
repository start their own with `start_server`. Model ids are discovered through /v1/models,
never hard-coded: `conditional` is a ready model with `z` and `label` inputs, `label_only` one
with only `label` (the label family), `unconditional` one with only `z` (when present).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service import launch_server

REPO = Path(__file__).resolve().parents[2]
# The real repository; IMAGEGEN_TEST_MODELS_DIR points the tests at another (e.g. while models train).
MODELS_DIR = Path(os.environ.get("IMAGEGEN_TEST_MODELS_DIR", REPO / "models"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    models_dir: Path,
    log_dir: Path,
    *extra: str,
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
    nofile: int | None = None,
) -> Server:
    """`imagegen serve` in a subprocess; returns once /readyz answers (200, or 503 after loading).
    `nofile`: the server's file-descriptor limit (soft and hard)."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    cmd = launch_server.command(  # imagegen.cli, through the launcher (its docstring says why)
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--models-dir",
        str(models_dir),
        "--cpu-threads",
        "1",
        "--workers",  # one process, as before --workers existed; a test's own --workers comes later
        "1",
        *extra,
        nofile=nofile,
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    environ |= {"PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            r = httpx.get(server.url + "/readyz", timeout=2)
            loading = r.status_code == 503 and r.json()["error"]["message"].startswith("models are still")
            if not wait_ready or not loading:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not become ready:\n{server.log()}")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    if not any(MODELS_DIR.glob("*/manifest.json")):
        pytest.fail(f"no models in {MODELS_DIR}: the service tests need the real model repository")
    return MODELS_DIR


@pytest.fixture(scope="session")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(models_dir, tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def catalog(client: httpx.Client) -> list[dict[str, Any]]:
    body = client.get("/v1/models").json()
    return [m for m in body["models"] if m["state"] == "ready"]


def _pick(catalog: list[dict[str, Any]], inputs: set[str]) -> dict[str, Any] | None:
    found = [m for m in catalog if set(m["manifest"]["inputs"]) == inputs]
    found.sort(key=lambda m: (m["baseline"], m["manifest"]["image"]["channels"] != 1, m["id"]))
    return found[0] if found else None


@pytest.fixture(scope="session")
def conditional(catalog: list[dict[str, Any]]) -> dict[str, Any]:
    model = _pick(catalog, {"z", "label"})
    if model is None:
        pytest.fail("the service tests need at least one ready model with z and label inputs")
    return model


@pytest.fixture(scope="session")
def label_only(catalog: list[dict[str, Any]]) -> dict[str, Any]:
    model = _pick(catalog, {"label"})
    if model is None:
        pytest.skip("no label-family model (inputs: label only) in the repository")
    return model


@pytest.fixture(scope="session")
def unconditional(catalog: list[dict[str, Any]]) -> dict[str, Any]:
    model = _pick(catalog, {"z"})
    if model is None:
        pytest.skip("no unconditional model (inputs: z only) in the repository")
    return model


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> HWC uint8 array (through Pillow, as a client would)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def repository_of(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory, name: str, *models: str
) -> Path:
    """A fresh model repository holding copies of `models` (skips when one is not shipped)."""
    root = tmp_path_factory.mktemp(name)
    for model in models:
        if not (models_dir / model).is_dir():
            pytest.skip(f"{model} is not in the model repository")
        shutil.copytree(models_dir / model, root / model)
    return root


def copy_model(models_dir: Path, model_id: str, dest: Path, new_id: str | None = None) -> Path:
    """Copy a model folder (optionally under a new id, manifest id rewritten)."""
    target = dest / (new_id or model_id)
    shutil.copytree(models_dir / model_id, target)
    if new_id:
        import json

        from imagegen.contract.manifest import Manifest
        from imagegen.contract.triton_config import CONFIG_NAME, write_config

        manifest_path = target / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["id"] = new_id
        manifest_path.write_text(json.dumps(manifest, indent=2))
        if (target / CONFIG_NAME).is_file():  # its name is the model's: the scan checks it
            write_config(target, Manifest.read(target))
    return target


def read_until_closed(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes; a reset after an answer (the server closed
    with our unread input pending) still returns that answer."""
    answer = b""
    try:
        while chunk := conn.recv(4096):
            answer += chunk
    except ConnectionResetError:
        assert answer, "reset before any answer"
    return answer


@contextlib.contextmanager
def serving(repo: Path, log_dir: Path, *args: str, **kwargs: Any) -> Iterator[Server]:
    """`start_server` as a context: the server is stopped on the way out."""
    srv = start_server(repo, log_dir, *args, **kwargs)
    try:
        yield srv
    finally:
        srv.stop()


def address(srv: Server) -> tuple[str, int]:
    parts = urlsplit(srv.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def model_metric(url: str, name: str, model: str) -> float:
    """One per-model sample (`name{model="..."}`) of the server's /metrics; 0 when absent."""
    text = httpx.get(url + "/metrics", timeout=30).text
    found = re.search(rf'^{name}\{{model="{re.escape(model)}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def until(what: str, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait for `condition()` (a liveness bound, never a timing claim)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for: {what}")
        time.sleep(0.02)
