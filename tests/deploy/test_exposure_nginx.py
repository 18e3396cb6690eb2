"""Safe to expose, through the shipped proxy: rows 1, 2, 7, 8 and 9 of the issue tried again with
Debian's nginx running the rendered template in front of a real `imagegen serve` (started as
compose starts it, with the generated key, trusting the proxy's address).

Each client below comes from its own loopback address (127.0.0.x), as nginx's per-client limits
and the service's client identity see them. Bounded in connections and seconds; without nginx or
openssl the tests skip with the reason.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.proxy import Nginx, Secrets, first_start, keyed_service, require_nginx, tls_client
from tests.payloads import multipart, thin_png, worst_wait_while

STORM, OTHER, VAE = "gan-mnist", "label-mnist", "vae-mnist"
# Two runs of 64 images per model at most, as tests/service/test_overload.py: a few connections
# overload the stormed model.
SMALL_QUEUE = {
    "IMAGEGEN_QUEUE_LIMIT": "128",
    "IMAGEGEN_MAX_ITEMS": "128",
    "IMAGEGEN_TOTAL_QUEUE_LIMIT": "256",
}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return first_start(tmp_path_factory.mktemp("first-start"))


@pytest.fixture(scope="module")
def service(secrets: Secrets, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_nginx()
    env = SMALL_QUEUE | {"IMAGEGEN_TRUSTED_PROXIES": "127.0.0.1"}  # compose trusts its network
    work = tmp_path_factory.mktemp("exposed")
    with keyed_service(work, root, secrets, (STORM, OTHER, VAE), "--workers", "1", env=env) as address:
        yield address


@pytest.fixture
def proxy(service: str, secrets: Secrets, tmp_path: Path) -> Iterator[Nginx]:
    nginx = Nginx.start(tmp_path / "nginx", service, secrets.tls_dir)
    yield nginx
    nginx.stop()


def _keyed(secrets: Secrets, proxy: Nginx, source: str) -> httpx.Client:
    client = tls_client(secrets, source, base_url=proxy.url)
    client.headers["Authorization"] = f"Bearer {secrets.api_key}"
    client.timeout = httpx.Timeout(60)
    return client


def _reconstruct(client: httpx.Client, content: bytes, ctype: str) -> httpx.Response:
    return client.post(
        "/v1/reconstruct", params={"model": VAE}, content=content, headers={"Content-Type": ctype}
    )


def test_thin_uploads_through_nginx_are_refused_and_leave_others_served(
    proxy: Nginx, secrets: Secrets
) -> None:
    """Row 1: four 32 KB 1 x 16,777,216 PNGs held another model's /sample 28.2 s through nginx."""
    thin = thin_png(1, 1 << 24)
    statuses: list[int] = []

    def upload(source: str) -> None:
        with _keyed(secrets, proxy, source) as client:
            statuses.append(_reconstruct(client, thin, "image/png").status_code)

    threads = [threading.Thread(target=upload, args=(f"127.0.0.{10 + i}",)) for i in range(4)]
    for t in threads:
        t.start()
    with _keyed(secrets, proxy, "127.0.0.2") as other:
        started = time.monotonic()
        r = other.get("/sample", params={"model": STORM, "seed": 1})
        waited = time.monotonic() - started
    for t in threads:
        t.join()
    assert r.status_code == 200, r.text
    assert statuses == [413] * 4
    assert waited < 5, f"another model waited {waited:.1f} s"  # a liveness bound, not a timing


def test_a_many_part_body_through_nginx_is_refused_by_the_service(proxy: Nginx, secrets: Secrets) -> None:
    """Row 2: 10,000 parts (580 KB, under the proxy's 1 MiB) took the parser 4.7 s each."""
    body = multipart(10_000)
    assert len(body) < 1 << 20
    with _keyed(secrets, proxy, "127.0.0.2") as client:
        r = _reconstruct(client, body, "multipart/form-data; boundary=xyz")
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_many_parts"  # the service's answer, passed through


def test_large_json_bodies_through_nginx_do_not_stall_other_clients(proxy: Nginx, secrets: Secrets) -> None:
    """Row 9: 32 concurrent 1 MB JSON bodies through nginx held /healthz 3.4 s."""
    big = b'{"model": "gan-mnist", "pad": "' + b"x" * 900_000 + b'", "seeds": [' + b"1," * 40_000 + b"1]}"
    assert len(big) < 1 << 20  # under the proxy's client_max_body_size
    done: list[int] = []

    def post(source: str) -> None:
        with _keyed(secrets, proxy, source) as client:
            for _ in range(3):
                done.append(
                    client.post(
                        "/v1/images", content=big, headers={"Content-Type": "application/json"}
                    ).status_code
                )

    threads = [threading.Thread(target=post, args=(f"127.0.0.{10 + i}",)) for i in range(8)]
    with _keyed(secrets, proxy, "127.0.0.2") as probe:
        worst = worst_wait_while(threads, lambda: probe.get("/healthz").status_code, pause_s=0.05)
    assert len(done) == 24 and all(400 <= s < 500 for s in done), done
    assert worst < 2.0, f"/healthz through nginx waited {worst:.2f} s"


def _held(service: str, secrets: Secrets, route: str) -> float:
    text = httpx.get(f"http://{service}/metrics", headers={"Authorization": f"Bearer {secrets.api_key}"}).text
    found = re.search(rf'^imagegen_early_retries_held_total{{route="{re.escape(route)}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_retry_storm_through_nginx_holds_only_the_stormers(
    proxy: Nginx, secrets: Secrets, service: str
) -> None:
    """Rows 7 and 8: behind nginx every client shared the proxy's address, so the early-retry hold
    meant for a storm held a well-behaved client too (p99 679-749 ms against 5-6 ms alone)."""
    innocent_before = _held(service, secrets, "/v1/images")
    stop_at = time.monotonic() + 5.0
    storm: dict[int, int] = {}

    def stormer(source: str) -> None:
        with _keyed(secrets, proxy, source) as client:  # back at once after each answer, 503 or not
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                status = client.get("/sample", params={"model": STORM, "n": 64, "seed": i}).status_code
                storm[status] = storm.get(status, 0) + 1

    threads = [threading.Thread(target=stormer, args=(f"127.0.0.{20 + i}",)) for i in range(16)]
    for t in threads:
        t.start()
    innocent: list[int] = []
    with _keyed(secrets, proxy, "127.0.0.2") as client:
        while time.monotonic() < stop_at:
            innocent.append(client.post("/v1/images", json={"model": OTHER, "seeds": [1]}).status_code)
            time.sleep(0.1)
    for t in threads:
        t.join()
    assert storm.get(503), f"16 connections x 64 images must overload a 128-image queue: {storm}"
    assert _held(service, secrets, "/sample") > 0, "the stormers came back early and were held"
    assert innocent and set(innocent) == {200}, innocent
    assert _held(service, secrets, "/v1/images") == innocent_before, "the well-behaved client was held"
