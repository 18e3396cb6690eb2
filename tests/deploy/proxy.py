"""The shipped nginx template run for real on loopback, as compose runs it, for any test.

`first_start(...)` runs deploy/compose/first-start.sh (the compose `secrets` service) on the host
to make the API key and the self-signed certificate; `Nginx.start(...)` renders
deploy/nginx/templates/default.conf.template the way the official image does (its
`${IMAGEGEN_UPSTREAM}` replaced), pointed at those files and a free loopback port, and runs
Debian's nginx on it. Both need binaries that may be missing: `require_nginx()` and
`require_openssl()` skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy/nginx/templates/default.conf.template"
FIRST_START = ROOT / "deploy/compose/first-start.sh"
SERVE_WITH_KEY = ROOT / "deploy/compose/serve-with-key.sh"
TLS_PORT = 8443  # the template's listener, published by compose
CONTAINER_TLS_DIR = "/etc/nginx/tls"


def require_nginx() -> str:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx): the proxy cannot run here")
    return nginx


def require_openssl() -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: deploy/compose/first-start.sh cannot make a certificate")
    return openssl


@dataclass(frozen=True)
class Secrets:
    key_file: Path
    tls_dir: Path
    log: str  # what first-start.sh printed

    @property
    def api_key(self) -> str:
        return self.key_file.read_text()

    @property
    def cert(self) -> Path:
        return self.tls_dir / "cert.pem"


def first_start(work: Path, env: dict[str, str] | None = None) -> Secrets:
    """Run the compose stack's first-start script with `work/keys` and `work/tls` as its volumes."""
    require_openssl()
    environ = {k: v for k, v in os.environ.items() if k not in ("IMAGEGEN_API_KEY", "IMAGEGEN_TLS_NAME")}
    result = subprocess.run(
        ["sh", str(FIRST_START), str(work / "keys"), str(work / "tls")],
        env=environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Secrets(work / "keys" / "api_key", work / "tls", result.stdout + result.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(upstream: str, tls_dir: Path, port: int = TLS_PORT) -> str:
    """The template as the image renders it, with the certificate folder and port of this host."""
    text = TEMPLATE.read_text().replace("${IMAGEGEN_UPSTREAM}", upstream)
    text = text.replace(f"{CONTAINER_TLS_DIR}/", f"{tls_dir}/")
    listen = f"listen {TLS_PORT} ssl;"
    assert listen in text, f"the template no longer has `{listen}`"
    return text.replace(listen, f"listen 127.0.0.1:{port} ssl;")


def write_config(prefix: Path, server_config: str) -> Path:
    """The official image's nginx.conf in miniature: the template lands in http {} via conf.d."""
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "conf.d").mkdir(exist_ok=True)
    (prefix / "conf.d" / "default.conf").write_text(server_config)
    # As root, nginx's workers would run as `nobody`, who cannot enter pytest's private tmp dirs.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes auto;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
        "events { worker_connections 1024; }\n"  # the official image's nginx.conf
        f"http {{\n  access_log off;\n  include {prefix}/conf.d/*.conf;\n}}\n"
    )
    return prefix / "nginx.conf"


def nginx_test(prefix: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_nginx(), "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class Nginx:
    process: subprocess.Popen
    port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, prefix: Path, upstream: str, tls_dir: Path) -> Nginx:
        nginx = require_nginx()
        port = free_port()
        write_config(prefix, render(upstream, tls_dir, port))
        process = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(prefix / "logs" / "stderr.log").open("w"),
        )
        proxy = cls(process, port, prefix)
        proxy._wait_listening(deadline_s=15)
        return proxy

    def _wait_listening(self, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise AssertionError("nginx exited: " + (self.prefix / "logs" / "stderr.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nginx did not listen on {self.port} within {deadline_s} s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # fast shutdown: nothing here needs a drain
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def tls_client(secrets: Secrets, source: str = "127.0.0.1", **kwargs: object) -> httpx.Client:
    """A client from the loopback address `source` that verifies nginx's certificate against the
    generated one (its SAN has IP:127.0.0.1)."""
    context = ssl.create_default_context(cafile=str(secrets.cert))
    transport = httpx.HTTPTransport(verify=context, local_address=source)
    return httpx.Client(transport=transport, timeout=10, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def keyed_service(
    work: Path,
    root: Path,
    secrets: Secrets,
    models: tuple[str, ...],
    *args: str,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`imagegen serve` on loopback with the repository's `models` (linked into `work`), started as
    compose starts it: through serve-with-key.sh with the generated key; yields its host:port once
    its models are ready."""
    from tests.deploy.test_monitoring import _stop, _wait

    folder = work / "models"
    folder.mkdir()
    for model in models:
        if not (root / "models" / model / "manifest.json").exists():
            pytest.skip(f"model {model} not in models/")
        (folder / model).symlink_to(root / "models" / model)
    port = free_port()
    command = ["sh", str(SERVE_WITH_KEY), str(secrets.key_file)]
    command += [sys.executable, "-m", "imagegen.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--models-dir", str(folder), "--no-access-log", *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")} | (env or {})
    log = work / "serve.log"
    process = subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        try:
            # /readyz, not /healthz: models load after start-up, and a test's first request must not race them
            _wait(f"http://127.0.0.1:{port}/readyz", 120, process)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {log.read_text()[-2000:]}") from None
        yield f"127.0.0.1:{port}"
    finally:
        _stop(process)
