"""GET /docs, GET /redoc and GET /openapi.json behind the key, like the API; the playground page
GET / and its files under GET /static/ without it (the same bytes for everyone, no data: every
request the page makes carries the key the user typed, so the page must load to ask for it).

/docs and /redoc load their scripts from /static/vendor (Swagger UI and ReDoc, vendored with
their licenses in service/static/vendor/), so they work without network access.

The OpenAPI is FastAPI's own, from the routers' parameter and body models, with the served
model ids, families, datasets and class names filled in as enums (known only once the
repository is scanned), so a schema-driven client or fuzzer reaches image generation.
"""

from __future__ import annotations

import copy
import functools
import mimetypes
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from service.errors import NotFound, clip
from service.http.auth import SECURITY_SCHEMES, require_key
from service.http.context import context
from service.http.routers.common import COMMON_ERRORS, KEYED_ERRORS, error_responses
from service.http.routing import ServiceRoute, guarded_route
from service.store.registry import Registry

router = APIRouter(
    route_class=guarded_route(require_key), responses=error_responses(*KEYED_ERRORS), include_in_schema=False
)
# The playground's page and static files: public (see the module docstring).
pages = APIRouter(
    route_class=ServiceRoute, responses=error_responses(*COMMON_ERRORS), include_in_schema=False
)

STATIC = "/static"
SWAGGER_JS = f"{STATIC}/vendor/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = f"{STATIC}/vendor/swagger-ui/swagger-ui.css"
FAVICON = f"{STATIC}/vendor/swagger-ui/favicon-32x32.png"
REDOC_JS = f"{STATIC}/vendor/redoc/redoc.standalone.js"
# The docs pages may load nothing from elsewhere: ReDoc's footer asks a CDN for its logo (the
# bundle hides the image when that fails), and this keeps any such request from leaving at all.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; font-src 'self' data:"
)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    ctx = context(request)
    s = ctx.settings
    spec = with_security(
        without_protocol_422(request.app.openapi()),
        api_key=s.api_key is not None,
        admin_key=s.admin_key is not None,
    )
    return JSONResponse(with_enums(spec, ctx.registry))


_PAGE: dict[str, Any] = {"openapi_url": "/openapi.json", "title": "imagegen API", "favicon": FAVICON}


def _with_csp(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/docs")
async def docs() -> HTMLResponse:
    p = _PAGE
    return _with_csp(get_swagger_ui_html(
        openapi_url=p["openapi_url"], title=p["title"], swagger_js_url=SWAGGER_JS,
        swagger_css_url=SWAGGER_CSS, swagger_favicon_url=p["favicon"],
        swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
    ))  # fmt: skip


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    p = _PAGE
    return _with_csp(get_redoc_html(
        openapi_url=p["openapi_url"], title=p["title"], redoc_js_url=REDOC_JS, redoc_favicon_url=p["favicon"],
        with_google_fonts=False,
    ))  # fmt: skip


@router.get("/v1/models/{model_id}/grid")
async def training_grid(request: Request, model_id: str) -> Response:
    """The model's sample grid from training (`<grids_dir>/<id>.png`), for the playground's card."""
    ctx = context(request)
    grids = ctx.settings.grids_dir
    if model_id not in ctx.registry.models or grids is None:
        raise NotFound(f"no training grid for {clip(model_id, 60)!r}", path="grid")
    path = grids / f"{model_id}.png"
    if not path.is_file():
        raise NotFound(f"no training grid for {model_id!r}", path="grid")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})


@pages.get("/")
async def playground(request: Request) -> HTMLResponse:
    ctx = context(request)
    return HTMLResponse(ctx.playground, headers={"Cache-Control": "no-cache"})


@pages.get(STATIC + "/{name:path}")
async def static_file(name: str) -> Response:
    """A file of service/static/ (the playground's script and style, the vendored docs UIs)."""
    path = _static_path(name)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    cache = "public, max-age=86400" if name.startswith("vendor/") else "no-cache"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": cache})


@functools.cache
def _static_root() -> Path:
    return Path(str(resources.files("service").joinpath("static"))).resolve()


def _static_path(name: str) -> Path:
    """The file under service/static/ named by `name`; 404 for anything else (`..` included)."""
    root = _static_root()
    try:
        path = (root / name).resolve()
        found = path.is_relative_to(root) and path.is_file() and not path.name.startswith(".")
    except (OSError, ValueError):  # e.g. a NUL byte in the name
        found = False
    if not found:
        raise NotFound(f"no static file {clip(name, 60)!r}", path=clip(STATIC + "/" + name, 100))
    return path


def without_protocol_422(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of the OpenAPI without the 422 FastAPI declares for every route with parameters:
    the /v2 routes take only string path parameters, and answer every error in the protocol's
    shape with the protocol's statuses (declared on each route)."""
    spec = copy.deepcopy(spec)
    for path, operations in spec.get("paths", {}).items():
        if path == "/v2" or path.startswith("/v2/"):
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
    return spec


ADMIN_SCHEME = {
    "adminKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <IMAGEGEN_ADMIN_KEY> (the model repository API)",
    }
}
REPOSITORY_PREFIX = "/v2/repository/"


def with_security(spec: dict[str, Any], *, api_key: bool, admin_key: bool = False) -> dict[str, Any]:
    """A copy of the OpenAPI declaring the keys that are configured, each on the operations that
    may answer 401 for want of it: the API key everywhere but the repository routes, which take
    the admin key (or, without one, the API key before their 403). No key configured: nothing
    asks for one, and the spec declares none."""
    if not (api_key or admin_key):
        return spec
    spec = copy.deepcopy(spec)
    schemes = {**(SECURITY_SCHEMES if api_key else {}), **(ADMIN_SCHEME if admin_key else {})}
    spec.setdefault("components", {})["securitySchemes"] = schemes
    for path, operations in spec.get("paths", {}).items():
        needed = _keys_needed(path, api_key, admin_key)
        for operation in operations.values():
            if needed and "401" in operation.get("responses", {}):
                operation["security"] = [{name: []} for name in needed]
    return spec


def _keys_needed(path: str, api_key: bool, admin_key: bool) -> list[str]:
    """The security schemes one of which a request to `path` must carry."""
    if path.startswith(REPOSITORY_PREFIX) and admin_key:
        return list(ADMIN_SCHEME)
    return list(SECURITY_SCHEMES) if api_key else []


def with_enums(spec: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """A copy of the OpenAPI with `model`, `dataset` and `class` as enums of what is served."""
    manifests = [m.manifest for m in registry.models.values() if m.manifest is not None]
    if not manifests:
        return spec
    models = sorted({*registry.ids(), *(m.family for m in manifests)})
    datasets = sorted({m.dataset for m in manifests})
    classes = sorted({name for m in manifests for name in m.class_names})
    enums = {"model": models, "dataset": datasets, "class": classes}
    spec = copy.deepcopy(spec)
    for path in ("/generate", "/sample"):
        for param in spec.get("paths", {}).get(path, {}).get("get", {}).get("parameters", []):
            if param["name"] in enums:
                param["schema"] = _with_enum(param["schema"], enums[param["name"]])
    body = spec.get("paths", {}).get("/v1/images", {}).get("post", {}).get("requestBody", {})
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    for name in ("model", "dataset"):
        if name in schema.get("properties", {}):
            schema["properties"][name] = _with_enum(schema["properties"][name], enums[name])
    _protocol_model_names(spec, registry.ids())
    return spec


def _protocol_model_names(spec: dict[str, Any], ids: list[str]) -> None:
    """The `{name}` of the protocol's /v2/models/... paths as an enum of the model ids."""
    for path, operations in spec.get("paths", {}).items():
        if not path.startswith("/v2/models/{name}"):
            continue
        for operation in operations.values():
            for param in operation.get("parameters", []):
                if param["in"] == "path" and param["name"] == "name":
                    param["schema"] = _with_enum(param["schema"], ids)


def _with_enum(schema: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """`{"type": "string", ...}` or `anyOf: [string, null]` -> the same with the string an enum."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [_with_enum(s, values) for s in schema["anyOf"]]}
    if schema.get("type") == "string":
        return {**schema, "enum": values}
    return schema
