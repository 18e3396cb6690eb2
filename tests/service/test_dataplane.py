"""One data plane under every entry point (issue 24): what used to drift between the copies of the
request path. Against real servers on loopback with the real models:

- a /v2 client that disconnects before its run never has its job run (as /sample's, in
  test_hardening_server.py);
- every route is counted in imagegen_requests_total under its own name (no `other` for a known
  route);
- gRPC calls get the same metrics and access log as HTTP's;
- the VAE encoders are evicted with their model version: reloads leave no session behind.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import Server, address, free_port, model_metric, repository_of, serving, until

SMALL = "label-mnist"  # the smallest model: quick to load and to run
VAE = "vae-mnist"  # a VAE with its exported encoder


@pytest.fixture(scope="module")
def repo(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repository_of(models_dir, tmp_path_factory, "dataplane-repo", SMALL, VAE)


def test_the_job_of_a_v2_client_that_left_is_never_run(repo: Path, tmp_path: Path) -> None:
    """A /v2 infer waits 1.5 s for its batch to fill; its client disconnects meanwhile. The job is
    skipped when the run is formed: no image of it is counted. A client that stays is counted."""
    env = {"IMAGEGEN_WAIT_ALONE": "1", "IMAGEGEN_MAX_DELAY_MS": "1500"}
    body = json.dumps({"inputs": [{"name": "label", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]}]})
    with serving(repo, tmp_path, "--no-access-log", env=env) as srv:
        with socket.create_connection(address(srv), timeout=10) as sock:
            head = (
                f"POST /v2/models/{SMALL}/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body.encode())
            until("the job queued", lambda: model_metric(srv.url, "imagegen_queue_depth", SMALL) == 3)
        until("the queue emptied", lambda: model_metric(srv.url, "imagegen_queue_depth", SMALL) == 0)
        time.sleep(0.5)  # a run, had one been started, would have finished by now
        assert model_metric(srv.url, "imagegen_images_total", SMALL) == 0

        r = httpx.post(f"{srv.url}/v2/models/{SMALL}/infer", content=body, timeout=30)
        assert r.status_code == 200, r.text
        assert model_metric(srv.url, "imagegen_images_total", SMALL) == 3


def _png(size: int = 28) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((size, size), 128, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _route_labels(url: str) -> set[str]:
    text = httpx.get(url + "/metrics", timeout=30).text
    return set(re.findall(r'^imagegen_requests_total\{[^}]*route="([^"]*)"', text, re.MULTILINE))


def test_every_route_is_counted_under_its_own_name(repo: Path, tmp_path: Path) -> None:
    infer = {"inputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [4]}]}
    requests = {
        "/generate": ("GET", f"/generate?model={SMALL}&digit=3", None),
        "/sample": ("GET", f"/sample?model={SMALL}&seed=1", None),
        "/v1/images": ("POST", "/v1/images", {"json": {"model": SMALL, "seeds": [1, 2]}}),
        "/interpolate": ("GET", f"/interpolate?model={VAE}&seed_a=1&seed_b=2&steps=3", None),
        "/v1/reconstruct": (
            "POST",
            f"/v1/reconstruct?model={VAE}&digit=1",
            {"content": _png(), "headers": {"content-type": "image/png"}},
        ),
        "/v1/models": ("GET", "/v1/models", None),
        "/v1/models/{model_id}": ("GET", f"/v1/models/{SMALL}", None),
        "/healthz": ("GET", "/healthz", None),
        "/v2/models/{name}/infer": ("POST", f"/v2/models/{SMALL}/infer", {"json": infer}),
        "/v2/models/{name}/versions/{version}/infer": (
            "POST",
            f"/v2/models/{SMALL}/versions/{_version(repo, SMALL)}/infer",
            {"json": infer},
        ),
        "/v2/models/{name}": ("GET", f"/v2/models/{SMALL}", None),
        "/v2/models/{name}/ready": ("GET", f"/v2/models/{SMALL}/ready", None),
    }
    with serving(repo, tmp_path, "--no-access-log") as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        for label, (method, path, kwargs) in requests.items():
            r = c.request(method, path, **(kwargs or {}))
            assert r.status_code == 200, (label, r.status_code, r.text[:300])
        labels = _route_labels(srv.url)
        assert set(requests) <= labels
        assert "other" not in labels
        c.get("/no/such/route")  # an unknown path is the one thing counted as `other`
        assert "other" in _route_labels(srv.url)


def _version(repo: Path, model: str) -> int:
    return int(json.loads((repo / model / "manifest.json").read_text())["version"])


@pytest.fixture(scope="module")
def grpc_server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    pytest.importorskip("grpc")
    port = free_port()
    with serving(repo, tmp_path_factory.mktemp("dataplane-grpc"), "--grpc-port", str(port)) as srv:
        yield srv, port


def test_grpc_calls_get_the_metrics_and_access_log_of_http(grpc_server: tuple[Server, int]) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    srv, port = grpc_server
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    label = grpcclient.InferInput("label", [2], "INT64")
    label.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
    result = client.infer(SMALL, [label])
    assert result.as_numpy("image").shape[0] == 2
    assert client.is_server_live()
    text = httpx.get(srv.url + "/metrics", timeout=30).text
    infer = 'route="/inference.GRPCInferenceService/ModelInfer",status="200"'
    assert re.search(rf'^imagegen_requests_total\{{model="{SMALL}",{infer}\}} 1\.0$', text, re.MULTILINE)
    assert 'route="/inference.GRPCInferenceService/ServerLive",status="200"' in text
    until("the access log line", lambda: "GRPC /inference.GRPCInferenceService/ModelInfer 200" in srv.log())
    assert f"model={SMALL}" in next(
        line for line in srv.log().splitlines() if "GRPC /inference.GRPCInferenceService/ModelInfer" in line
    )


def test_reloads_leave_no_encoder_session_behind(repo: Path) -> None:
    """In-process, over the real app: each reconstruct loads its version's encoder; each reload
    retires the old version and evicts its encoder, so at most one session stays per model."""
    from service.app import create_app
    from service.settings import Settings

    async def scenario() -> list[int]:
        app = create_app(Settings(models_dir=repo, access_log=False, graceful_timeout=10))
        ctx = app.state.ctx
        counts = []
        async with app.router.lifespan_context(app):
            while not ctx.registry.loaded:
                await asyncio.sleep(0.05)
            for _ in range(3):
                served = ctx.registry.get(VAE)
                await ctx.plane.off_loop(ctx.encoders.get, served.serial, served.manifest)
                del served  # a request lets go of its version once answered
                await ctx.lifecycle.load_model(VAE)  # swapped in; the old version drains
                for _ in range(200):
                    if len(ctx.encoders) == 0:
                        break
                    await asyncio.sleep(0.05)
                counts.append(len(ctx.encoders))
        return counts

    assert asyncio.run(scenario()) == [0, 0, 0]
