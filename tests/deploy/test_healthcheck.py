"""deploy/healthcheck.py, the images' HEALTHCHECK, against a real HTTP server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        code = self.server.status if self.path == "/healthz" else 404  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _check(root: Path, port: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "IMAGEGEN_HEALTH_URL"} | {"IMAGEGEN_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(root / "deploy" / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthy_when_healthz_answers_200(root: Path, server: ThreadingHTTPServer) -> None:
    result = _check(root, server.server_address[1])
    assert result.returncode == 0, result.stderr


def test_unhealthy_when_healthz_answers_503(root: Path, server: ThreadingHTTPServer) -> None:
    server.status = 503  # type: ignore[attr-defined]
    result = _check(root, server.server_address[1])
    assert result.returncode == 1 and "503" in result.stderr


def test_unhealthy_when_nothing_listens(root: Path, server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    result = _check(root, port)
    assert result.returncode == 1 and "unhealthy" in result.stderr
