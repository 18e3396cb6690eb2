"""What the routers share, built once per app by create_app and reached through a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from service.metrics import Metrics
from service.registry import Registry
from service.settings import Settings


@dataclass
class Context:
    settings: Settings
    registry: Registry
    metrics: Metrics
    provider: str
    playground: bytes


async def get_context(request: Request) -> Context:
    return cast(Context, request.app.state.ctx)  # set by create_app; starlette's State is untyped


Ctx = Annotated[Context, Depends(get_context)]
