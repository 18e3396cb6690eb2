"""/docs and /redoc work without network access: every URL their HTML references is on this
server (the vendored Swagger UI and ReDoc under service/static/vendor/) and answers 200; the
static files ship in the package; /static serves nothing outside its folder."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch

import httpx
import pytest

from tests.service.conftest import REPO

STATIC = REPO / "service/static"
# src= / href= attributes and Swagger UI's `url: '...'`
_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")


def referenced_urls(html: str) -> list[str]:
    return [a or b for a, b in _URL.findall(html)]


@pytest.mark.parametrize(
    ("page", "expected"),
    [("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc.standalone.js"})],
)
def test_docs_reference_only_local_urls_that_answer(
    client: httpx.Client, page: str, expected: set[str]
) -> None:
    r = client.get(page)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    urls = referenced_urls(r.text)
    assert {u.rsplit("/", 1)[-1] for u in urls} >= expected, urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} references {url}"
        assert client.get(url).status_code == 200, url
    assert "fonts.googleapis" not in r.text and "cdn.jsdelivr" not in r.text


def test_vendored_assets_have_their_types_and_licenses(client: httpx.Client) -> None:
    js = client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "SwaggerUIBundle" in js.text
    assert (
        client.get("/static/vendor/swagger-ui/swagger-ui.css").headers["content-type"].startswith("text/css")
    )
    for license_file in ("swagger-ui/LICENSE", "redoc/LICENSE"):
        assert (STATIC / "vendor" / license_file).is_file(), license_file


def test_every_static_file_is_package_data() -> None:
    """pip install . (not -e) must carry the playground and the vendored UIs."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    files = [p.relative_to(REPO / "service").as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert "static/vendor/redoc/redoc.standalone.js" in files
    missing = [
        f
        for f in files
        if not any(fnmatch(f, pattern) and f.count("/") == pattern.count("/") for pattern in patterns)
    ]
    assert not missing, f"not in [tool.setuptools.package-data] service: {missing}"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../settings.py",
        "/static/%2e%2e/settings.py",
        "/static/..%2fsettings.py",
        "/static/vendor",
        "/static/vendor/",
        "/static/nope.js",
        "/static/%00",
    ],
)
def test_static_serves_nothing_outside_its_folder(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert r.json()["error"]["code"] == "not_found"
    assert "Settings" not in r.text


def test_playground_files_are_served(client: httpx.Client) -> None:
    page = client.get("/").text
    for url in referenced_urls(page):
        if url.startswith("/static/"):
            assert client.get(url).status_code == 200, url
    assert "/static/playground.js" in page
    script = (STATIC / "playground.js").read_text()
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script), (
        "the playground writes text with textContent only"
    )


def test_training_grid_of_a_model(client: httpx.Client, conditional: dict[str, object]) -> None:
    model = conditional["id"]
    r = client.get(f"/v1/models/{model}/grid")
    if not (REPO / "docs/grids" / f"{model}.png").is_file():
        assert r.status_code == 404
        return
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (REPO / "docs/grids" / f"{model}.png").read_bytes()
    assert client.get("/v1/models/no-such-model/grid").status_code == 404
    assert client.get("/v1/models/..%2f..%2fREADME/grid").status_code == 404
