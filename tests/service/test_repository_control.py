"""Model repository control (Triton's repository API, and SIGHUP) against the real server on
loopback, through tritonclient.http's own repository calls: the admin key, the index, a new
version swapped in while clients keep sending requests (none fails; those sent after the load
see the new version), unload after draining, a broken version refused while the old one keeps
serving, and SIGHUP picking up new, changed and removed model folders.

The server holds every request in its batcher for `max_delay_ms` (`--wait-alone`), so a request
seen queued in /metrics is certainly in flight when a load or an unload starts. A request that has
been admitted but has not yet reached the batcher is made with `Expect: 100-continue` (as curl
sends large bodies): the server asks for the body only once the route has resolved the model, and
the client holds the body back until the load or unload has happened.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import Server, copy_model, start_server

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

ADMIN_KEY = "admin-s3cret"
BEARER = {"Authorization": f"Bearer {ADMIN_KEY}"}
API_KEY = "api-s3cret"
GAN, LABEL = "gan-mnist", "label-mnist"
HOLD_MS = "200"  # every request waits this long in its batcher (see the module docstring)
WAIT_S = 90.0  # the most any wait for the server here lasts before the test fails


# -- servers and clients --------------------------------------------------------------------------


def small_repo(models_dir: Path, root: Path, *model_ids: str) -> Path:
    for model_id in model_ids:
        if not (models_dir / model_id).is_dir():
            pytest.skip(f"{model_id} is not in the model repository")
        shutil.copytree(models_dir / model_id, root / model_id)
    return root


@pytest.fixture(scope="module")
def repo(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_repo(models_dir, tmp_path_factory.mktemp("control-repo"), GAN, LABEL)


@pytest.fixture(scope="module")
def admin(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = ("--max-delay-ms", HOLD_MS, "--wait-alone")
    srv = start_server(repo, tmp_path_factory.mktemp("admin"), *extra, env={"IMAGEGEN_ADMIN_KEY": ADMIN_KEY})
    yield srv
    srv.stop()


def triton_client(server: Server) -> Any:
    return httpclient.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120)


@pytest.fixture(scope="module")
def triton(admin: Server) -> Iterator[Any]:
    client = triton_client(admin)
    yield client
    client.close()


def index(server: Server) -> dict[str, dict[str, str]]:
    r = httpx.post(server.url + "/v2/repository/index", headers=BEARER, timeout=30)
    assert r.status_code == 200, r.text
    return {entry["name"]: entry for entry in r.json()}


def sample(server: Server, model_id: str, seed: int = 1, n: int = 1) -> httpx.Response:
    return httpx.get(server.url + "/sample", params={"model": model_id, "seed": seed, "n": n}, timeout=60)


def served_version(server: Server, model_id: str) -> int:
    r = sample(server, model_id)
    assert r.status_code == 200, r.text
    return int(r.headers["x-model-version"])


def metric(server: Server, name: str, model_id: str) -> float | None:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(rf'^{name}\{{model="{re.escape(model_id)}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


def wait_until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for: {what}")
        time.sleep(0.05)


def wait_for_log(server: Server, line: str) -> None:
    wait_until(f"log line {line!r}", lambda: line in server.log())


# -- the model folder -----------------------------------------------------------------------------


def add_version(repo: Path, model_id: str, broken: str | None = None) -> int:
    """Copy the model's current version folder to the next number and point the manifest at it.
    broken="graph": the ONNX file is garbage (its sha256 in the manifest, so only ONNX Runtime can
    tell); broken="sha256": the manifest's sha256 does not match the file."""
    folder = repo / model_id
    manifest = json.loads((folder / "manifest.json").read_text())
    old, new = manifest["version"], manifest["version"] + 1
    shutil.copytree(folder / str(old), folder / str(new))
    onnx = folder / str(new) / "model.onnx"
    if broken == "graph":
        onnx.write_bytes(b"this is not an ONNX graph\n" * 64)
    manifest["version"] = new
    manifest["onnx"]["file"] = f"{new}/model.onnx"
    manifest["onnx"]["sha256"] = hashlib.sha256(onnx.read_bytes()).hexdigest()
    if broken == "sha256":
        manifest["onnx"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return new


# -- clients that keep sending requests -------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    after: bool  # sent once the load or unload call had returned
    status: int
    detail: str  # the model version served, or the error message


def via_http(server: Server, model_id: str) -> Callable[[int], tuple[int, str]]:
    client = httpx.Client(base_url=server.url, timeout=60)

    def send(seed: int) -> tuple[int, str]:
        r = client.get("/sample", params={"model": model_id, "seed": seed})
        return r.status_code, r.headers.get("x-model-version", r.text)

    return send


def via_oip(server: Server, model_id: str) -> Callable[[int], tuple[int, str]]:
    clients: list[Any] = []  # made in the sending thread: tritonclient.http's gevent pool stays in its own

    def send(seed: int) -> tuple[int, str]:
        if not clients:
            clients.append(triton_client(server))
        try:
            result = clients[0].infer(model_id, [], parameters={"seeds": [seed]})
        except InferenceServerException as exc:
            return int(exc.status() or 0), str(exc.message())
        return 200, str(result.get_response()["model_version"])

    return send


@dataclass
class Clients:
    """Threads that send requests one after another until stopped, each outcome recorded."""

    senders: list[Callable[[int], tuple[int, str]]]
    outcomes: list[Outcome] = field(default_factory=list)
    changed: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Clients:
        for i, send in enumerate(self.senders):
            self.threads.append(threading.Thread(target=self._loop, args=(send, 1000 * i), daemon=True))
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=WAIT_S)

    def _loop(self, send: Callable[[int], tuple[int, str]], seed: int) -> None:
        while not self.stopping.is_set():
            after = self.changed.is_set()
            try:
                status, detail = send(seed)
            except httpx.TransportError as exc:  # a dropped connection is a failure too
                status, detail = 0, repr(exc)
            self.outcomes.append(Outcome(after, status, detail))
            seed += 1

    def wait_for(self, count: int, *, after: bool) -> None:
        wait_until(
            f"{count} requests {'after' if after else 'before'} the change",
            lambda: sum(o.after == after for o in self.outcomes) >= count,
        )


def queued_request(server: Server, model_id: str) -> tuple[threading.Thread, list[httpx.Response]]:
    """A /sample request of 8 images, returned once /metrics shows it waiting in the batcher (sent
    again, up to 5 times, when it was answered before /metrics saw it)."""
    for _ in range(5):
        answers: list[httpx.Response] = []
        thread = threading.Thread(target=_append_sample, args=(answers, server, model_id))
        thread.start()
        while not answers:
            if (metric(server, "imagegen_queue_depth", model_id) or 0) >= 8:
                return thread, answers
        thread.join()
    pytest.fail("never saw the request queued in /metrics")


def _append_sample(answers: list[httpx.Response], server: Server, model_id: str) -> None:
    answers.append(sample(server, model_id, seed=5, n=8))


def _unload(server: Server, model_id: str) -> None:
    client = triton_client(server)  # its own: tritonclient.http's gevent pool stays in one thread
    client.unload_model(model_id, headers=BEARER)
    client.close()


class HeldInfer:
    """An OIP infer request (seeds 3) sent with `Expect: 100-continue`: created once the server has
    resolved the model and asked for the body; `finish()` sends the body and reads the answer."""

    def __init__(self, server: Server, model_id: str) -> None:
        self.body = json.dumps({"inputs": [], "parameters": {"seeds": [3]}}).encode()
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
        head = (
            f"POST /v2/models/{model_id}/infer HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        self.buffer = b""
        interim = self._read_head()
        assert interim.startswith(b"HTTP/1.1 100 "), interim

    def _read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed after {self.buffer!r}"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    def finish(self) -> tuple[int, dict[str, Any]]:
        """The status and JSON body of the answer."""
        self.sock.sendall(self.body)
        head = self._read_head()
        status = int(head.split(b" ", 2)[1])
        declared = re.search(rb"(?im)^content-length: *(\d+)", head)
        assert declared is not None, head
        length = int(declared.group(1))
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed mid-body"
            self.buffer += chunk
        self.sock.close()
        return status, json.loads(self.buffer[:length])


# -- access -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disabled(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No admin key; an API key, so the order of the checks shows."""
    root = small_repo(models_dir, tmp_path_factory.mktemp("disabled-repo"), GAN)
    srv = start_server(root, tmp_path_factory.mktemp("disabled"), env={"IMAGEGEN_API_KEY": API_KEY})
    yield srv
    srv.stop()


ROUTES = ["/v2/repository/index", f"/v2/repository/models/{GAN}/load", f"/v2/repository/models/{GAN}/unload"]


def test_without_an_admin_key_configured_the_routes_are_disabled(disabled: Server) -> None:
    for path in ROUTES:
        r = httpx.post(disabled.url + path, headers={"X-API-Key": API_KEY}, timeout=30)
        assert r.status_code == 403, (path, r.text)
        assert "IMAGEGEN_ADMIN_KEY" in r.json()["error"]  # the protocol's shape: a string
        anonymous = httpx.post(disabled.url + path, timeout=30)
        assert anonymous.status_code == 401, (path, anonymous.text)
    client = triton_client(disabled)
    with pytest.raises(InferenceServerException) as refused:
        client.load_model(GAN, headers={"X-API-Key": API_KEY})
    assert refused.value.status() == "403"
    assert sample_with_key(disabled).status_code == 200  # nothing was unloaded


def sample_with_key(server: Server) -> httpx.Response:
    params = {"model": GAN, "seed": 1}
    return httpx.get(server.url + "/sample", params=params, headers={"X-API-Key": API_KEY}, timeout=60)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer admin-s3creu"},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"X-API-Key": ADMIN_KEY},
    ],
)
def test_a_missing_or_wrong_admin_key_is_refused(admin: Server, headers: dict[str, str]) -> None:
    for path in ROUTES:
        r = httpx.post(admin.url + path, headers=headers, timeout=30)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "admin key" in r.json()["error"]
    assert admin.process.poll() is None and served_version(admin, GAN) >= 1


# -- index, load, unload ----------------------------------------------------------------------------


def test_the_index_lists_every_model_with_its_state_and_version(
    admin: Server, triton: Any, repo: Path
) -> None:
    listed = {entry["name"]: entry for entry in triton.get_model_repository_index(headers=BEARER)}
    assert set(listed) >= {GAN, LABEL}
    for model_id in (GAN, LABEL):
        version = json.loads((repo / model_id / "manifest.json").read_text())["version"]
        assert listed[model_id] == {"name": model_id, "version": str(version), "state": "READY", "reason": ""}
    only_ready = httpx.post(admin.url + "/v2/repository/index", json={"ready": True}, headers=BEARER)
    assert {e["state"] for e in only_ready.json()} == {"READY"}
    bad = httpx.post(admin.url + "/v2/repository/index", json={"readdy": True}, headers=BEARER)
    assert bad.status_code == 400 and "allowed: ['ready']" in bad.json()["error"]


def test_loading_a_new_version_swaps_it_in_while_requests_flow(
    admin: Server, triton: Any, repo: Path
) -> None:
    old = served_version(admin, GAN)
    new = add_version(repo, GAN)
    with Clients([via_http(admin, GAN), via_oip(admin, GAN)]) as clients:
        clients.wait_for(4, after=False)
        held = HeldInfer(admin, GAN)  # admitted, its body not sent yet
        in_flight, answers = queued_request(admin, GAN)  # waiting in the batcher
        triton.load_model(GAN, headers=BEARER)
        clients.changed.set()
        clients.wait_for(6, after=True)
        in_flight.join(WAIT_S)
        status, held_answer = held.finish()
    failures = [o for o in clients.outcomes if o.status != 200]
    assert not failures, failures[:5]
    assert answers[0].status_code == 200 and answers[0].headers["x-model-version"] == str(old)
    assert status == 200 and held_answer["model_version"] == str(old), held_answer
    assert {o.detail for o in clients.outcomes if not o.after} <= {str(old), str(new)}
    assert {o.detail for o in clients.outcomes if o.after} == {str(new)}
    assert index(admin)[GAN]["version"] == str(new)
    assert triton.get_model_metadata(GAN)["versions"] == [str(new)]
    assert metric(admin, "imagegen_model_ready", GAN) == 1.0
    wait_for_log(admin, f"model {GAN}: version {new} swapped in, version {old} draining")
    wait_for_log(admin, f"model {GAN} version {old} drained")


@pytest.mark.parametrize("broken", ["graph", "sha256"])
def test_a_broken_version_fails_to_load_and_the_old_one_keeps_serving(
    admin: Server, triton: Any, repo: Path, broken: str
) -> None:
    old = served_version(admin, GAN)
    manifest = (repo / GAN / "manifest.json").read_text()
    new = add_version(repo, GAN, broken=broken)
    try:
        with pytest.raises(InferenceServerException) as failed:
            triton.load_model(GAN, headers=BEARER)
        assert failed.value.status() == "400"
        message = failed.value.message()
        assert message.startswith(f"failed to load model {GAN!r}: ")
        assert ("onnxruntime cannot load" if broken == "graph" else "sha256 mismatch") in message
        assert message.endswith(f"version {old} keeps serving")
        assert served_version(admin, GAN) == old
        assert index(admin)[GAN] == {"name": GAN, "version": str(old), "state": "READY", "reason": ""}
        assert metric(admin, "imagegen_model_ready", GAN) == 1.0
    finally:
        (repo / GAN / "manifest.json").write_text(manifest)
        shutil.rmtree(repo / GAN / str(new))


def test_unload_drains_then_the_model_is_unavailable_until_loaded_again(admin: Server, triton: Any) -> None:
    version = served_version(admin, LABEL)
    with Clients([via_http(admin, LABEL), via_oip(admin, LABEL)]) as clients:
        clients.wait_for(4, after=False)
        held = HeldInfer(admin, LABEL)  # admitted, its body not sent yet
        in_flight, answers = queued_request(admin, LABEL)  # waiting in the batcher
        unload = threading.Thread(target=_unload, args=(admin, LABEL))
        unload.start()
        wait_until("new requests refused", lambda: sample(admin, LABEL).status_code == 503)
        clients.changed.set()
        clients.wait_for(4, after=True)
        in_flight.join(WAIT_S)
        assert unload.is_alive(), "unload returned while an admitted request had not finished"
        status, held_answer = held.finish()
        unload.join(WAIT_S)
    assert answers[0].status_code == 200 and answers[0].headers["x-model-version"] == str(version)
    assert status == 200 and held_answer["model_version"] == str(version), held_answer
    assert {o.status for o in clients.outcomes} <= {200, 503}, [
        o for o in clients.outcomes if o.status not in (200, 503)
    ]
    assert all(o.status == 503 and "unloaded" in o.detail for o in clients.outcomes if o.after)
    assert any(o.status == 200 for o in clients.outcomes if not o.after)
    assert f"model {LABEL} version {version} drained" in admin.log()
    entry = index(admin)[LABEL]
    assert entry["state"] == "UNAVAILABLE" and "unloaded" in entry["reason"]
    assert not triton.is_model_ready(LABEL)
    assert metric(admin, "imagegen_model_ready", LABEL) == 0.0
    assert httpx.get(admin.url + "/readyz").json()["models"][LABEL] == "unloaded"

    triton.load_model(LABEL, headers=BEARER)
    assert served_version(admin, LABEL) == version
    assert triton.is_model_ready(LABEL)
    assert metric(admin, "imagegen_model_ready", LABEL) == 1.0
    assert httpx.get(admin.url + "/readyz").json()["models"][LABEL] == "ready"


def test_unknown_models_are_named_with_what_exists(admin: Server, triton: Any) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        triton.load_model("gan-nope", headers=BEARER)
    assert unknown.value.status() == "404" and GAN in unknown.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        triton.unload_model("gan-nope", headers=BEARER)
    assert unknown.value.status() == "404" and GAN in unknown.value.message()
    with pytest.raises(InferenceServerException) as override:
        triton.load_model(GAN, headers=BEARER, config=json.dumps({"max_batch_size": 8}))
    assert override.value.status() == "400" and "not supported" in override.value.message()


# -- SIGHUP ---------------------------------------------------------------------------------------


def test_sighup_rescans_new_changed_and_removed_folders(admin: Server, repo: Path, models_dir: Path) -> None:
    copy = f"{LABEL}-copy"
    folder = copy_model(models_dir, LABEL, repo, new_id=copy)
    config = folder / "config.pbtxt"
    if config.is_file():
        config.write_text(config.read_text().replace(f'name: "{LABEL}"', f'name: "{copy}"'))
    assert index(admin)[copy]["state"] == "UNAVAILABLE"  # on disk, not loaded yet
    old = served_version(admin, GAN)
    new = add_version(repo, GAN)

    admin.process.send_signal(signal.SIGHUP)
    wait_until(f"{copy} ready", lambda: index(admin)[copy]["state"] == "READY")
    wait_until(f"{GAN} version {new}", lambda: index(admin)[GAN]["version"] == str(new))
    wait_for_log(admin, "repository rescanned")
    assert "SIGHUP: rescanning the model repository" in admin.log()
    assert sample(admin, copy).status_code == 200
    assert served_version(admin, GAN) == new
    assert metric(admin, "imagegen_model_ready", copy) == 1.0
    wait_for_log(admin, f"model {GAN} version {old} drained")

    shutil.rmtree(folder)
    admin.process.send_signal(signal.SIGHUP)
    wait_until(f"{copy} gone", lambda: copy not in index(admin))
    r = sample(admin, copy)
    assert r.status_code == 404 and copy not in r.json()["error"]["models"]
    assert metric(admin, "imagegen_model_ready", copy) is None
    assert served_version(admin, GAN) == new  # unchanged models are left as they are
    assert admin.process.poll() is None
