"""The CDN side of one client: its own connections, its own cap, its own 429 cooldowns.

Downloads go out through the one send path (`_send.stream`) with what `Transfers` holds,
never with the API's connections, limiter or pacing.
"""

from __future__ import annotations

import logging

import anyio
import httpx

from ._exceptions import KolboError
from ._tls import shared_ssl_context
from ._window import Window

__all__ = ["Transfers"]

logger = logging.getLogger("kolbo_async")


class Transfers:
    """The CDN side of one client: its own connections, its own cap, its own 429 cooldowns.

    API calls and downloads never share a connection pool, so slow downloads cannot make an
    API call wait for a pool slot. The SDK's client is made on the first download (most
    programs never download) and closed with the client. With a user's `http_client`,
    downloads go through that client instead (its proxies, certificates and mocks apply),
    still under their own cap; sizing its pool for both is then the user's call.

    A CDN's 429 speaks of the CDN's limit, not of Kolbo's API: it holds this client's next
    requests to that host (every download's, not only the one it answered, which would only
    meet the same limit), and never the API's pacing.
    """

    __slots__ = ("_closed", "_cooldowns", "_http", "_limit", "_owned", "_transport", "limiter")

    def __init__(
        self,
        *,
        limit: int,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._limit = limit
        self._transport = transport
        self._http = http_client
        self._owned = http_client is None
        self._closed = False
        # Downloads past the cap wait for a slot; their wait counts against their deadline.
        self.limiter = anyio.Semaphore(limit, fast_acquire=True)
        self._cooldowns: dict[str, Window] = {}

    def client(self) -> httpx.AsyncClient:
        """The client that fetches CDN files, made on first use."""
        if self._closed:
            raise KolboError("This client is closed; create a new one to download.")
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                verify=shared_ssl_context() if self._transport is None else True,
                limits=httpx.Limits(
                    max_connections=self._limit, max_keepalive_connections=self._limit
                ),
            )
        return self._http

    def cool_down(self, host: str, now: float, retry_after: float | None) -> None:
        """Hold the requests to `host` after its 429: `retry_after` seconds (1 s without)."""
        window = self._cooldowns.get(host)
        if window is None:
            window = self._cooldowns[host] = Window(None)
        seconds = window.cool_down(now, retry_after)
        logger.debug("downloads from %s cooling down for %.2f s after a 429", host, seconds)

    def delay(self, host: str, now: float) -> float:
        """Seconds before a request may go to `host` (0 unless a 429 holds it)."""
        window = self._cooldowns.get(host)
        return 0.0 if window is None else window.delay(now)

    async def aclose(self) -> None:
        """Close the connections the SDK opened for downloads (never a user's client)."""
        self._closed = True
        if self._owned and self._http is not None:
            await self._http.aclose()
