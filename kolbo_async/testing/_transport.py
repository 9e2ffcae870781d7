"""`Simulator.transport()`: the simulator as an in-process httpx transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import httpx

from ._clock import VirtualClock
from ._records import SimRequest, SimResponse, SimService

__all__ = ["SimTransport", "to_sim_request"]


def to_sim_request(service: SimService, request: httpx.Request, body: bytes) -> SimRequest:
    """Translate an httpx request; the host decides between the API and the CDN."""
    origin = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
    host = "cdn" if origin == service.cdn_url else "api"
    return SimRequest(
        method=request.method,
        path=request.url.path,
        query=dict(request.url.params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        host=host,
    )


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class SimTransport(httpx.AsyncBaseTransport):
    """Answers every request from the simulator, faults included, as a socket would.

    ``drop_before`` raises `httpx.ConnectError` (the request never arrived); ``drop_after``
    raises `httpx.RemoteProtocolError` (it was processed, the answer lost); ``slow`` waits and
    raises `httpx.ReadTimeout` when the wait passes the request's read timeout.
    """

    def __init__(self, service: SimService) -> None:
        self._service = service

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        answer = self._service.handle(to_sim_request(self._service, request, body))
        await self._misbehave(answer, request)
        return to_httpx(answer, request)

    async def _misbehave(self, answer: SimResponse, request: httpx.Request) -> None:
        if answer.fault == "drop_before":
            raise httpx.ConnectError("Connection refused (simulated)", request=request)
        if answer.fault == "drop_after":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if answer.fault == "slow":
            read = request.extensions.get("timeout", {}).get("read")
            wait = answer.delay if read is None else min(answer.delay, read)
            clock = self._service.clock
            if isinstance(clock, VirtualClock):
                await clock.sleep(wait)
            else:
                await anyio.sleep(wait)
            if read is not None and answer.delay > read:
                raise httpx.ReadTimeout("The read operation timed out (simulated)", request=request)


def to_httpx(answer: SimResponse, request: httpx.Request) -> httpx.Response:
    """An httpx response for a simulator answer."""
    if answer.chunks is not None:
        return httpx.Response(
            answer.status, headers=answer.headers, stream=_Chunks(answer.chunks), request=request
        )
    return httpx.Response(
        answer.status, headers=answer.headers, content=answer.body, request=request
    )
