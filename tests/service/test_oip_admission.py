"""The Open Inference Protocol and the latent tools go through the same admission as the image
routes (service/dataplane/admission.py), and the protocol's body reader has the body timeout.

One real server on loopback whose batches wait 3 s to fill and whose server-wide bound is 8
images: a request of 8 images to one model holds the whole bound while it waits, so any other
request, to any model, must be refused by admission (503 with Retry-After and, on our routes,
`retry_after_ms`). The other models' batchers are empty, so without admission these requests
would be served: each test fails if its route skips admission.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import Server, free_port, repository_of, start_server

GAN = "gan-mnist"
LABEL = "label-mnist"
VAE = "vae-mnist"
BOUND = 8  # images in flight over all models (and per model)


@pytest.fixture(scope="module")
def repo(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repository_of(models_dir, tmp_path_factory, "oip-admission-repo", GAN, LABEL, VAE)


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(repo: Path, grpc_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    bound = str(BOUND)
    env = {
        "IMAGEGEN_QUEUE_LIMIT": bound,
        "IMAGEGEN_TOTAL_QUEUE_LIMIT": bound,
        "IMAGEGEN_MAX_ITEMS": bound,
        "IMAGEGEN_MAX_N": bound,
        # Every job waits 3 s for a batch of 1024 images to fill: time to be refused meanwhile.
        "IMAGEGEN_WAIT_ALONE": "1",
        "IMAGEGEN_MAX_DELAY_MS": "3000",
        "IMAGEGEN_MAX_BATCH": "1024",
        "IMAGEGEN_BODY_TIMEOUT": "1",
        "IMAGEGEN_GRPC_PORT": str(grpc_port),
    }
    srv = start_server(repo, tmp_path_factory.mktemp("oip-admission"), "--no-access-log", env=env)
    yield srv
    srv.stop()


def _queued(url: str, model: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    match = re.search(rf'^imagegen_queue_depth{{model="{model}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _infer(url: str, model: str, seeds: list[int]) -> httpx.Response:
    body = {"inputs": [], "parameters": {"seeds": seeds}}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)


@contextlib.contextmanager
def _bound_held(url: str, model: str, via: str) -> Iterator[None]:
    """While inside: a request of BOUND images to `model` (through /sample or the protocol) waits
    in its batcher, holding the server-wide bound; afterwards it has been answered 200."""
    answers: list[httpx.Response] = []

    def send() -> None:
        if via == "oip":
            answers.append(_infer(url, model, list(range(BOUND))))
        else:
            params = {"model": model, "n": BOUND, "seed": 1}
            answers.append(httpx.get(url + "/sample", params=params, timeout=30))

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 10
    while _queued(url, model) < BOUND and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _queued(url, model) == BOUND, "the holding request should be queued"
    try:
        yield
    finally:
        thread.join(30)
    assert answers and answers[0].status_code == 200, answers and answers[0].text[:300]


def _protocol_overloaded(r: httpx.Response) -> str:
    assert r.status_code == 503, (r.status_code, r.text[:300])
    assert re.fullmatch(r"[1-9][0-9]*", r.headers["retry-after"])
    message = r.json()["error"]
    assert isinstance(message, str) and "overloaded" in message and "in flight" in message
    return message


def _our_overloaded(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text[:300])
    assert re.fullmatch(r"[1-9][0-9]*", r.headers["retry-after"])
    error = r.json()["error"]
    assert error["code"] == "overloaded" and error["retry_after_ms"] > 0, error


def test_oip_http_inference_is_refused_by_admission_with_retry_after(server: Server) -> None:
    with _bound_held(server.url, GAN, via="sample"):
        _protocol_overloaded(_infer(server.url, LABEL, [1]))
    assert _infer(server.url, LABEL, [1]).status_code == 200  # once the bound is free again


def test_oip_inference_holds_admission_for_our_routes(server: Server) -> None:
    with _bound_held(server.url, GAN, via="oip"):
        _our_overloaded(httpx.get(server.url + "/sample", params={"model": LABEL, "seed": 1}, timeout=30))


def test_oip_grpc_inference_is_unavailable_with_a_retry_after_trailer(server: Server, grpc_port: int) -> None:
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("tritonclient.grpc")
    # tritonclient's stubs, as test_oip_grpc.py: the protocol's messages may be registered once
    # per process, and a client's are what a client uses.
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=LABEL)
    request.parameters["seeds"].string_param = "1"
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with _bound_held(server.url, GAN, via="sample"):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request, timeout=30)
        error = caught.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "overloaded" in error.details()
        trailers = dict(error.trailing_metadata() or ())
        assert re.fullmatch(r"[1-9][0-9]*", trailers["retry-after"])


def test_interpolate_is_refused_by_admission(server: Server) -> None:
    params = {"model": GAN, "seed_a": 1, "seed_b": 2, "steps": 2}
    with _bound_held(server.url, LABEL, via="oip"):
        _our_overloaded(httpx.get(server.url + "/interpolate", params=params, timeout=30))


def test_reconstruct_is_refused_by_admission(server: Server) -> None:
    image = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image, format="PNG")
    with _bound_held(server.url, LABEL, via="oip"):
        r = httpx.post(
            server.url + "/v1/reconstruct",
            params={"model": VAE, "class": "3"},
            content=image.getvalue(),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        _our_overloaded(r)


def test_oip_body_that_does_not_arrive_in_time_is_408_and_the_connection_closes(server: Server) -> None:
    parts = urlsplit(server.url)
    header = json.dumps({"inputs": [], "parameters": {"seeds": [1]}}).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(
            f"POST /v2/models/{LABEL}/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(header)}\r\n\r\n".encode()
            + header[:5]  # the rest never comes
        )
        received = _read_until_closed(conn)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert b"connection: close" in head.lower()
    assert isinstance(json.loads(body)["error"], str)


def _read_until_closed(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
