"""Schema-driven fuzzing (issue 16, item 8): schemathesis against the live server's OpenAPI.

The OpenAPI lists the model ids and class names as enums, so generated requests reach image
generation, not only validation. Every response must: not be a 5xx; have a status the OpenAPI
declares for its operation; match the declared schema and content type. Bounded: up to 150
examples per operation, about a minute, over 1,000 requests in all (checked at the end).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from tests.service.conftest import Server, start_server  # noqa: E402

EXAMPLES_PER_OPERATION = 150
MIN_REQUESTS = 1000
# The Open Inference Protocol's /v2 routes are fuzzed too: their errors are declared in the
# protocol's {"error": message} shape, the probes as a status with no body, and `{name}` is an
# enum of the model ids so requests reach inference.
# positive_data_acceptance expects every schema-valid request to succeed; ours refuses some with a
# 4xx the schema cannot express (seeds or labels required, n x scale within the output bound).


KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def keyed_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """With a key, as the OpenAPI declares one: schemathesis also checks that a request without it
    is refused. The fuzzer's wrong keys would soon reach the per-client limit of failed key checks
    (its 429 is declared and checked in test_exposure.py), so the limit is off here."""
    env = {"IMAGEGEN_API_KEY": KEY, "IMAGEGEN_KEY_FAILURE_LIMIT": "0"}
    srv = start_server(models_dir, tmp_path_factory.mktemp("fuzz"), "--no-access-log", env=env)
    yield srv
    srv.stop()


@pytest.mark.slow
def test_every_operation_conforms_to_the_openapi(keyed_server: Server) -> None:
    """Each operation of /openapi.json, fuzzed in turn (schemathesis' pytest plugin does not load
    under pytest 9, so hypothesis drives its strategies directly); all failures are reported."""
    schema = schemathesis.openapi.from_url(keyed_server.url + "/openapi.json", headers=AUTH)
    statuses: list[int] = []
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same requests every run: a failure reproduces
            database=None,
        )
        def fuzz(case: Any) -> None:
            response = case.call(headers=AUTH, timeout=60)
            statuses.append(response.status_code)
            case.validate_response(response, headers=AUTH, excluded_checks=[positive_data_acceptance])

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failure, not only the first
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    print(f"{len(statuses)} requests")
    assert len(statuses) >= MIN_REQUESTS, f"only {len(statuses)} requests"
    assert not [s for s in statuses if s >= 500]


def test_security_is_declared_only_when_a_key_is_configured(client: Any, keyed_server: Server) -> None:
    open_spec = client.get("/openapi.json").json()  # the session server: no key
    assert "securitySchemes" not in open_spec.get("components", {})
    assert not [op for ops in open_spec["paths"].values() for op in ops.values() if "security" in op]
    keyed = httpx.get(keyed_server.url + "/openapi.json", headers=AUTH, timeout=30).json()
    assert set(keyed["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert keyed["paths"]["/sample"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in keyed["paths"]["/v2/health/live"]["get"]  # probes need no key


def test_the_admin_key_is_declared_on_the_repository_routes_alone() -> None:
    from service.http.routers.docs import with_security

    spec = {
        "paths": {
            "/v2/repository/index": {"post": {"responses": {"401": {}}}},
            "/v2": {"get": {"responses": {"401": {}}}},
        }
    }
    admin_only = with_security(spec, api_key=False, admin_key=True)
    assert set(admin_only["components"]["securitySchemes"]) == {"adminKey"}
    assert admin_only["paths"]["/v2/repository/index"]["post"]["security"] == [{"adminKey": []}]
    assert "security" not in admin_only["paths"]["/v2"]["get"]
    assert with_security(spec, api_key=False) == spec


def test_v2_routes_declare_the_protocol_error_shape_and_bodyless_probes(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/{name}/ready"):
        assert "content" not in paths[path]["get"]["responses"]["200"], path
    ready = paths["/v2/health/ready"]["get"]["responses"]["503"]["content"]["application/json"]
    assert ready["schema"]["$ref"].endswith("/ProtocolErrorBody")
    infer = paths["/v2/models/{name}/infer"]["post"]["responses"]
    assert {"400", "401", "404", "413", "503"} <= set(infer) and "422" not in infer
    assert "version" not in [p["name"] for p in paths["/v2/models/{name}/infer"]["post"]["parameters"]]
    assert "403" in paths["/v2/repository/index"]["post"]["responses"]


# -- hostile inputs not already in test_limits.py / test_errors.py --------------------------------

TRAVERSAL = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "gan-mnist/../../x", "a\x00b"]


@pytest.mark.parametrize("model", TRAVERSAL)
def test_traversal_and_null_bytes_in_model_ids_are_unknown_models(client: Any, model: str) -> None:
    for r in (
        client.get("/sample", params={"model": model}),
        client.post("/v1/images", json={"model": model, "seeds": [1]}),
    ):
        assert r.status_code in (404, 422), (model, r.status_code, r.text[:200])
        assert "root:" not in r.text and r.json()["error"]["code"]
    r = client.get("/v1/models/" + quote(model, safe=""))
    assert r.status_code in (404, 422) and "root:" not in r.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gan-mnist", "seeds": [NaN]}',
        b'{"model": "gan-mnist", "seeds": [Infinity]}',
        b'{"model": "gan-mnist", "seeds": [-Infinity], "scale": NaN}',
        b'{"model": "gan-mnist", "seeds": [1e999]}',
        b'{"model": "gan-mnist\\u0000", "seeds": [1]}',
        b'{"model": "gan-mnist", "model": "label-mnist", "seeds": [1], "surprise": {"a": [1]}}',
        '{"model": "\u0433\u0430\u043d", "seeds": [1]}'.encode(),
    ],
)
def test_non_finite_numbers_duplicates_and_unicode_in_json_are_4xx(client: Any, body: bytes) -> None:
    r = client.post("/v1/images", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text[:200])
    assert r.json()["error"]["code"]
