"""The one send path (`kolbo_async._send`): one classification of every outcome for the API
and the CDN alike, one place for the 429 cooldown, and what a CDN's 429 holds."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async._retries import Attempt, Failure
from kolbo_async._send import Answer, Retries, Retryable, Unanswered, send, stream

from .conftest import StepClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "5e" * 20
API = "https://api.kolbo.ai"
CDN = "https://cdn.kolbo.test"
OTHER_CDN = "https://cdn2.kolbo.test"
STATUS = "/api/v1/generate/gen1/status"
BODY = b"\x00\x00\x00\x18ftypmp42" + bytes(4000)


def transport(answer: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(answer)


def raising(exc: type[httpx.HTTPError]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    return httpx.MockTransport(answer)


class CoolDowns:
    """A cooldown callable that records what it was handed."""

    def __init__(self) -> None:
        self.calls: list[float | None] = []

    def __call__(self, retry_after: float | None) -> None:
        self.calls.append(retry_after)


async def send_to(mock: httpx.MockTransport, cool: CoolDowns | None = None) -> Answer:
    async with httpx.AsyncClient(transport=mock) as http:
        return await send(
            http, http.build_request("GET", f"{API}/x"), anyio.Semaphore(1), cool or CoolDowns()
        )


async def stream_from(
    mock: httpx.MockTransport,
    cool: CoolDowns | None = None,
    receive: Callable[[Answer], Any] | None = None,
    limiter: anyio.Semaphore | None = None,
) -> Any:
    async def read_all(answer: Answer) -> Answer:
        await answer.response.aread()
        return answer

    async with httpx.AsyncClient(transport=mock) as http:
        return await stream(
            http,
            http.build_request("GET", f"{CDN}/v.mp4"),
            limiter or anyio.Semaphore(1),
            cool or CoolDowns(),
            receive or read_all,
        )


class TestOneClassification:
    """A transport error means the same whether the API or the CDN was asked."""

    @pytest.mark.parametrize(
        ("exc", "failure"),
        [
            (httpx.ConnectError, Failure.NOT_SENT),
            (httpx.ConnectTimeout, Failure.NOT_SENT),
            (httpx.PoolTimeout, Failure.NOT_SENT),
            (httpx.ReadTimeout, Failure.LOST),
            (httpx.ReadError, Failure.LOST),
            (httpx.RemoteProtocolError, Failure.LOST),
        ],
    )
    async def test_transport_error_same_for_api_and_cdn(
        self, exc: type[httpx.HTTPError], failure: Failure
    ) -> None:
        with pytest.raises(Unanswered) as api:
            await send_to(raising(exc))
        with pytest.raises(Unanswered) as cdn:
            await stream_from(raising(exc))
        assert api.value.attempt == cdn.value.attempt == Attempt(failure)
        assert isinstance(api.value.cause, exc) and isinstance(cdn.value.cause, exc)

    async def test_a_body_that_breaks_is_lost_not_unsent(self) -> None:
        """A transfer cut while its body streams is classified as one cut before it."""

        async def receive(answer: Answer) -> None:
            raise httpx.ReadError("cut")

        ok = transport(lambda request: httpx.Response(200, content=BODY))
        with pytest.raises(Unanswered) as info:
            await stream_from(ok, receive=receive)
        assert info.value.attempt == Attempt(Failure.LOST)

    @pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504])
    async def test_retryable_status_same_for_api_and_cdn(self, code: int) -> None:
        mock = transport(lambda request: httpx.Response(code, headers={"Retry-After": "3"}))
        api, cdn = await send_to(mock), await stream_from(mock)
        assert api.retry == cdn.retry == Attempt(Failure.STATUS, code, 3.0)

    @pytest.mark.parametrize("code", [200, 206, 302, 400, 401, 404])
    async def test_other_status_is_not_for_the_retry_rule(self, code: int) -> None:
        mock = transport(lambda request: httpx.Response(code, headers={"Retry-After": "3"}))
        api = await send_to(mock)
        assert api.retry is None
        assert api.retry_after == 3.0  # still read (once), for the error it may become

    async def test_retry_after_as_a_date(self) -> None:
        mock = transport(
            lambda request: httpx.Response(
                503, headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}
            )
        )
        assert (await send_to(mock)).retry == Attempt(Failure.STATUS, 503, 0.0)


class TestOneCooldown:
    async def test_a_429_starts_the_cooldown_once_capped(self) -> None:
        cool = CoolDowns()
        await send_to(transport(lambda r: httpx.Response(429, headers={"Retry-After": "5"})), cool)
        await stream_from(transport(lambda r: httpx.Response(429)), cool)
        await send_to(
            transport(lambda r: httpx.Response(429, headers={"Retry-After": "9999"})), cool
        )
        assert cool.calls == [5.0, None, 60.0]

    async def test_nothing_else_cools_down(self) -> None:
        cool = CoolDowns()
        for code in (200, 404, 500, 503):
            mock = transport(
                lambda r, code=code: httpx.Response(code, headers={"Retry-After": "5"})
            )
            await send_to(mock, cool)
            await stream_from(mock, cool)
        assert cool.calls == []


class TestStream:
    async def test_slot_held_until_the_body_is_read(self) -> None:
        limiter = anyio.Semaphore(1)
        held: list[int] = []

        async def receive(answer: Answer) -> int:
            held.append(limiter.value)
            return len(await answer.response.aread())

        mock = transport(lambda request: httpx.Response(200, content=BODY))
        assert await stream_from(mock, receive=receive, limiter=limiter) == len(BODY)
        assert held == [0] and limiter.value == 1

    async def test_redirect_to_another_scheme_is_not_followed(self) -> None:
        asked: list[str] = []

        def answer(request: httpx.Request) -> httpx.Response:
            asked.append(str(request.url))
            return httpx.Response(302, headers={"Location": "file:///etc/passwd"})

        with pytest.raises(httpx.UnsupportedProtocol):
            await stream_from(transport(answer))
        assert asked == [f"{CDN}/v.mp4"]

    async def test_redirect_loop_ends(self) -> None:
        loop = transport(lambda r: httpx.Response(302, headers={"Location": f"{CDN}/v.mp4"}))
        with pytest.raises(httpx.TooManyRedirects):
            await stream_from(loop)

    async def test_closed_client_is_a_kolbo_error(self) -> None:
        http = httpx.AsyncClient(transport=transport(lambda r: httpx.Response(200)))
        await http.aclose()
        with pytest.raises(k.KolboError, match="closed"):
            await send(http, http.build_request("GET", API), anyio.Semaphore(1), CoolDowns())


class TestRetries:
    def retries(self, clock: StepClock, max_retries: int | None = 2) -> Retries:
        return Retries(max_retries=max_retries, rng=random.Random(0), clock=clock, generation=False)

    def failed(self, attempt: Attempt) -> Retryable:
        request = httpx.Request("GET", API)
        response = httpx.Response(attempt.status_code or 500, request=request)
        return Retryable(
            attempt, k.InternalServerError("busy", response=response, body=None, code=None)
        )

    async def test_gives_up_with_the_error(self, clock: StepClock) -> None:
        retries = self.retries(clock, max_retries=1)
        failed = self.failed(Attempt(Failure.LOST))
        assert 0 < retries.delay(failed) <= 0.5
        with pytest.raises(k.InternalServerError):
            retries.delay(failed)

    async def test_retry_after_is_waited_unless_it_is_too_long(self, clock: StepClock) -> None:
        retries = self.retries(clock)
        assert retries.delay(self.failed(Attempt(Failure.STATUS, 503, 7.0))) == 7.0
        with pytest.raises(k.RateLimitError):
            retries.delay(self.failed(Attempt(Failure.STATUS, 503, 600.0)))

    async def test_a_429_is_waited_where_the_next_try_is_admitted(self, clock: StepClock) -> None:
        retries = self.retries(clock)
        await retries.wait(self.failed(Attempt(Failure.STATUS, 429, 4.0)), 4.0)
        await retries.wait(self.failed(Attempt(Failure.STATUS, 503, 2.0)), 2.0)
        assert clock.sleeps == [2.0]


# --- A CDN's 429, end to end -------------------------------------------------------------


def completed() -> httpx.Response:
    body = {
        "success": True,
        "generation_id": "gen1",
        "state": "completed",
        "progress": 100,
        "result": {"urls": [f"{CDN}/v.mp4", f"{OTHER_CDN}/w.mp4"], "thumbnail_url": None},
    }
    return httpx.Response(200, json=body)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        mock.get(STATUS).mock(return_value=completed())
        mock.get("/api/v1/account/credits").respond(
            200, json={"success": True, "credits": {"total": 5, "subscription": 5, "extra": 0}}
        )
        yield mock


@pytest.fixture
async def client(clock: StepClock) -> AsyncIterator[AsyncKolbo]:
    async with AsyncKolbo(KEY, _clock=clock, rate_limits=None) as client:
        yield client


class TestCdn429:
    """A CDN's 429 speaks of the CDN's limit: its Retry-After is honoured by every download
    of the client to that host, and Kolbo's API is not held by it."""

    async def test_retry_after_is_honoured(
        self, router: respx.MockRouter, client: AsyncKolbo, clock: StepClock, tmp_path: Path
    ) -> None:
        cdn = router.get(f"{CDN}/v.mp4")
        cdn.side_effect = [
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(200, content=BODY),
        ]
        path = await client.generations.attach("gen1").download(tmp_path / "v.mp4")
        assert path.read_bytes() == BODY
        assert cdn.call_count == 2
        assert clock.sleeps == [7.0]

    async def test_holds_the_next_download_from_that_host_only(
        self, router: respx.MockRouter, clock: StepClock, tmp_path: Path
    ) -> None:
        throttled = router.get(f"{CDN}/v.mp4")
        throttled.side_effect = [
            httpx.Response(429, headers={"Retry-After": "30"}),
            httpx.Response(200, content=BODY),
        ]
        router.get(f"{OTHER_CDN}/w.mp4").respond(200, content=BODY)
        async with AsyncKolbo(KEY, _clock=clock, rate_limits=None, max_retries=0) as client:
            gen = client.generations.attach("gen1")
            with pytest.raises(k.RateLimitError) as info:
                await gen.download(tmp_path / "a.mp4")
            assert info.value.retry_after == 30.0
            started = clock.now()
            await gen.download(tmp_path / "other.mp4", index=1)  # another host: not held
            await client.account.credits()  # the API: not held
            assert clock.now() == started and clock.sleeps == []
            await gen.download(tmp_path / "b.mp4")  # the same host: waits its cooldown
            assert clock.sleeps == [30.0]
        assert (tmp_path / "b.mp4").read_bytes() == BODY

    async def test_a_cooldown_past_the_deadline_is_not_slept(
        self, router: respx.MockRouter, clock: StepClock, tmp_path: Path
    ) -> None:
        router.get(f"{CDN}/v.mp4").respond(429, headers={"Retry-After": "30"})
        async with AsyncKolbo(KEY, _clock=clock, rate_limits=None, max_retries=0) as client:
            gen = client.generations.attach("gen1")
            with pytest.raises(k.RateLimitError):
                await gen.download(tmp_path / "a.mp4")
            with pytest.raises(k.GenerationTimeoutError):
                await gen.download(tmp_path / "b.mp4", timeout=10)
        assert clock.sleeps == []
        assert sorted(p.name for p in tmp_path.iterdir()) == []

    async def test_a_retry_after_past_the_download_deadline_is_the_cdns_advice(
        self, router: respx.MockRouter, clock: StepClock, tmp_path: Path
    ) -> None:
        """A CDN asking for 30 s when the download has 10 ends it at once with its advice
        (`RateLimitError`, `retry_after` 30), as polling does; not a timeout that has not
        happened, and nothing is slept or left on disk."""
        router.get(f"{CDN}/v.mp4").respond(429, headers={"Retry-After": "30"})
        async with AsyncKolbo(KEY, _clock=clock, rate_limits=None) as client:
            gen = client.generations.attach("gen1")
            with pytest.raises(k.RateLimitError) as info:
                await gen.download(tmp_path / "a.mp4", timeout=10)
        assert info.value.retry_after == 30.0
        assert clock.sleeps == [] and list(tmp_path.iterdir()) == []

    async def test_api_429_still_cools_the_api_down(
        self, router: respx.MockRouter, client: AsyncKolbo, clock: StepClock
    ) -> None:
        """The seam hands a 429 of the API to the API's pacing (its bucket), once."""
        credits = router.get("/api/v1/account/credits")
        credits.side_effect = [
            httpx.Response(429, headers={"Retry-After": "4"}, json={"status": False}),
            httpx.Response(
                200, json={"success": True, "credits": {"total": 5, "subscription": 5, "extra": 0}}
            ),
        ]
        assert (await client.account.credits()).total == 5
        assert clock.sleeps == [4.0]
