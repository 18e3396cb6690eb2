"""The routers' route class: a guard before every route, and no per-request framework work a
handler does not use.

- **Guard.** `APIRouter(route_class=guarded_route(require_key))`: every route added to the router
  awaits the guard (service/http/auth.py) before its handler, so none can forget the key. A
  router-level FastAPI dependency did the same, but dependencies are solved anew per request.
- **Direct call.** FastAPI's per-request handler solves the endpoint's dependencies, validates
  its parameters and serialises what it returns. A handler whose one parameter is the `Request`
  and which returns a `Response` (every image route: they read the query by hand) needs none of
  it, so it is awaited directly. Together these took about a tenth of a `/sample` request's CPU
  (bench/asgi_cost.py, docs/performance.md). Other handlers keep FastAPI's handler as is, and
  the OpenAPI document is built from the same signatures either way.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

Guard = Callable[[Request], Awaitable[None]]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class ServiceRoute(APIRoute):
    """APIRoute with an optional `guard` (set by `guarded_route`) and the direct call."""

    guard: Guard | None = None

    def get_route_handler(self) -> Handler:
        handler = self._direct_handler() or super().get_route_handler()
        guard = type(self).guard
        if guard is None:
            return handler

        async def guarded(request: Request) -> Response:
            await guard(request)
            return await handler(request)

        return guarded

    def _direct_handler(self) -> Handler | None:
        """The endpoint itself, when FastAPI's handler would do nothing for it but call it."""
        d = self.dependant
        if d.request_param_name is None or any(
            (d.path_params, d.query_params, d.header_params, d.cookie_params, d.body_params, d.dependencies)
        ):
            return None
        endpoint = self.endpoint
        if not inspect.iscoroutinefunction(endpoint) or len(inspect.signature(endpoint).parameters) != 1:
            return None
        returns = typing.get_type_hints(endpoint).get("return")
        if not (inspect.isclass(returns) and issubclass(returns, Response)):
            return None
        return typing.cast(Handler, endpoint)


def guarded_route(guard: Guard, base: type[ServiceRoute] = ServiceRoute) -> type[ServiceRoute]:
    """A route class whose routes all await `guard(request)` before their handler. With a `base`
    that wraps the handler (the OIP's, which renders errors in the protocol's shape) the guard
    runs inside that wrapping, so what it raises is rendered the same way."""
    return type(f"Guarded{base.__name__}", (base,), {"guard": staticmethod(guard)})
