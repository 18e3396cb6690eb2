"""A repository with damaged models beside a good one, a tight queue, graceful shutdown, bad settings.

The damaged copies are made from a real model: wrong sha256, a truncated ONNX file (sha updated,
so onnxruntime itself must refuse it), a manifest whose inputs contradict the graph, and a
manifest that is not JSON. The good model keeps serving; the others are reported with reasons.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagegen.contract.manifest import sha256_file
from tests.service.conftest import REPO, Server, copy_model, serving, start_server

BROKEN = ("broken-sha", "broken-truncated", "broken-mismatch", "broken-json")
SLOW = (
    "--max-delay-ms",
    "1500",
    "--max-batch",
    "64",
    "--queue-limit",
    "4",
    "--max-n",
    "4",
    "--max-items",
    "4",
    "--wait-alone",  # hold every request for the 1.5 s delay, so requests are reliably queued
)


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def damaged_dir(models_dir: Path, conditional: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("damaged-models")
    good = conditional["id"]
    copy_model(models_dir, good, root)
    sha = copy_model(models_dir, good, root, "broken-sha")
    _edit_manifest(sha, onnx={**conditional["manifest"]["onnx"], "sha256": "0" * 64})
    trunc = copy_model(models_dir, good, root, "broken-truncated")
    onnx_path = trunc / conditional["manifest"]["onnx"]["file"]
    onnx_path.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 3])
    _edit_manifest(trunc, onnx={**conditional["manifest"]["onnx"], "sha256": sha256_file(onnx_path)})
    mismatch = copy_model(models_dir, good, root, "broken-mismatch")
    latent = conditional["manifest"]["latent_dim"] + 3
    _edit_manifest(mismatch, latent_dim=latent, inputs={"z": [-1, latent], "label": [-1]})
    garbage = copy_model(models_dir, good, root, "broken-json")
    (garbage / "manifest.json").write_text("{not json")
    _tiny_unconditional(root / "tiny-unconditional")
    return root


def _tiny_unconditional(folder: Path) -> None:
    """A small real ONNX generator that takes only `z` (the repository may have no unconditional
    model): image = sigmoid(reshape(z @ W)), 1x8x8."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from imagegen.contract.manifest import Manifest

    weights = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32), "W"
    )
    shape = numpy_helper.from_array(np.array([-1, 1, 8, 8], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["z", "W"], ["flat"]),
            helper.make_node("Reshape", ["flat", "shape"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["image"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [weights, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / "1").mkdir(parents=True)
    onnx.save(model, folder / "1" / "model.onnx")
    Manifest(
        id=folder.name,
        family="gan",
        dataset="tiny",
        version=1,
        image={"channels": 1, "height": 8, "width": 8},
        latent_dim=4,
        num_classes=1,
        class_names=["all"],
        inputs={"z": [-1, 4]},
        outputs={"image": [-1, 1, 8, 8]},
        onnx={"file": "1/model.onnx", "sha256": sha256_file(folder / "1" / "model.onnx"), "opset": 17},
    ).write(folder)


@pytest.fixture(scope="module")
def degraded(damaged_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(damaged_dir, tmp_path_factory.mktemp("degraded"), *SLOW)
    yield srv
    srv.stop()


def test_good_model_serves_beside_broken_ones(degraded: Server, conditional: dict) -> None:
    ready = httpx.get(degraded.url + "/readyz")
    assert ready.status_code == 200
    states = ready.json()["models"]
    assert states[conditional["id"]] == "ready"
    assert all(states[b] == "failed" for b in BROKEN)
    listing = {m["id"]: m for m in httpx.get(degraded.url + "/v1/models").json()["models"]}
    assert "sha256" in listing["broken-sha"]["reason"]
    assert "onnxruntime" in listing["broken-truncated"]["reason"]
    assert "inputs" in listing["broken-mismatch"]["reason"] or "dims" in listing["broken-mismatch"]["reason"]
    assert "manifest" in listing["broken-json"]["reason"]
    metrics = httpx.get(degraded.url + "/metrics").text
    assert 'imagegen_model_ready{model="broken-sha"} 0.0' in metrics


def test_class_for_an_unconditional_model_is_refused(degraded: Server) -> None:
    url = degraded.url
    ok = httpx.get(url + "/sample", params={"model": "tiny-unconditional", "seed": 3, "format": "json"})
    assert ok.status_code == 200 and ok.json()["images"][0]["label"] is None
    for param in ("digit", "class"):
        r = httpx.get(url + "/generate", params={"model": "tiny-unconditional", param: "0"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "parameter_not_supported"
    r = httpx.post(url + "/v1/images", json={"model": "tiny-unconditional", "labels": [0]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "parameter_not_supported"


def test_failed_model_answers_503_with_reason(degraded: Server) -> None:
    r = httpx.get(degraded.url + "/sample", params={"model": "broken-sha", "seed": 1})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "model_unavailable" and "sha256" in err["reason"]


def test_a_model_asked_for_while_the_repository_is_read_gets_503_never_404(
    models_dir: Path, conditional: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """At start-up the scan hashes every ONNX file before any model is known; a 2 GiB (sparse)
    file holds it open for seconds. A model in the repository is not "unknown" meanwhile: every
    answer until it serves is 503 with Retry-After (still reading, then still loading), on our API
    and the protocol's, never a 404."""
    root = tmp_path_factory.mktemp("slow-scan")
    good = conditional["id"]
    copy_model(models_dir, good, root)
    big = copy_model(models_dir, good, root, "big-onnx")
    with (big / conditional["manifest"]["onnx"]["file"]).open("r+b") as onnx_file:
        onnx_file.truncate(2 << 30)
    asks = {
        "/generate": lambda url: httpx.get(url + "/generate", params={"model": good, "digit": 3}, timeout=30),
        "/v1/models/{id}": lambda url: httpx.get(f"{url}/v1/models/{good}", timeout=30),
        "/v2/models/{id}/ready": lambda url: httpx.get(f"{url}/v2/models/{good}/ready", timeout=30),
    }
    answers: dict[str, list[httpx.Response]] = {name: [] for name in asks}
    with serving(root, tmp_path_factory.mktemp("slow-scan-logs"), wait_ready=False) as srv:
        deadline = time.monotonic() + 120
        served = False
        while not served:
            assert time.monotonic() < deadline, "the good model never served"
            for name, ask in asks.items():
                answers[name].append(ask(srv.url))
            served = answers["/generate"][-1].status_code == 200
        states = httpx.get(srv.url + "/readyz", timeout=30).json()["models"]
    assert states == {good: "ready", "big-onnx": "failed"}  # the big file's sha256 does not match
    for name in asks:
        assert 404 not in {r.status_code for r in answers[name]}, name
    early = [r for name in asks for r in answers[name] if r.status_code == 503]
    assert early, "no request landed during the scan: the test did not exercise the window"
    assert all(r.headers.get("retry-after") == "1" for r in early if "/v2/" not in str(r.url))
    assert {r.json()["error"]["code"] for r in early if "/v2/" not in str(r.url)} == {"model_unavailable"}


def _queue_depth(url: str, model: str) -> float:
    # The key of the keyed server below (/metrics needs it there); a server without one ignores it.
    text = httpx.get(url + "/metrics", headers={"X-API-Key": "s3cret"}).text
    match = re.search(rf'^imagegen_queue_depth{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _wait_for_depth(url: str, model: str, depth: float) -> None:
    deadline = time.monotonic() + 30
    while _queue_depth(url, model) < depth:
        assert time.monotonic() < deadline, "requests never reached the queue"
        time.sleep(0.02)


def test_full_queue_answers_503_with_retry_after(degraded: Server, conditional: dict) -> None:
    results: list[int] = []
    holder = threading.Thread(
        target=lambda: results.append(
            httpx.get(
                degraded.url + "/sample", params={"model": conditional["id"], "seed": 1, "n": 4}, timeout=60
            ).status_code
        )
    )
    holder.start()
    _wait_for_depth(degraded.url, conditional["id"], 4)  # the queue (limit 4) is now full
    r = httpx.get(degraded.url + "/sample", params={"model": conditional["id"], "seed": 2})
    holder.join()
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "overloaded"
    assert results == [200]


def test_sigterm_finishes_in_flight_requests_then_exits_0(
    damaged_dir: Path, conditional: dict, tmp_path: Path
) -> None:
    # This server also checks an API key and writes JSON log lines.
    srv = start_server(
        damaged_dir, tmp_path, *SLOW, env={"IMAGEGEN_API_KEY": "s3cret", "IMAGEGEN_LOG_FORMAT": "json"}
    )
    try:
        _sigterm_with_requests_in_flight(srv, conditional)
    finally:
        srv.stop()  # no-op once the test has stopped it; a failed test must not leak the server


def _sigterm_with_requests_in_flight(srv: Server, conditional: dict) -> None:
    params = {"model": conditional["id"], "seed": 1}
    denied = httpx.get(srv.url + "/sample", params=params)
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
    assert httpx.get(srv.url + "/healthz").status_code == 200  # probes stay open
    statuses: list[int] = []

    def call(seed: int) -> None:
        headers = {"Authorization": "Bearer s3cret"} if seed % 2 else {"X-API-Key": "s3cret"}
        r = httpx.get(srv.url + "/sample", params={**params, "seed": seed}, headers=headers, timeout=60)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=call, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    _wait_for_depth(srv.url, conditional["id"], 3)  # all three wait in the batcher (1.5 s delay)
    assert srv.stop() == 0
    for t in threads:
        t.join()
    assert statuses == [200, 200, 200]
    access = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    assert any(
        e.get("logger") == "imagegen.access" and e.get("status") == 200 and e.get("request_id")
        for e in access
    )


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--max-batch", "0"], {}, "--max-batch:"),  # the flag the user typed, not its variable
        (["--port", "70000"], {}, "--port:"),
        ([], {"IMAGEGEN_PROVIDER": "tpu"}, "IMAGEGEN_PROVIDER"),
        ([], {"IMAGEGEN_MAX_N": "100", "IMAGEGEN_QUEUE_LIMIT": "10"}, "max_n"),
        ([], {"IMAGEGEN_LOG_FORMAT": "xml"}, "IMAGEGEN_LOG_FORMAT"),
    ],
)
def test_invalid_settings_stop_start_up_with_one_message(args: list[str], env: dict, needle: str) -> None:
    cmd = [sys.executable, "-m", "imagegen.cli", "serve", "--port", "0", *args]
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env={**_clean_env(), **env}
    )
    assert done.returncode == 2
    assert done.stderr.startswith("imagegen serve: invalid settings") and needle in done.stderr
    assert "Traceback" not in done.stderr


def test_provider_cuda_without_a_gpu_fails_loudly() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    done = subprocess.run(
        [sys.executable, "-m", "imagegen.cli", "serve", "--provider", "cuda"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert done.returncode == 2 and "provider=cuda" in done.stderr


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
