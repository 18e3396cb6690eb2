"""What the routers share, built once per app by create_app: `context(request)` in a handler.

A plain call, not a FastAPI dependency: dependencies are solved anew for every request (see
service/http/routing.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from fastapi import Request

from service.dataplane.plane import DataPlane
from service.engine.latent import Encoders
from service.metrics import Metrics
from service.oip.core import InferenceService
from service.settings import Settings
from service.store.lifecycle import Lifecycle
from service.store.registry import Registry


@dataclass
class Context:
    settings: Settings
    registry: Registry
    lifecycle: Lifecycle
    plane: DataPlane
    oip: InferenceService
    encoders: Encoders
    metrics: Metrics
    provider: str
    playground: bytes


def context(request: Request) -> Context:
    return cast(Context, request.app.state.ctx)  # set by create_app; starlette's State is untyped
