"""gRPC's standard health service and server reflection on the gRPC port, through the packages'
own clients (grpcio-health-checking's stubs, grpcio-reflection's descriptor database) against a
real server started with --grpc-port: "" follows readiness as /readyz does, a model id follows
that model (unloaded and loaded again through Triton's repository API), anything else is
NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch); on shutdown a watch is sent NOT_SERVING.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service import launch_server
from tests.service.conftest import REPO, Server, free_port, repository_of, serving

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_health")
pytest.importorskip("grpc_reflection")
from google.protobuf import descriptor_pool  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)

MODEL = "label-mnist"
ADMIN_KEY = "admin-test-key"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    repo = repository_of(models_dir, tmp_path_factory, "health-repo", MODEL)
    port = free_port()
    env = {"IMAGEGEN_ADMIN_KEY": ADMIN_KEY}
    with serving(repo, tmp_path_factory.mktemp("health"), "--grpc-port", str(port), env=env) as srv:
        yield srv, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def channel(served: tuple[Server, str]) -> Iterator[Any]:
    with grpc.insecure_channel(served[1]) as ch:
        yield ch


def check(channel: Any, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return int(health_pb2_grpc.HealthStub(channel).Check(request).status)


def test_check_answers_readiness_per_server_and_model(served: tuple[Server, str], channel: Any) -> None:
    assert httpx.get(served[0].url + "/readyz", timeout=30).status_code == 200
    assert check(channel, "") == SERVING
    assert check(channel, MODEL) == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        check(channel, "no-such-model")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_follows_a_model_unloaded_and_loaded_again(served: tuple[Server, str], channel: Any) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    unknown = health.Watch(health_pb2.HealthCheckRequest(service="no-such-model"))
    assert next(unknown).status == SERVICE_UNKNOWN  # and the call stays open, as the protocol says
    unknown.cancel()
    watch = health.Watch(health_pb2.HealthCheckRequest(service=MODEL))
    assert next(watch).status == SERVING
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    repository = f"{served[0].url}/v2/repository/models/{MODEL}"
    try:
        assert httpx.post(f"{repository}/unload", headers=admin, timeout=60).status_code == 200
        assert next(watch).status == NOT_SERVING
        assert check(channel, MODEL) == NOT_SERVING
        assert check(channel, "") == NOT_SERVING  # its only model: the server is not ready (/readyz)
        assert httpx.get(served[0].url + "/readyz", timeout=30).status_code == 503
    finally:
        assert httpx.post(f"{repository}/load", headers=admin, timeout=120).status_code == 200
    assert next(watch).status == SERVING
    watch.cancel()
    assert check(channel, "") == SERVING


def test_reflection_lists_the_services_and_describes_model_config(channel: Any) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert set(database.get_services()) == {
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    pool = descriptor_pool.DescriptorPool(database)  # its own pool: tritonclient's is not touched
    methods = pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name
    assert {"ModelInfer", "ModelMetadata", "ModelConfig"} <= set(methods)
    config = pool.FindMessageTypeByName("inference.ModelConfig").fields_by_name
    # Triton's field numbers, which tritonclient reads
    numbers = {"name": 1, "platform": 2, "max_batch_size": 4, "input": 5, "output": 6}
    assert {name: config[name].number for name in numbers} == numbers
    assert check(channel, "") == SERVING


def test_a_watch_gets_not_serving_when_the_server_stops(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    repo = repository_of(models_dir, tmp_path_factory, "stop-repo", MODEL)
    port = free_port()
    with serving(repo, tmp_path_factory.mktemp("stop"), "--grpc-port", str(port)) as srv:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert next(watch).status == SERVING
            seen: list[Any] = []

            def read() -> None:
                try:
                    seen.extend(m.status for m in watch)
                    seen.append("ended OK")
                except grpc.RpcError as exc:
                    seen.append(exc.code())

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            assert srv.stop() == 0
            reader.join(timeout=60)
            assert seen and seen[0] == NOT_SERVING, seen  # before the stream is cut


def test_servers_start_while_this_process_holds_a_channel(channel: Any) -> None:
    """The fixtures start servers while a gRPC test's channel is open here; a server's start must
    not inherit grpc's threads (tests/service/launch_server.py)."""
    assert check(channel, "") == SERVING  # grpc's poller is running in this process
    codes = []
    for _ in range(20):
        launched = subprocess.run(
            launch_server.command("serve", "--help", nofile=256),
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        codes.append((launched.returncode, launched.stderr[-200:]))
    assert all(code == 0 for code, _ in codes), codes
