"""Generation handles: progress, wait, result, cancel, deadlines (downloads: test_download)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async.testing import VirtualClock

from .conftest import StepClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "b2" * 20
API = "https://api.kolbo.ai"
CDN = "https://cdn.kolbo.test"
STATUS = "/api/v1/generate/gen1/status"


def status(state: str, progress: int = 0, **extra: Any) -> httpx.Response:
    body = {"success": True, "generation_id": "gen1", "state": state, "progress": progress}
    body.update(extra)
    return httpx.Response(200, json=body)


COMPLETED = status(
    "completed",
    100,
    result={"urls": [f"{CDN}/v.mp4"], "thumbnail_url": f"{CDN}/t.jpg", "duration": 5},
)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def client(clock: StepClock) -> AsyncIterator[AsyncKolbo]:
    async with AsyncKolbo(KEY, _clock=clock, rate_limits=None) as client:
        yield client


class TestProgress:
    async def test_yields_only_changes_and_ends_after_terminal(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """Unchanged polls are not yielded; the terminal status is the last item."""
        router.get(STATUS).mock(
            side_effect=[
                status("pending"),
                status("pending"),
                status("processing", 10),
                status("processing", 10),
                status("processing", 55),
                COMPLETED,
            ]
        )
        seen = [(u.state, u.progress) async for u in client.generations.attach("gen1").progress()]
        assert seen == [("pending", 0), ("processing", 10), ("processing", 55), ("completed", 100)]

    async def test_polls_at_once_then_at_the_hint(
        self, router: respx.MockRouter, client: AsyncKolbo, clock: StepClock
    ) -> None:
        """The first poll is immediate; then the server's poll_interval_hint is slept."""
        router.get(STATUS).mock(side_effect=[status("processing", 1), COMPLETED])
        router.post("/api/v1/generate/video").respond(
            200, json={"success": True, "generation_id": "gen1", "poll_interval_hint": 3}
        )
        gen = await client.videos.generate("a cat")
        updates = gen.progress()
        first = await updates.__anext__()
        assert first.state == "processing"
        assert clock.sleeps == []
        await updates.__anext__()
        # The hint, plus up to 10 % jitter so that handles drift apart (never less).
        assert len(clock.sleeps) == 1
        assert 3 <= clock.sleeps[0] <= 3.3

    async def test_waits_are_logged_at_debug(
        self, router: respx.MockRouter, client: AsyncKolbo, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Each wait between polls is a DEBUG record naming the generation."""
        import logging

        caplog.set_level(logging.DEBUG, logger="kolbo_async")
        router.get(STATUS).mock(side_effect=[status("processing", 1), COMPLETED])
        await client.generations.attach("gen1").wait()
        assert any("before polling gen1" in r.getMessage() for r in caplog.records)

    @pytest.mark.parametrize(("hint", "expected"), [(None, 8), (0, 8), (500, 8), (0.001, 0.05)])
    async def test_poll_interval_rule(
        self,
        router: respx.MockRouter,
        client: AsyncKolbo,
        clock: StepClock,
        hint: Any,
        expected: float,
    ) -> None:
        """A hint outside (0, 120] means 8 s, and polling is never faster than 50 ms."""
        router.get(STATUS).mock(side_effect=[status("processing", 1), COMPLETED])
        router.post("/api/v1/generate/video").respond(
            200, json={"success": True, "generation_id": "gen1", "poll_interval_hint": hint}
        )
        gen = await client.videos.generate("a cat")
        await gen.wait()
        assert len(clock.sleeps) == 1
        assert expected <= clock.sleeps[0] <= expected * 1.1

    async def test_failed_generation_ends_the_stream_without_raising(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """progress() reports a failure as its last item instead of raising."""
        router.get(STATUS).mock(
            side_effect=[status("processing", 5), status("failed", 5, error="NSFW")]
        )
        updates = [u async for u in client.generations.attach("gen1").progress()]
        assert updates[-1].failed and updates[-1].error == "NSFW"

    async def test_unknown_state_is_not_terminal(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """A state nobody documented is yielded as is and polling goes on."""
        router.get(STATUS).mock(side_effect=[status("upscaling", 99), COMPLETED])
        states = [u.state async for u in client.generations.attach("gen1").progress()]
        assert states == ["upscaling", "completed"]

    async def test_transient_errors_are_retried_until_the_deadline(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """Inside progress(), many more failures than max_retries are ridden out."""
        outage = [httpx.Response(503)] * 6 + [httpx.ConnectError("down")] * 3
        router.get(STATUS).mock(side_effect=[status("processing", 1), *outage, COMPLETED])
        final = await client.generations.attach("gen1").wait()
        assert final.state == "completed"

    async def test_non_transient_error_ends_the_call(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """A 401 during polling is raised at once, not retried for half an hour."""
        route = router.get(STATUS).respond(401, json={"success": False, "error": "bad key"})
        with pytest.raises(k.AuthenticationError):
            await client.generations.attach("gen1").wait()
        assert route.call_count == 1

    async def test_deadline_names_the_id_and_counts_from_the_start(
        self, router: respx.MockRouter, client: AsyncKolbo, clock: StepClock
    ) -> None:
        """When the deadline passes, GenerationTimeoutError names the id to re-attach."""
        router.get(STATUS).mock(return_value=status("processing", 3))
        start = clock.now()
        with pytest.raises(k.GenerationTimeoutError) as info:
            await client.generations.attach("gen1").wait(timeout=60)
        assert info.value.generation_id == "gen1"
        assert "attach('gen1')" in str(info.value)
        assert isinstance(info.value, TimeoutError)
        assert clock.now() - start == pytest.approx(60)
        assert info.value.last_status is not None

    async def test_deadline_bounds_retries_too(
        self, router: respx.MockRouter, client: AsyncKolbo, clock: StepClock
    ) -> None:
        """An outage longer than the deadline ends with GenerationTimeoutError on time."""
        router.get(STATUS).mock(return_value=httpx.Response(503))
        start = clock.now()
        with pytest.raises(k.GenerationTimeoutError):
            await client.generations.attach("gen1").wait(timeout=100)
        assert clock.now() - start <= 100

    async def test_break_releases_everything(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """break out of progress() leaves no task behind and polls no more."""
        route = router.get(STATUS).mock(return_value=status("processing", 3))
        updates = client.generations.attach("gen1").progress()
        async for _ in updates:
            break
        calls = route.call_count
        await updates.aclose()
        with pytest.raises(StopAsyncIteration):
            await updates.__anext__()
        assert route.call_count == calls == 1

    async def test_cancelled_next_can_be_retried(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """A cancelled __anext__ does not end the stream: iterating again goes on."""
        router.get(STATUS).mock(side_effect=[status("processing", 3), COMPLETED])
        updates = client.generations.attach("gen1").progress()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await updates.__anext__()
        assert scope.cancelled_caught
        states = [u.state async for u in updates]
        assert states[-1] == "completed"

    async def test_async_with_closes_the_stream(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """progress() works as an async context manager that closes it on exit."""
        router.get(STATUS).mock(return_value=status("processing", 3))
        async with client.generations.attach("gen1").progress() as updates:
            first = await updates.__anext__()
        assert first.progress == 3
        with pytest.raises(StopAsyncIteration):
            await updates.__anext__()

    async def test_cancelling_the_caller_leaves_no_task(self, router: respx.MockRouter) -> None:
        """A caller cancelled mid-wait stops polling; nothing keeps running afterwards."""
        route = router.get(STATUS).mock(
            return_value=status("processing", 3, poll_interval_hint=0.01)
        )
        clock = VirtualClock()
        async with AsyncKolbo(KEY, rate_limits=None, _clock=clock) as client:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.generations.attach("gen1").wait)
                    await clock.sleep(0.3)
                    scope.cancel()
            calls = route.call_count
            assert calls >= 2
            await clock.sleep(5)  # a hundred poll intervals (the 50 ms floor)
            gc.collect()
            assert route.call_count == calls


class TestWaitAndResult:
    async def test_wait_raises_for_failed(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """wait() raises GenerationFailedError carrying the status and the failure."""
        failure = {"category": "content_policy", "code": "CONTENT_FLAGGED", "retryable": False}
        router.get(STATUS).respond(
            200,
            json={"success": True, "generation_id": "gen1", "state": "failed", "error": "flagged",
                  "failure": failure},
        )
        with pytest.raises(k.GenerationFailedError) as info:
            await client.generations.attach("gen1").wait()
        assert not isinstance(info.value, k.GenerationCancelledError)
        assert info.value.generation_id == "gen1"
        assert info.value.status.failure == k.Failure(
            category="content_policy", code="CONTENT_FLAGGED", retryable=False
        )
        assert "flagged" in str(info.value)

    async def test_wait_raises_cancelled(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """A cancelled generation raises GenerationCancelledError."""
        router.get(STATUS).mock(return_value=status("cancelled"))
        with pytest.raises(k.GenerationCancelledError):
            await client.generations.attach("gen1").wait()

    async def test_result_raises_when_completed_without_urls(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """A completed generation with no URLs (content filter) is a failure for result()."""
        router.get(STATUS).mock(return_value=status("completed", 100, result={"urls": []}))
        gen = client.generations.attach("gen1")
        assert (await gen.wait()).failed
        with pytest.raises(k.GenerationFailedError, match="without any video URL"):
            await gen.result()

    async def test_result(self, router: respx.MockRouter, client: AsyncKolbo) -> None:
        """result() returns the VideoResult of a completed generation."""
        router.get(STATUS).mock(return_value=COMPLETED)
        result = await client.generations.attach("gen1").result()
        assert result.url == f"{CDN}/v.mp4"
        assert result.duration == 5


class TestCancel:
    async def test_cancel_returns_the_status(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """cancel() POSTs {} and returns the cancelled status."""
        route = router.post("/api/v1/generate/gen1/cancel").respond(
            200,
            json={"success": True, "generation_id": "gen1", "state": "cancelled",
                  "credits_refunded": 35},
        )
        result = await client.generations.attach("gen1").cancel()
        assert route.calls.last.request.content == b"{}"
        assert result.state == "cancelled"
        assert result.raw["credits_refunded"] == 35

    async def test_cancel_on_409_returns_the_current_status(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """Cancelling a finished generation returns its status instead of raising."""
        router.post("/api/v1/generate/gen1/cancel").respond(
            409, json={"success": False, "error": "Cannot cancel a completed generation"}
        )
        router.get(STATUS).mock(return_value=COMPLETED)
        result = await client.generations.attach("gen1").cancel()
        assert result.state == "completed"

    async def test_cancel_is_retried_like_a_get(
        self, router: respx.MockRouter, client: AsyncKolbo
    ) -> None:
        """Cancel is safe to repeat, so a 503 or a dropped answer is retried."""
        route = router.post("/api/v1/generate/gen1/cancel").mock(
            side_effect=[
                httpx.RemoteProtocolError("dropped"),
                httpx.Response(503),
                httpx.Response(200, json={"success": True, "state": "cancelled"}),
            ]
        )
        result = await client.generations.attach("gen1").cancel()
        assert result.generation_id == "gen1"
        assert route.call_count == 3


class TestAttach:
    @pytest.mark.parametrize("bad", ["", "  ", None, 42, "a\nb"])
    def test_rejects_bad_ids(self, bad: Any) -> None:
        """attach() validates the id without any request."""
        client = AsyncKolbo(KEY)
        with pytest.raises(k.InvalidRequestError):
            client.generations.attach(bad)

    def test_no_request_and_no_submission(self) -> None:
        """An attached handle has the id and no submission."""
        gen = AsyncKolbo(KEY).generations.attach("abc")
        assert (gen.id, gen.submission) == ("abc", None)
        assert "abc" in repr(gen)


