"""Safe to expose, row 6: the gRPC port as guarded as HTTP, on a real server with --grpc-port.

It once took 20,500 idle connections (the process ran out of descriptors and every HTTP request
was reset), kept idle sockets ~2 minutes, and ended 6.9% of 2,000 concurrent streams CANCELLED
with no detail. Now: a connection cap shared with HTTP's budget, an idle timeout, and past the
bounds RESOURCE_EXHAUSTED or UNAVAILABLE with a `retry-after` trailer. The grpc client is
grpcio's own; each channel gets its own connection (a local subchannel pool).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service.conftest import Server, free_port, repository_of, start_server

grpc = pytest.importorskip("grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
# 64 connections in all: gRPC's quarter is 16
LIMITS = {"IMAGEGEN_LIMIT_CONCURRENCY": "64", "IMAGEGEN_GRPC_IDLE_TIMEOUT": "1"}


@pytest.fixture(scope="module")
def guarded(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    repo = repository_of(models_dir, tmp_path_factory, "grpc-limits-repo", "gan-mnist")
    port = free_port()
    server = start_server(repo, tmp_path_factory.mktemp("grpc-limits"), "--grpc-port", str(port), env=LIMITS)
    yield server, f"127.0.0.1:{port}"
    server.stop()


def _live(channel: Any) -> bool:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        return bool(stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live)
    except grpc.RpcError:
        return False


def test_grpc_connections_are_capped_and_http_keeps_answering(guarded: tuple[Server, str]) -> None:
    server, target = guarded
    channels = [grpc.insecure_channel(target, options=OWN_CONNECTION) for _ in range(40)]
    try:
        answered = [_live(channel) for channel in channels]  # each holds its connection open
        assert 1 <= sum(answered) <= 20, answered  # 16, and a few the client had not yet seen closed
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        for channel in channels:
            channel.close()

    def a_new_connection_is_served() -> bool:
        with grpc.insecure_channel(target, options=OWN_CONNECTION) as fresh:
            return _live(fresh)

    deadline = time.monotonic() + 20
    while not a_new_connection_is_served():
        assert time.monotonic() < deadline, "the cap never freed up after the connections closed"
        time.sleep(0.2)


def test_an_idle_grpc_connection_is_closed(guarded: tuple[Server, str]) -> None:
    states: list[Any] = []
    with grpc.insecure_channel(guarded[1], options=OWN_CONNECTION) as channel:
        channel.subscribe(states.append)
        assert _live(channel)
        ready, idle = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE

        def closed_after_use() -> bool:  # READY, then IDLE: the server's GOAWAY after 1 s idle
            return ready in states and idle in states[states.index(ready) :]

        deadline = time.monotonic() + 15
        while not closed_after_use():
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
        assert _live(channel)  # the client reconnects on its next call


def test_a_burst_of_streams_gets_answers_or_a_retry_hint_never_cancelled(guarded: tuple[Server, str]) -> None:
    """3,000 concurrent ModelInfer over 4 connections: more than the 1,024 RPCs the server takes
    at once, and more than grpc's own 1,000 pending RPCs, past which it cancelled them unsaid."""
    target = guarded[1]

    async def burst() -> list[tuple[Any, dict[str, str]]]:
        channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(4)]
        stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels]

        async def one(i: int) -> tuple[Any, dict[str, str]]:
            request = service_pb2.ModelInferRequest(model_name="gan-mnist")
            request.parameters["seeds"].int64_param = i
            call = stubs[i % len(stubs)].ModelInfer(request, timeout=60)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                return exc.code(), dict(exc.trailing_metadata() or ())
            return grpc.StatusCode.OK, {}

        try:
            return await asyncio.gather(*(one(i) for i in range(3000)))
        finally:
            for channel in channels:
                await channel.close()

    outcomes = asyncio.run(burst())
    codes = {code for code, _ in outcomes}
    assert grpc.StatusCode.OK in codes
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}, (
        codes
    )
    refused = [trailers for code, trailers in outcomes if code != grpc.StatusCode.OK]
    assert all(trailers.get("retry-after") for trailers in refused), refused[:3]
    assert np.mean([code == grpc.StatusCode.OK for code, _ in outcomes]) > 0.1
