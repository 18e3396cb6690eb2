"""The standard gRPC services beside the inference service: `grpc.health.v1.Health` (what
Kubernetes' gRPC probes and load balancers call) and server reflection (what grpcurl and other
tools use to list and call the services without our .proto).

Health follows the HTTP probes: the service "" is SERVING once the server is ready (as
`/readyz`: every model tried and one ready), and each model id is a service of its own, SERVING
while that model is ready, NOT_SERVING while it loads, failed or is unloaded; a name that is no
model is NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch). The statuses are refreshed from the
registry before each Check and Watch and twice a second, so Watch streams see a load, an unload
or a rescan.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from service.oip.core import InferenceService

REFRESH_S = 0.5
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _FreshHealthServicer(HealthServicer):  # type: ignore[misc]
    """grpcio-health-checking's servicer, brought up to date before each Check and Watch, so an
    answer never lags /readyz (the periodic refresh is for the open Watch streams)."""

    def __init__(self, refresh: Callable[[], Awaitable[None]]) -> None:
        super().__init__()
        self._refresh = refresh

    async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (grpc's name)
        await self._refresh()
        return await super().Check(request, context)

    async def Watch(self, request: Any, context: Any) -> None:  # noqa: N802
        await self._refresh()
        await super().Watch(request, context)


class Health:
    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.servicer = _FreshHealthServicer(self.refresh)
        self._known: dict[str, int] = {}

    def statuses(self) -> dict[str, int]:
        registry = self.service.registry
        models = {
            name: SERVING if served.state == "ready" else NOT_SERVING
            for name, served in registry.models.items()
        }
        return {"": SERVING if self.service.server_ready() else NOT_SERVING, **models}

    async def refresh(self) -> None:
        now = self.statuses()
        for name in self._known.keys() - now.keys():  # a model whose folder went away
            now[name] = NOT_SERVING
        for name, status in now.items():
            if self._known.get(name) != status:
                await self.servicer.set(name, status)
        self._known = now

    @contextlib.asynccontextmanager
    async def refreshing(self) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await self.refresh()
                await asyncio.sleep(REFRESH_S)

        await self.refresh()
        task = asyncio.create_task(loop(), name="grpc-health")
        try:
            yield
        finally:
            task.cancel()
            await self.servicer.enter_graceful_shutdown()


def add_standard_services(server: aio.Server, health: Health, inference_service: str) -> None:
    """Health and reflection on `server`, reflection listing every service it serves."""
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    names = (
        inference_service,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
