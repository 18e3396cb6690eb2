"""The Open Inference Protocol over gRPC (KServe's `inference.GRPCInferenceService`), on grpc.aio.

It runs on the service's own event loop (started by the app's lifespan when `IMAGEGEN_GRPC_PORT`
is set), so its requests take the same data plane as HTTP's (admission, batchers, metrics and
access log) and share their batches. Every RPC answers a protocol error with its status
code (INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, UNAVAILABLE with a `retry-after` trailer when
overloaded, INTERNAL), never an unhandled exception. grpcio is imported only here, so a service
without the port does not need it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from grpc import aio

from service.connection_budget import split_connections
from service.dataplane.keys import key_matches
from service.dataplane.plane import Call
from service.errors import ServiceError
from service.oip import grpc_predict_v2_pb2 as pb
from service.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from service.oip.core import InferenceService
from service.oip.errors import HTTP_STATUS, ProtocolError, from_service_error
from service.oip.grpc_codec import decode_request
from service.oip.grpc_health import Health, add_standard_services
from service.oip.tensors import to_bytes
from service.settings import Settings

log = logging.getLogger("imagegen.oip.grpc")

STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too_many": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "internal": grpc.StatusCode.INTERNAL,
}
Handler = Callable[..., Awaitable[Any]]
SERVICE = "inference.GRPCInferenceService"
# Past these an RPC gets RESOURCE_EXHAUSTED with a `retry-after` trailer (2,000 concurrent streams
# once ended 6.9% CANCELLED with no detail); the batchers' own admission comes after this.
MAX_IN_FLIGHT = 1024
# Above MAX_IN_FLIGHT, so one connection's burst reaches the handler's answer with its hint
# rather than HTTP/2's REFUSED_STREAM (a bare UNAVAILABLE) for what the client sent early.
MAX_STREAMS_PER_CONNECTION = 4096
MAX_PENDING = 8 * MAX_IN_FLIGHT
# The largest valid request: 1,024 rows of a 128-value latent as typed FP32 contents is ~0.6 MB.
MAX_MESSAGE_BYTES = 4 << 20


def _rpc(*, keyed: bool = True) -> Callable[[Handler], Handler]:
    """Runs an RPC with the key check, turns every failure into a status code and message, and
    has the data plane count and log it as HTTP's requests are (its label: the RPC's path)."""

    def wrap(method: Handler) -> Handler:
        operation = f"/{SERVICE}/{method.__name__}"

        @functools.wraps(method)
        async def call(self: Servicer, request: Any, context: aio.ServicerContext) -> Any:
            started = time.perf_counter()
            rpc = Call(operation, client=peer_address(context.peer()), request_id=self.next_id())
            self.in_flight += 1
            try:
                if self.in_flight > MAX_IN_FLIGHT:
                    busy = f"over {MAX_IN_FLIGHT} RPCs in flight; retry shortly"
                    raise ProtocolError("too_many", busy, {"Retry-After": "1"})
                if keyed:
                    self.check_key(context, rpc.client)
                response = await method(self, request, context, rpc)
            except ProtocolError as exc:
                error = exc
            except ServiceError as exc:
                error = from_service_error(exc)
            except asyncio.CancelledError:  # the client cancelled or left: its job is not run
                self.plane.record(rpc, 499, time.perf_counter() - started, "GRPC", operation)
                raise
            except Exception as exc:
                log.error("unhandled error in %s", method.__name__, exc_info=exc)
                error = ProtocolError("internal", "internal error; see the server log")
            else:
                self.plane.record(rpc, 200, time.perf_counter() - started, "GRPC", operation)
                return response
            finally:
                self.in_flight -= 1
            self.plane.record(rpc, HTTP_STATUS[error.kind], time.perf_counter() - started, "GRPC", operation)
            # raises: ends the RPC; headers (Retry-After) travel as trailing metadata
            await context.abort(STATUS[error.kind], error.message, trailing_metadata(error))

        return call

    return wrap


def trailing_metadata(error: ProtocolError) -> tuple[tuple[str, str], ...]:
    """The error's headers as gRPC metadata (lower-case keys, as gRPC requires), Retry-After
    above all; hop-by-hop HTTP headers stay out."""
    return tuple((k.lower(), v) for k, v in error.headers.items() if k.lower() in _METADATA_HEADERS)


_METADATA_HEADERS = frozenset(["retry-after"])


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService, settings: Settings) -> None:
        self.service = service
        self.plane = service.plane
        self.settings = settings
        # Request ids, as the HTTP middleware's: a per-process prefix and a counter.
        self._id_prefix = "grpc-" + secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.in_flight = 0

    def next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids):x}"

    def check_key(self, context: aio.ServicerContext, client: str) -> None:
        """The API key, when one is set: `authorization: Bearer <key>` or `x-api-key` metadata.
        A client past its failed checks is refused (RESOURCE_EXHAUSTED) before its key is read."""
        if self.settings.api_key is None:
            return
        try:
            self.plane.key_failures.admit(client)
        except ServiceError as exc:
            raise from_service_error(exc) from None
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        given = metadata.get("x-api-key")
        auth = metadata.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:]
        if not key_matches(self.settings, given):
            if given is not None:  # a wrong key is a guess; a missing one is not
                self.plane.key_failures.failed(client)
            raise ProtocolError(
                "unauthenticated", "missing or wrong API key: send 'authorization: Bearer <key>'"
            )

    @_rpc(keyed=False)
    async def ServerLive(self, request: Any, context: aio.ServicerContext, rpc: Call) -> Any:
        return pb.ServerLiveResponse(live=self.service.server_live())

    @_rpc(keyed=False)
    async def ServerReady(self, request: Any, context: aio.ServicerContext, rpc: Call) -> Any:
        return pb.ServerReadyResponse(ready=self.service.server_ready())

    @_rpc()
    async def ModelReady(self, request: Any, context: aio.ServicerContext, rpc: Call) -> Any:
        return pb.ModelReadyResponse(ready=self.service.model_ready(request.name, request.version))

    @_rpc()
    async def ServerMetadata(self, request: Any, context: aio.ServicerContext, rpc: Call) -> Any:
        return pb.ServerMetadataResponse(**self.service.server_metadata())

    @_rpc()
    async def ModelMetadata(self, request: Any, context: aio.ServicerContext, rpc: Call) -> Any:
        meta = self.service.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    @_rpc()
    async def ModelConfig(self, request: Any, context: aio.ServicerContext, rpc: Call) -> Any:
        """Triton's extension, as `GET /v2/models/<id>/config` answers it (one source for both)."""
        config = self.service.model_config(request.name, request.version)
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, pb.ModelConfig()))

    @_rpc()
    async def ModelInfer(self, request: Any, context: aio.ServicerContext, rpc: Call) -> Any:
        """Through the data plane, as HTTP's requests (the connection is the peer): UNAVAILABLE
        with a `retry-after` trailer when the model or the server is at its bounds. A client that
        cancels cancels this task, and with it its job (the batcher skips a cancelled job)."""
        served = self.service.ready(rpc, request.model_name, request.model_version)
        await self.plane.enter(rpc, body=True)
        infer_request = decode_request(request, self.service.max_elements(served))
        response, ticket = await self.service.infer(rpc, served, infer_request)
        try:
            output = pb.ModelInferResponse.InferOutputTensor
            # Raw output contents, as Triton answers: the client reads them without a per-value copy.
            return pb.ModelInferResponse(
                model_name=response.model_name,
                model_version=response.model_version,
                id=response.id,
                outputs=[
                    output(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in response.outputs
                ],
                raw_output_contents=[to_bytes(t.data) for t in response.outputs],
            )
        finally:
            # grpc.aio says nothing of when a response has been sent: its bytes leave the bound
            # once the message is built and handed over.
            ticket.response_sent()


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """grpcio's bounds, as HTTP's: connections (its share of the budget), streams a connection,
    idle connections, message size."""
    _, connections = split_connections(settings.limit_concurrency, grpc=True)
    return [
        ("grpc.max_allowed_incoming_connections", connections),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # RPCs not yet taken by a handler: past grpc's default (1,000) it cancels them without a
        # word; up to this many reach the handler, which answers RESOURCE_EXHAUSTED with a hint.
        ("grpc.server.max_pending_requests", MAX_PENDING),
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING),
        ("grpc.max_connection_idle_ms", int(settings.grpc_idle_timeout * 1000)),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", min(settings.max_response_bytes, (1 << 31) - 1)),
        ("grpc.max_metadata_size", settings.max_header_bytes),
        # a socket that never completes its HTTP/2 start is closed as a silent HTTP one is (120 s
        # by grpcio's default)
        ("grpc.server_handshake_timeout_ms", int(settings.header_timeout * 1000)),
    ]


async def start(
    service: InferenceService, settings: Settings, port: int, health: Health | None = None
) -> tuple[aio.Server, int]:
    """A started gRPC server on settings.host:port with health and reflection; (server, port)."""
    server = aio.server(options=server_options(settings))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(service, settings), server)
    add_standard_services(server, health or Health(service), SERVICE)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpcio raises on a port it cannot bind
        raise OSError(f"cannot bind the gRPC port {host}:{port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {host}:{port}")
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s:%d", host, bound)
    return server, bound


async def stop(server: aio.Server, grace_s: float = 5.0) -> None:
    """Refuse new RPCs, let those in flight finish for up to grace_s, then close."""
    await server.stop(grace_s)


def peer_address(peer: str) -> str:
    """gRPC's `ipv4:1.2.3.4:5678` / `ipv6:[::1]:5678` -> the address alone: the early-retry hold
    keys on the client, not on one of its connections (as HTTP's does)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:].partition("]")[0]
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer
