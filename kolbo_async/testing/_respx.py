"""`Simulator.mock(router)`: the simulator behind a respx router, for code with its own clients."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import httpx

from ._records import SimService
from ._transport import SimTransport

if TYPE_CHECKING:
    import respx  # an optional dependency, for the type only

    # A `respx.MockRouter` (what `respx.mock` yields) is a `respx.Router` too.
    _Router = TypeVar("_Router", bound=respx.Router)

__all__ = ["install"]


def install(service: SimService, router: _Router) -> _Router:
    """Add routes for the simulator's API and CDN origins to `router`; returns the router.

    Faults behave as with `Simulator.transport()` (respx raises what the side effect raises).
    The side effect is async, so the routes serve `httpx.AsyncClient`s.
    """
    transport = SimTransport(service)

    async def side_effect(request: httpx.Request) -> httpx.Response:
        response = await transport.handle_async_request(request)
        body = await response.aread()
        # A fresh response around the bytes: respx re-streams what it is handed, and the
        # transport's own stream is spent once read (a streamed download saw 0 bytes).
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=response.extensions,
        )

    for origin in (service.base_url, service.cdn_url):
        router.route(url__startswith=origin + "/").mock(side_effect=side_effect)
    return router
