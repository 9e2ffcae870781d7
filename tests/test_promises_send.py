"""Promises of the send path (`kolbo_async._send`) that its mutation run found untested.

Each test states one promise and counts at the server (the mock transport sees every request
that left): a redirect is never followed with the key, even through a user's client that
follows redirects itself; a CDN's redirects are followed here, each target checked, up to the
client's limit and no further; a download's body is handed on while it arrives; the error of
a broken body or a closed client says what happened.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async._exceptions import KolboError
from kolbo_async._retries import Attempt, Failure
from kolbo_async._send import Answer, Retryable, Unanswered, send, stream

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "7c" * 20
API = "https://api.kolbo.ai"
CDN = "https://cdn.kolbo.test"
BODY = b"\x00\x00\x00\x18ftypmp42" + bytes(4000)


class Server:
    """A mock transport that records every request that reached it, then answers it."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.asked: list[httpx.Request] = []
        self._answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request)
        return self._answer(request)

    @property
    def urls(self) -> list[str]:
        return [str(request.url) for request in self.asked]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


async def read_all(answer: Answer) -> bytes:
    return await answer.response.aread()


async def stream_through(
    http: httpx.AsyncClient, url: str = f"{CDN}/v.mp4", receive: Any = read_all
) -> Any:
    return await stream(
        http, http.build_request("GET", url), anyio.Semaphore(1), lambda _: None, receive
    )


class TestRedirectsThroughAUsersClient:
    """A user's `http_client` may follow redirects on its own; the SDK never lets it."""

    async def test_api_redirect_never_carries_the_key_elsewhere(self) -> None:
        """An API answer redirecting to another host is an error, and nothing (no key) is
        sent to that host, even through a client built with ``follow_redirects=True``."""

        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.host == "api.kolbo.ai":
                return httpx.Response(302, headers={"Location": "https://evil.test/collect"})
            return httpx.Response(200, json={"success": True, "credits": 1})

        server = Server(answer)
        http = httpx.AsyncClient(transport=server.transport(), follow_redirects=True)
        async with http, AsyncKolbo(KEY, http_client=http, rate_limits=None, max_retries=0) as c:
            with pytest.raises(k.APIStatusError, match="not followed"):
                await c.account.credits()
        assert [request.url.host for request in server.asked] == ["api.kolbo.ai"]

    async def test_cdn_redirect_target_checked_even_when_the_client_follows(self) -> None:
        """A CDN redirecting to ``file://`` is refused before any second request, however
        the client is configured (httpx would send it on to the current host)."""
        server = Server(lambda r: httpx.Response(302, headers={"Location": "file:///etc/passwd"}))
        async with httpx.AsyncClient(transport=server.transport(), follow_redirects=True) as http:
            with pytest.raises(httpx.UnsupportedProtocol) as refused:
                await stream_through(http)
        assert server.urls == [f"{CDN}/v.mp4"]
        # The cause line of the download error's traceback.
        assert str(refused.value) == "redirected to a non-http(s) URL"


class TestCdnRedirects:
    async def test_a_plain_http_target_is_followed(self) -> None:
        """http and https targets are both followed (a CDN may hand off to either)."""

        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.host == "cdn.kolbo.test":
                return httpx.Response(302, headers={"Location": "http://edge.kolbo.test/v.mp4"})
            return httpx.Response(200, content=BODY)

        server = Server(answer)
        async with httpx.AsyncClient(transport=server.transport()) as http:
            assert await stream_through(http) == BODY
        assert server.urls == [f"{CDN}/v.mp4", "http://edge.kolbo.test/v.mp4"]

    @pytest.mark.parametrize("hops", [0, 1, 3])
    async def test_up_to_max_redirects_are_followed(self, hops: int) -> None:
        """A chain of exactly `max_redirects` redirects still downloads the file."""

        def answer(request: httpx.Request) -> httpx.Response:
            step = int(request.url.path.strip("/"))
            if step < hops:
                return httpx.Response(302, headers={"Location": f"{CDN}/{step + 1}"})
            return httpx.Response(200, content=BODY)

        server = Server(answer)
        async with httpx.AsyncClient(transport=server.transport(), max_redirects=3) as http:
            assert await stream_through(http, f"{CDN}/0") == BODY
        assert len(server.asked) == hops + 1

    async def test_a_loop_stops_after_max_redirects(self) -> None:
        """A redirect loop sends the first request and `max_redirects` more, then ends with
        `TooManyRedirects` naming the last request."""
        server = Server(lambda r: httpx.Response(302, headers={"Location": f"{CDN}/v.mp4"}))
        async with httpx.AsyncClient(transport=server.transport(), max_redirects=3) as http:
            with pytest.raises(httpx.TooManyRedirects) as looped:
                await stream_through(http)
        assert len(server.asked) == 4
        assert looped.value.request.url == server.asked[-1].url
        assert str(looped.value) == "Exceeded maximum allowed redirects."


class TestStreamedBody:
    async def test_the_body_is_handed_on_while_it_arrives(self) -> None:
        """`receive` gets the answer before the body is read: a download writes a large file
        as it comes rather than holding it whole in memory first."""
        produced: list[str] = []

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                produced.append("start")
                yield BODY[:100]
                yield BODY[100:]
                produced.append("end")

        async def receive(answer: Answer) -> bytes:
            seen_before = list(produced)
            data = await answer.response.aread()
            assert seen_before == []  # nothing of the body was read before `receive`
            return data

        server = Server(lambda r: httpx.Response(200, stream=Body()))
        async with httpx.AsyncClient(transport=server.transport()) as http:
            assert await stream_through(http, receive=receive) == BODY
        assert produced == ["start", "end"]

    async def test_a_body_cut_keeps_its_cause(self) -> None:
        """A transfer cut while its body streams is LOST and keeps httpx's error, which the
        download's message quotes."""
        cut = httpx.ReadError("connection reset mid-body")

        async def receive(answer: Answer) -> None:
            raise cut

        server = Server(lambda r: httpx.Response(200, content=BODY))
        async with httpx.AsyncClient(transport=server.transport()) as http:
            with pytest.raises(Unanswered) as lost:
                await stream_through(http, receive=receive)
        assert lost.value.attempt == Attempt(Failure.LOST)
        assert lost.value.cause is cut


class TestClosedClient:
    @pytest.mark.parametrize("path", ["send", "stream"])
    async def test_the_error_quotes_httpx(self, path: str) -> None:
        """A closed client is a `KolboError` that says what httpx said."""
        server = Server(lambda r: httpx.Response(200))
        http = httpx.AsyncClient(transport=server.transport())
        await http.aclose()
        request = http.build_request("GET", API)
        sent = send(http, request, anyio.Semaphore(1), print) if path == "send" else None
        with pytest.raises(KolboError) as closed:
            await (sent or stream_through(http))
        assert "client has been closed" in str(closed.value)
        assert server.asked == []


class TestRetryAfterReadOnce:
    async def test_the_rule_and_the_error_see_the_same_wait(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An HTTP-date ``Retry-After`` is turned into seconds once, when the answer comes:
        read later, the answer still reports the wait the retry rule judged."""
        now = [1_800_000_000.0]
        monkeypatch.setattr(time, "time", lambda: now[0])
        header = email.utils.formatdate(now[0] + 20, usegmt=True)
        server = Server(lambda r: httpx.Response(503, headers={"Retry-After": header}))
        async with httpx.AsyncClient(transport=server.transport()) as http:
            answer = await send(http, http.build_request("GET", API), anyio.Semaphore(1), print)
        assert answer.retry is not None and answer.retry.retry_after == 20
        now[0] += 10
        assert answer.retry_after == 20


class TestCarriers:
    def test_a_retryable_reads_as_its_error(self) -> None:
        """A chained traceback's context line shows the error the caller gets."""
        error = KolboError("GET /x failed: boom")
        assert str(Retryable(Attempt(Failure.LOST), error)) == "GET /x failed: boom"

    def test_an_unanswered_names_httpx_error(self) -> None:
        cause = httpx.ReadTimeout("slow")
        assert str(Unanswered(Attempt(Failure.LOST), cause)) == "ReadTimeout"
