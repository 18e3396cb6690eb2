"""`imagegen serve --workers 2`: real worker processes behind one port, seen from the outside as
one server (readiness, metrics, identical answers), supervised (restart, stop, failed start)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import Server, copy_model, repository_of, serving
from tests.service.test_repository_control import add_version

ADMIN_KEY = "workers-admin-key"


def worker_pids(server: Server) -> list[int]:
    """The server's worker processes (spawned children; not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.process.pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def metric_value(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def wait_for(condition: object, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def repo(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repository_of(models_dir, tmp_path_factory, "workers-repo", "gan-mnist")


def test_two_workers_answer_as_one_server(repo: Path, tmp_path: Path) -> None:
    env = {"IMAGEGEN_ADMIN_KEY": ADMIN_KEY}
    with serving(repo, tmp_path, "--workers", "2", env=env) as srv:
        assert len(worker_pids(srv)) == 2
        assert httpx.get(srv.url + "/readyz").status_code == 200
        # A new connection per request: the kernel spreads them over both workers.
        answers = set()
        for _ in range(30):
            r = httpx.get(srv.url + "/sample", params={"model": "gan-mnist", "seed": 7, "digit": 3})
            assert r.status_code == 200
            answers.add((r.headers["etag"], r.content))
        assert len(answers) == 1, "a worker answered the same request with other bytes"
        text = httpx.get(srv.url + "/metrics").text
        assert metric_value(text, "imagegen_worker_restarts_total") == 0.0
        ready = r'^imagegen_model_ready\{model="gan-mnist",pid="(\d+)"\} 1\.0$'
        ready_pids = set(re.findall(ready, text, re.M))
        assert ready_pids == {str(p) for p in worker_pids(srv)}
        served = re.search(
            r'^imagegen_requests_total\{model="gan-mnist",route="/sample",status="200"\} (\S+)$', text, re.M
        )
        assert served is not None and float(served.group(1)) == 30.0  # counted over both workers
        assert srv.stop() == 0
        assert worker_pids(srv) == []


def test_a_dead_worker_is_restarted_and_counted(repo: Path, tmp_path: Path) -> None:
    with serving(repo, tmp_path, "--workers", "2") as srv:
        # Both workers up and ready first: a worker that dies before it is ready is a failed start
        # (which stops the server), not a crash to restart; under a loaded CI run that raced.
        wait_for(lambda: len(worker_pids(srv)) == 2 and httpx.get(srv.url + "/readyz").status_code == 200)
        victim = worker_pids(srv)[0]
        os.kill(victim, signal.SIGKILL)

        seen: dict[str, object] = {}

        def restarted() -> bool:
            pids = worker_pids(srv)
            seen["workers"] = pids
            if len(pids) != 2 or victim in pids:
                return False
            text = httpx.get(srv.url + "/metrics").text
            ready = httpx.get(srv.url + "/readyz").status_code == 200
            seen.update(ready=ready, restarts=metric_value(text, "imagegen_worker_restarts_total"))
            return ready and seen["restarts"] == 1.0

        try:
            wait_for(restarted)
        except AssertionError:
            # it failed once in a whole-suite CI run and never alone: keep what it saw
            tail = srv.log()[-4000:]
            raise AssertionError(f"no single restart seen (last: {seen}); server log:\n{tail}") from None
        for seed in range(10):
            r = httpx.get(srv.url + "/sample", params={"model": "gan-mnist", "seed": seed})
            assert r.status_code == 200
        assert "restarting it" in srv.log()


def test_workers_stop_when_the_supervisor_is_killed(repo: Path, tmp_path: Path) -> None:
    """SIGKILL to the parent (which it cannot handle) must not leave workers serving the port."""
    with serving(repo, tmp_path, "--workers", "2") as srv:
        workers = worker_pids(srv)
        assert len(workers) == 2
        srv.process.kill()
        srv.process.wait(timeout=10)

        def alive(pid: int) -> bool:
            try:
                return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return False

        def gone() -> bool:
            return not any(alive(pid) for pid in workers)

        wait_for(gone, 30)
        with pytest.raises(httpx.TransportError):
            httpx.get(srv.url + "/healthz", timeout=2)


def test_sighup_reaches_every_worker(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    repo = repository_of(models_dir, tmp_path_factory, "workers-hup", "gan-mnist")
    with serving(repo, tmp_path, "--workers", "2") as srv:
        new = {"model": "gan-mnist-copy", "seed": 5}
        assert httpx.get(srv.url + "/sample", params=new).status_code == 404
        copy_model(models_dir, "gan-mnist", repo, "gan-mnist-copy")
        srv.process.send_signal(signal.SIGHUP)

        def every_worker_serves_it() -> bool:
            # a new connection each: a worker that had not rescanned would answer 404 to some
            return all(httpx.get(srv.url + "/sample", params=new).status_code == 200 for _ in range(20))

        wait_for(every_worker_serves_it)
        assert srv.process.poll() is None


@pytest.mark.parametrize("trigger", ["sighup", "load"])
def test_a_swap_under_load_fails_no_request_in_any_worker(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, trigger: str
) -> None:
    repo = repository_of(models_dir, tmp_path_factory, f"workers-swap-{trigger}", "gan-mnist")
    env = {"IMAGEGEN_ADMIN_KEY": ADMIN_KEY}
    with serving(repo, tmp_path, "--workers", "2", env=env) as srv:
        outcomes: list[tuple[int, str]] = []
        stop = threading.Event()

        def send() -> None:
            seed = 0
            while not stop.is_set():
                seed += 1
                # a new connection each, so both workers take requests throughout
                r = httpx.get(srv.url + "/sample", params={"model": "gan-mnist", "seed": seed}, timeout=30)
                outcomes.append((r.status_code, r.headers.get("x-model-version", "")))

        senders = [threading.Thread(target=send) for _ in range(4)]
        for sender in senders:
            sender.start()
        try:
            wait_for(lambda: len(outcomes) >= 20)
            new = add_version(repo, "gan-mnist")
            if trigger == "sighup":
                srv.process.send_signal(signal.SIGHUP)
            else:
                admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
                loaded = httpx.post(
                    srv.url + "/v2/repository/models/gan-mnist/load", headers=admin, timeout=120
                )
                assert loaded.status_code == 200, loaded.text
            wait_for(lambda: [v for _, v in outcomes[-40:]] == [str(new)] * 40 and len(outcomes) >= 60)
        finally:
            stop.set()
            for sender in senders:
                sender.join()
        failures = [o for o in outcomes if o[0] != 200]
        assert not failures, failures[:5]


def test_a_worker_that_cannot_load_its_models_stops_the_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    broken = repository_of(models_dir, tmp_path_factory, "workers-broken", "gan-mnist")
    for onnx in broken.glob("gan-mnist/*/model.onnx"):
        onnx.write_bytes(b"not an onnx model")
    cmd = [
        sys.executable, "-m", "imagegen.cli", "serve", "--workers", "2", "--port", "0",
        "--models-dir", str(broken), "--cpu-threads", "1",
    ]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=environ)
    assert done.returncode == 1
    assert "could not load any model" in done.stderr


def test_grpc_port_0_needs_one_worker(repo: Path) -> None:
    cmd = [sys.executable, "-m", "imagegen.cli", "serve", "--workers", "2", "--grpc-port", "0"]
    cmd += ["--models-dir", str(repo)]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=environ)
    assert done.returncode == 2
    assert "--grpc-port 0 needs --workers 1" in done.stderr


@pytest.mark.parametrize(
    ("cpu_max", "cap"), [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000", 1)]
)
def test_default_worker_count_follows_the_cgroup_quota(tmp_path: Path, cpu_max: str, cap: int | None) -> None:
    from service.supervisor import available_cores

    (tmp_path / "cpu.max").write_text(cpu_max)
    cores = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "cpu.max") == (cores if cap is None else min(cores, cap))
    assert available_cores(tmp_path / "absent") == cores


def test_repository_control_takes_effect_in_every_worker_before_it_answers(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Load and unload reach whichever worker the kernel picks; that worker applies them in every
    other one before answering, so the next request sees the change whichever worker takes it."""
    repo = repository_of(models_dir, tmp_path_factory, "workers-control", "gan-mnist")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with serving(repo, tmp_path, "--workers", "2", env={"IMAGEGEN_ADMIN_KEY": ADMIN_KEY}) as srv:
        assert len(worker_pids(srv)) == 2
        new = add_version(repo, "gan-mnist")
        r = httpx.post(srv.url + "/v2/repository/models/gan-mnist/load", headers=admin, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == str(new)
        # a new connection each: a worker that had not loaded it would answer the old version
        versions = {
            httpx.get(srv.url + "/sample", params={"model": "gan-mnist", "seed": i}).headers[
                "x-model-version"
            ]
            for i in range(30)
        }
        assert versions == {str(new)}
        indexes = [httpx.post(srv.url + "/v2/repository/index", headers=admin).json() for _ in range(10)]
        assert all(index == indexes[0] for index in indexes)

        r = httpx.post(srv.url + "/v2/repository/models/gan-mnist/unload", headers=admin, timeout=120)
        assert r.status_code == 200 and r.json()["state"] == "UNAVAILABLE", r.text
        statuses = {
            httpx.get(srv.url + "/sample", params={"model": "gan-mnist"}).status_code for _ in range(30)
        }
        assert statuses == {503}

        r = httpx.post(srv.url + "/v2/repository/models/gan-mnist/load", headers=admin, timeout=120)
        assert r.status_code == 200, r.text
        statuses = {
            httpx.get(srv.url + "/sample", params={"model": "gan-mnist"}).status_code for _ in range(30)
        }
        assert statuses == {200}


def test_a_forged_peer_header_is_not_a_broadcast(repo: Path, tmp_path: Path) -> None:
    """Only the server's own random token marks a request as a worker's: a client's value is
    ignored, and its load still reaches every worker."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}", "x-imagegen-peer": "guess"}
    with serving(repo, tmp_path, "--workers", "2", env={"IMAGEGEN_ADMIN_KEY": ADMIN_KEY}) as srv:
        r = httpx.post(srv.url + "/v2/repository/models/gan-mnist/unload", headers=admin, timeout=120)
        assert r.status_code == 200, r.text
        statuses = {
            httpx.get(srv.url + "/sample", params={"model": "gan-mnist"}).status_code for _ in range(30)
        }
        assert statuses == {503}
