"""Hooks: each event the SDK tells a hook, against the simulator on a virtual clock.

A hook is a callable of one event, given to ``AsyncKolbo(hooks=[...])``; every event kind has
a test here that fails without it, and every event is audited for the key (its repr, its
fields), as the logs are in tests/test_keys.py.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import attrs
import httpx
import pytest

import kolbo_async as k
from kolbo_async import (
    AsyncKolbo,
    CooldownStarted,
    DownloadProgress,
    Event,
    GenerationSubmitted,
    Kolbo,
    PacingWait,
    RateLimits,
    RequestDone,
    Retrying,
    StateChanged,
)
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "e7" * 20
CREDITS = "/api/v1/account/credits"


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(vclock: VirtualClock) -> Simulator:
    return Simulator(clock=vclock, video_size=300_000)


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
async def client(sim: Simulator, events: list[Event]) -> AsyncIterator[AsyncKolbo]:
    async with sim.client(KEY, rate_limits=None, hooks=[events.append]) as client:
        yield client


def of(kind: type[Event], events: list[Event]) -> list[Event]:
    return [event for event in events if isinstance(event, kind)]


class ThrottledCDN(httpx.AsyncBaseTransport):
    """The simulator, whose CDN answers 429 (Retry-After: 2) to the next `throttle` requests."""

    def __init__(self, sim: Simulator) -> None:
        self.inner = sim.transport()
        self.api_host = httpx.URL(sim.base_url).host
        self.throttle = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != self.api_host and self.throttle:
            self.throttle -= 1
            return httpx.Response(429, headers={"retry-after": "2"}, request=request)
        return await self.inner.handle_async_request(request)


@pytest.mark.anyio
class TestEvents:
    async def test_request_done(self, client: AsyncKolbo, events: list[Event]) -> None:
        """An answered API call: its method, path, attempt, status and duration."""
        await client.account.credits()
        [done] = of(RequestDone, events)
        assert isinstance(done, RequestDone)
        assert (done.method, done.path, done.attempt, done.status_code, done.error) == (
            "GET", CREDITS, 1, 200, None
        )
        assert done.seconds >= 0

    async def test_request_done_without_an_answer(
        self, sim: Simulator, client: AsyncKolbo, events: list[Event]
    ) -> None:
        """A transport failure: no status, the transport error's class name."""
        sim.inject("credits", "drop_before")
        with pytest.raises(k.APIConnectionError):
            await client.with_options(max_retries=0).account.credits()
        assert of(RequestDone, events) == [
            RequestDone("GET", CREDITS, 1, None, events[0].seconds, "ConnectError")  # type: ignore[attr-defined]
        ]

    async def test_request_done_when_cancelled(
        self, events: list[Event], anyio_backend: str
    ) -> None:
        """A caller that leaves mid-request still closes the attempt's story."""
        sent = anyio.Event()

        class Hanging(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                sent.set()
                await anyio.sleep_forever()
                raise AssertionError("never answered")

        async with (
            AsyncKolbo(KEY, hooks=[events.append], _transport=Hanging()) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(client.account.credits)
            await sent.wait()
            tg.cancel_scope.cancel()
        [done] = of(RequestDone, events)
        assert isinstance(done, RequestDone)
        assert (done.path, done.status_code) == (CREDITS, None)
        assert done.error == ("CancelledError" if anyio_backend == "asyncio" else "Cancelled")

    async def test_retrying(
        self, sim: Simulator, client: AsyncKolbo, events: list[Event]
    ) -> None:
        """A retried 503: the failed attempt, the retry with its delay and reason, the next."""
        sim.inject("credits", "503")
        await client.account.credits()
        first, retry, second = events
        assert isinstance(first, RequestDone) and isinstance(second, RequestDone)
        assert (first.status_code, first.attempt) == (503, 1)
        assert isinstance(retry, Retrying)
        assert (retry.method, retry.path, retry.attempt, retry.reason) == (
            "GET", CREDITS, 1, "HTTP 503"
        )
        assert retry.delay > 0
        assert (second.status_code, second.attempt) == (200, 2)

    async def test_retrying_after_a_transport_error(
        self, sim: Simulator, client: AsyncKolbo, events: list[Event]
    ) -> None:
        """A retry after no answer names the SDK error it would have raised."""
        sim.inject("credits", "drop_before")
        await client.account.credits()
        [retry] = of(Retrying, events)
        assert isinstance(retry, Retrying)
        assert retry.reason == "APIConnectionError"

    async def test_pacing_wait(self, sim: Simulator, events: list[Event]) -> None:
        """A request held by the client's rate window: its bucket and the wait."""
        limits = RateLimits(requests_per_minute=1)
        async with sim.client(KEY, rate_limits=limits, hooks=[events.append]) as client:
            await client.account.credits()
            assert not of(PacingWait, events)
            await client.account.credits()
        [wait] = of(PacingWait, events)
        assert isinstance(wait, PacingWait)
        assert wait.bucket == "request"
        assert 55 < wait.seconds <= 61

    async def test_cooldown_of_the_api(
        self, sim: Simulator, client: AsyncKolbo, events: list[Event]
    ) -> None:
        """A 429 from the API cools its bucket down; the retry then waits it out."""
        sim.inject("credits", "429")
        await client.account.credits()
        [cooldown] = of(CooldownStarted, events)
        assert isinstance(cooldown, CooldownStarted)
        assert (cooldown.bucket, cooldown.host) == ("request", None)
        assert cooldown.seconds > 0
        [wait] = of(PacingWait, events)  # the retry waits the cooldown out
        assert isinstance(wait, PacingWait)
        assert wait.bucket == "request"

    async def test_generation_submitted(
        self, client: AsyncKolbo, events: list[Event]
    ) -> None:
        """A generation POST answered: id, route, model and credits charged."""
        gen = await client.videos.generate("a cat", duration=5)
        [submitted] = of(GenerationSubmitted, events)
        assert isinstance(submitted, GenerationSubmitted)
        assert submitted.generation_id == gen.id
        assert submitted.route == "/api/v1/generate/video"
        assert gen.submission is not None
        assert submitted.model == gen.submission.model
        assert submitted.credits == gen.submission.credits_charged == 35
        assert submitted.seconds >= 0

    async def test_generation_submitted_by_a_batch(
        self, client: AsyncKolbo, events: list[Event]
    ) -> None:
        """A batch's POSTs are told too, with the route of each item."""
        async for _ in client.videos.generate_many(
            [{"prompt": "a cat"}, {"image_url": "https://example.com/a.jpg"}]
        ):
            pass
        routes = sorted(e.route for e in of(GenerationSubmitted, events))  # type: ignore[attr-defined]
        assert routes == ["/api/v1/generate/video", "/api/v1/generate/video/from-image"]

    async def test_state_changed(self, client: AsyncKolbo, events: list[Event]) -> None:
        """The poller's news, once per change of state or progress, up to the end."""
        gen = await client.videos.generate("a cat")
        await gen.wait()
        changes = of(StateChanged, events)
        assert changes
        assert all(isinstance(c, StateChanged) and c.generation_id == gen.id for c in changes)
        seen = [(c.state, c.progress) for c in changes]  # type: ignore[attr-defined]
        assert seen[-1] == ("completed", 100)
        assert all(a != b for a, b in itertools.pairwise(seen))
        polls = [e for e in of(RequestDone, events) if e.path.endswith("/status")]  # type: ignore[attr-defined]
        assert len(polls) >= len(changes)

    async def test_download_progress(
        self, client: AsyncKolbo, events: list[Event], tmp_path: Path
    ) -> None:
        """Bytes as they arrive, naming the file; the last count is the whole file."""
        gen = await client.videos.generate("a cat")
        path = await gen.download(tmp_path / "cat.mp4")
        progress = of(DownloadProgress, events)
        assert len(progress) > 1
        last = progress[-1]
        assert isinstance(last, DownloadProgress)
        assert last.path == str(path)
        assert last.received == last.total == path.stat().st_size
        counts = [p.received for p in progress]  # type: ignore[attr-defined]
        assert counts == sorted(counts) and counts[0] == 0

    async def test_download_retry_and_cdn_cooldown(
        self, sim: Simulator, vclock: VirtualClock, events: list[Event], tmp_path: Path
    ) -> None:
        """A CDN's 429 cools its host down (not an API bucket); the download retries."""
        transport = ThrottledCDN(sim)
        async with AsyncKolbo(
            KEY, base_url=sim.base_url, rate_limits=None, hooks=[events.append],
            _transport=transport, _clock=vclock,
        ) as client:  # fmt: skip
            gen = await client.videos.generate("a cat")
            await gen.wait()
            transport.throttle = 1
            await gen.download(tmp_path / "cat.mp4")
        [cooldown] = of(CooldownStarted, events)
        assert isinstance(cooldown, CooldownStarted)
        assert cooldown.bucket is None and cooldown.host
        assert cooldown.seconds > 0
        [retry] = of(Retrying, events)
        assert isinstance(retry, Retrying)
        assert (retry.method, retry.attempt, retry.reason) == ("GET", 1, "HTTP 429")
        assert "?" not in retry.path  # a signed URL's query is never told


@pytest.mark.anyio
class TestHooks:
    async def test_a_failing_hook_is_logged_and_the_call_goes_on(
        self, sim: Simulator, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A hook's exception never reaches the caller, nor stops the other hooks."""
        seen: list[Event] = []

        def broken(event: Event) -> None:
            raise RuntimeError("hook bug")

        async with sim.client(KEY, hooks=[broken, seen.append]) as client:
            credits = await client.account.credits()
        assert credits.total
        assert seen
        assert any(
            r.levelno == logging.WARNING and "hook" in r.getMessage() and r.exc_info
            for r in caplog.records
        )

    async def test_copies_share_the_hooks(self, client: AsyncKolbo, events: list[Event]) -> None:
        """A with_options copy tells the same hooks."""
        await client.with_options(timeout=5).account.credits()
        assert of(RequestDone, events)

class TestParameter:
    def test_no_hooks_no_events_built(self) -> None:
        """Without hooks the events' module is not even imported by a whole flow."""
        import subprocess
        import sys

        code = (
            "import sys, anyio, kolbo_async\n"
            "from kolbo_async.testing import Simulator, VirtualClock\n"
            "async def main():\n"
            "    sim = Simulator(clock=VirtualClock())\n"
            "    async with sim.client() as client:\n"
            "        gen = await client.videos.generate('a cat')\n"
            "        await gen.wait()\n"
            "        await client.account.credits()\n"
            "anyio.run(main)\n"
            "sys.exit('kolbo_async._hooks' in sys.modules)\n"
        )
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

    @pytest.mark.parametrize("hooks", ["print", [1], [print, None], 3])
    def test_bad_hooks_are_refused(self, hooks: object) -> None:
        """Not a list of callables: InvalidRequestError naming the parameter, at once."""
        with pytest.raises(k.InvalidRequestError) as info:
            AsyncKolbo(KEY, hooks=hooks)  # type: ignore[arg-type]
        assert info.value.field.startswith("hooks")

    def test_the_blocking_client_takes_hooks(self) -> None:
        """Kolbo(hooks=...) tells the same events (on its loop's thread)."""
        events: list[Event] = []
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        with Kolbo(
            KEY, hooks=[events.append], _transport=sim.transport(), rate_limits=None, _clock=clock
        ) as client:
            gen = client.videos.generate("a cat")
            gen.wait()
        kinds = {type(e) for e in events}
        assert {RequestDone, GenerationSubmitted, StateChanged} <= kinds
        submitted = of(GenerationSubmitted, events)
        assert [e.generation_id for e in submitted] == [gen.id]  # type: ignore[attr-defined]


# --- the key appears in no event -------------------------------------------------------------


async def _every_event(tmp_path: Path) -> list[Event]:
    """One run that makes every kind of event, with the key in the transport's error text
    (as a debugging proxy echoing headers would have it)."""
    events: list[Event] = []
    clock = VirtualClock()
    sim = Simulator(clock=clock, video_size=100_000)
    transport = ThrottledCDN(sim)
    async with AsyncKolbo(
        KEY, base_url=sim.base_url, rate_limits=RateLimits(requests_per_minute=2),
        hooks=[events.append], _transport=transport, _clock=clock,
    ) as client:  # fmt: skip
        sim.inject("credits", "drop_before")
        sim.inject("credits", "429")
        await client.account.credits()
        gen = await client.videos.generate("a cat")
        await gen.wait()
        transport.throttle = 1
        await gen.download(tmp_path / "cat.mp4")
    return events


EVENT_KINDS = [
    RequestDone, Retrying, PacingWait, CooldownStarted, GenerationSubmitted, StateChanged,
    DownloadProgress,
]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", EVENT_KINDS, ids=lambda c: c.__name__)
async def test_no_key_in_any_event(kind: type[Event], tmp_path: Path) -> None:
    """Each kind of event (made by one run that makes them all): the key is in neither its
    repr, its str nor any field."""
    events = of(kind, await _every_event(tmp_path))
    assert events, f"the run made no {kind.__name__}"
    for event in events:
        assert isinstance(event, Event)
        texts = [repr(event), str(event), repr(attrs.asdict(event))]
        for text in texts:
            assert KEY not in text
            assert KEY[len("kolbo_live_"):] not in text


def test_events_are_frozen() -> None:
    """Events cannot be changed by one hook under another's feet."""
    event = RequestDone("GET", CREDITS, 1, 200, 0.1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.status_code = 500  # type: ignore[misc]
    assert repr(event).startswith("RequestDone(method='GET'")
    assert RequestDone.__module__ == "kolbo_async"


@pytest.mark.anyio
async def test_the_readme_hook(sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's example: a hook matching the events it cares about."""
    sim.inject("credits", "503")

    def log_event(event: Event) -> None:
        match event:
            case RequestDone(method=method, path=path, status_code=status, attempt=attempt):
                print(f"{method} {path} -> {status} (attempt {attempt})")
            case Retrying(delay=delay, reason=reason):
                print(f"retrying in {delay:.1f} s after {reason}")
            case StateChanged(generation_id=gen_id, state=state, progress=progress):
                print(f"{gen_id}: {state} {progress}%")

    async with sim.client(KEY, hooks=[log_event]) as client:
        await client.account.credits()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"GET {CREDITS} -> 503 (attempt 1)"
    assert lines[1].startswith("retrying in ") and lines[1].endswith(" s after HTTP 503")
    assert lines[2] == f"GET {CREDITS} -> 200 (attempt 2)"
