"""The reverse proxy, for real: the shipped template in front of a real `imagegen serve` on
loopback (issue 16 rows 6 and 11; issue 26 item 6 and row 14).

The compose stack's first-start script makes the API key and the self-signed certificate on this
host, the service starts through the compose entry point with that key, and Debian's nginx runs
the rendered template over TLS. Checked: `nginx -t`; TLS with the generated certificate and no
plain HTTP; the key reaching the service; a burst past the per-client rate gets 429 in the
service's JSON error shape while another client address is still served; X-Forwarded-For is the
address nginx saw, whatever the client wrote. Every test is bounded in connections and seconds;
without nginx or openssl they skip with the reason.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.deploy.proxy import (
    TEMPLATE,
    Nginx,
    Secrets,
    first_start,
    keyed_service,
    nginx_test,
    render,
    require_nginx,
    tls_client,
    write_config,
)

MODELS = ("gan-mnist", "label-mnist")  # two small models: enough to serve, quick to load
BURST_BOUND = 400  # most requests the rate test sends before it must have seen a 429
BURST_SECONDS = 20.0


def _directive(config: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s+([^;]+);", config, re.MULTILINE)
    assert match, f"{name} missing from the nginx config"
    return match.group(1).strip()


def _seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


def _error(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return first_start(tmp_path_factory.mktemp("first-start"))


@pytest.fixture(scope="module")
def service(secrets: Secrets, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`imagegen serve` on loopback, started as compose starts it: through serve-with-key.sh."""
    require_nginx()  # no point starting the service when the proxy cannot run
    with keyed_service(tmp_path_factory.mktemp("service"), root, secrets, MODELS) as address:
        yield address


@pytest.fixture
def proxy(service: str, secrets: Secrets, tmp_path: Path) -> Iterator[Nginx]:
    """A fresh nginx per test, so one test's spent request budget never limits another's."""
    nginx = Nginx.start(tmp_path / "nginx", service, secrets.tls_dir)
    yield nginx
    nginx.stop()


def test_nginx_accepts_the_config(secrets: Secrets, tmp_path: Path) -> None:
    require_nginx()
    prefix = tmp_path / "nginx"
    config = render("127.0.0.1:8000", secrets.tls_dir, 8443)
    write_config(prefix, config)
    result = nginx_test(prefix)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    # A control: nginx -t does reject a broken copy.
    write_config(prefix, config + "\nbogus_directive 1;\n")
    assert nginx_test(prefix).returncode != 0


def test_proxy_limits_are_the_services_own(root: Path) -> None:
    config = TEMPLATE.read_text()
    defaults = Settings.model_fields
    assert _seconds(_directive(config, "client_header_timeout")) == defaults["header_timeout"].default
    assert _seconds(_directive(config, "keepalive_timeout")) == defaults["keepalive_timeout"].default
    assert _directive(config, "client_max_body_size") == "1m"
    if "max_body_bytes" in defaults:
        assert defaults["max_body_bytes"].default == 1 << 20
    assert _directive(config, "server_tokens") == "off"
    assert re.search(r"limit_conn\s+per_client\s+\d+;", config)
    assert _directive(config, "proxy_buffering") == "on"
    # One listener, TLS; nothing in the template listens for plain HTTP.
    assert re.findall(r"^\s*listen\s+([^;]+);", config, re.MULTILINE) == ["8443 ssl"]


def test_tls_with_the_generated_certificate_and_the_key_reaches_the_service(
    proxy: Nginx, secrets: Secrets
) -> None:
    with tls_client(secrets) as client:
        health = client.get(f"{proxy.url}/healthz")
        assert health.status_code == 200 and health.http_version == "HTTP/1.1"
        # The compose key is the service's key: without it 401 in the JSON shape, with it 200.
        denied = client.get(f"{proxy.url}/v1/models")
        assert denied.status_code == 401 and _error(denied)["code"] == "unauthorized"
        allowed = client.get(f"{proxy.url}/v1/models", headers={"Authorization": f"Bearer {secrets.api_key}"})
        assert allowed.status_code == 200, allowed.text
    # A control: the certificate is the self-signed one, which the system's CAs do not know.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{proxy.url}/healthz", timeout=10)


def test_images_behind_the_key_leave_the_proxy_private(proxy: Nginx, secrets: Secrets, service: str) -> None:
    key = {"Authorization": f"Bearer {secrets.api_key}"}
    seeded = "/generate?model=label-mnist&digit=7&seed=3"
    # A control: the service itself marks a seeded image public (it is the same for everyone).
    direct = httpx.get(f"http://{service}{seeded}", headers=key, timeout=30)
    assert direct.status_code == 200 and direct.headers["cache-control"].startswith("public")
    with tls_client(secrets) as client:
        image = client.get(f"{proxy.url}{seeded}", headers=key)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.headers.get_list("cache-control") == ["private, max-age=86400"]
        assert "Authorization" in image.headers["vary"]
        # An unseeded image stays no-store, with nothing added.
        fresh = client.get(f"{proxy.url}/generate?model=label-mnist&digit=7", headers=key)
        assert fresh.headers.get_list("cache-control") == ["no-store"] and "vary" not in fresh.headers


def test_plain_http_on_the_tls_port_gets_a_json_400(proxy: Nginx) -> None:
    with httpx.Client(timeout=10) as client:
        response = client.get(f"http://127.0.0.1:{proxy.port}/healthz", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert _error(response)["code"] == "https_required"
    assert "location" not in response.headers  # no redirect built from the client's Host


def test_a_burst_past_the_rate_gets_429_per_client_in_the_json_shape(proxy: Nginx, secrets: Secrets) -> None:
    statuses: list[int] = []
    limited: httpx.Response | None = None
    end = time.monotonic() + BURST_SECONDS
    with tls_client(secrets) as client:  # one keep-alive connection
        while len(statuses) < BURST_BOUND and time.monotonic() < end:
            response = client.get(f"{proxy.url}/healthz")
            statuses.append(response.status_code)
            if response.status_code == 429:
                limited = response
                break
    assert limited is not None, f"no 429 in {len(statuses)} requests: {sorted(set(statuses))}"
    assert set(statuses[:-1]) == {200}  # the burst itself was served
    assert len(statuses) > 20  # the 40-request burst (a slow loop may refill some) came first
    error = _error(limited)
    assert error["code"] == "rate_limited"
    assert limited.headers["retry-after"] == "1"
    # Keyed on the client's address: another address is still served at once.
    with tls_client(secrets, source="127.0.0.2") as other:
        assert other.get(f"{proxy.url}/healthz").status_code == 200


class _Recorder(BaseHTTPRequestHandler):
    """An upstream that answers 200 and keeps the headers it was sent."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording_upstream() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_x_forwarded_for_is_the_address_nginx_saw(
    recording_upstream: ThreadingHTTPServer, secrets: Secrets, tmp_path: Path
) -> None:
    upstream = f"127.0.0.1:{recording_upstream.server_address[1]}"
    nginx = Nginx.start(tmp_path / "nginx", upstream, secrets.tls_dir)
    try:
        with tls_client(secrets, source="127.0.0.2") as client:
            spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http"}
            assert client.get(f"{nginx.url}/anything", headers=spoofed).status_code == 200
    finally:
        nginx.stop()
    (seen,) = recording_upstream.seen  # type: ignore[attr-defined]
    headers = {k.lower(): v for k, v in seen.items()}
    assert headers["x-forwarded-for"] == "127.0.0.2"  # the client's own value is dropped
    assert headers["x-forwarded-proto"] == "https"
