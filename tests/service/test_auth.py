"""The API key (issue 16, row 11): with IMAGEGEN_API_KEY set, everything but /healthz and a bare
/readyz status needs it (per-model readiness, /metrics, /docs, /openapi.json and every route a
router adds), unless IMAGEGEN_PUBLIC_METRICS=1 opens /metrics alone. The playground's page and
static files are public (issue 19: the page must load to ask for the key; it holds no data)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from service.app import ROUTERS
from tests.service.conftest import Server, start_server

MODEL = "gan-mnist"  # conditional and small: quick to load
KEY = "s3cret-key"
GOOD = {"Authorization": f"Bearer {KEY}"}
# Probes a load balancer must reach without the key (the protocol's own health routes may be among them).
PROBES = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
# The playground's page and its files: the same bytes for everyone, no model data.
PUBLIC_PAGES = ("/", "/static/")


@pytest.fixture(scope="module")
def small_repo(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (models_dir / MODEL).is_dir():
        pytest.skip(f"{MODEL} is not in the model repository")
    root = tmp_path_factory.mktemp("auth-repo")
    shutil.copytree(models_dir / MODEL, root / MODEL)
    return root


@pytest.fixture(scope="module")
def keyed(small_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(small_repo, tmp_path_factory.mktemp("keyed"), env={"IMAGEGEN_API_KEY": KEY})
    yield srv
    srv.stop()


def _paths() -> list[tuple[str, str]]:
    """(method, path) of every route of every router the app includes, path parameters filled in."""
    found = []
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                path = re.sub(r"\{[^}:]+(:path)?\}", MODEL, route.path)
                found += [(method, path) for method in sorted(route.methods)]
    return found


def test_every_route_but_the_probes_needs_the_key(keyed: Server) -> None:
    """Walks the app's own router list, so a route added later is checked too."""
    routes = _paths()
    assert ("GET", "/metrics") in routes and ("GET", "/docs") in routes
    for method, path in routes:
        r = httpx.request(method, keyed.url + path, params={"model": MODEL}, timeout=30)
        if path in PROBES:
            assert r.status_code in (200, 401, 503), (method, path, r.text)
        elif path == "/" or path.startswith(PUBLIC_PAGES[1]):
            assert r.status_code in (200, 404), (method, path, r.status_code)
        else:
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json")


def test_the_playground_page_loads_without_the_key_but_its_data_does_not(keyed: Server) -> None:
    page = httpx.get(keyed.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert MODEL not in page.text
    assert httpx.get(keyed.url + "/static/playground.js").status_code == 200
    assert httpx.get(keyed.url + "/v1/models").status_code == 401


def test_the_key_opens_them(keyed: Server) -> None:
    for path in ("/metrics", "/docs", "/openapi.json", "/", "/v1/models"):
        assert httpx.get(keyed.url + path, headers=GOOD).status_code == 200, path
    r = httpx.get(keyed.url + "/sample", params={"model": MODEL, "seed": 1}, headers={"X-API-Key": KEY})
    assert r.status_code == 200


def test_wrong_or_malformed_keys_are_refused(keyed: Server) -> None:
    for headers in (
        {"Authorization": "Bearer s3cret-kez"},  # same length, one byte off
        {"Authorization": f"Basic {KEY}"},
        {"X-API-Key": ""},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": "ключ".encode()},  # not ASCII
    ):
        r = httpx.get(keyed.url + "/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", headers
        assert r.headers["www-authenticate"] == "Bearer"


def test_readyz_shows_model_detail_only_with_the_key(keyed: Server) -> None:
    bare = httpx.get(keyed.url + "/readyz")
    assert bare.status_code == 200 and bare.json() == {"status": "ready"}
    detail = httpx.get(keyed.url + "/readyz", headers=GOOD)
    assert detail.json() == {"status": "ready", "models": {MODEL: "ready"}}
    assert httpx.get(keyed.url + "/healthz").json() == {"status": "ok"}


def test_public_metrics_opens_metrics_only(small_repo: Path, tmp_path: Path) -> None:
    env = {"IMAGEGEN_API_KEY": KEY, "IMAGEGEN_PUBLIC_METRICS": "1"}
    srv = start_server(small_repo, tmp_path, env=env)
    try:
        assert httpx.get(srv.url + "/metrics").status_code == 200
        for path in ("/docs", "/openapi.json", "/v1/models"):
            assert httpx.get(srv.url + path).status_code == 401, path
    finally:
        srv.stop()
