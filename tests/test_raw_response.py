"""Raw responses: ``client.with_raw_response.X(...)`` on both clients, against the simulator.

The HTTP answer (status, headers, the httpx.Response with the key masked) beside the usual
result, which `parse()` gives; the same rules otherwise (errors raised, a paid POST never
sent twice).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncGeneration, AsyncKolbo, Generation, Kolbo, RawResponse
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "f1" * 20
CREDITS = "/api/v1/account/credits"


class Tagged(httpx.AsyncBaseTransport):
    """The simulator, each answer tagged with an ``x-request-id`` of its own."""

    def __init__(self, sim: Simulator) -> None:
        self.inner = sim.transport()
        self.count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.count += 1
        response.headers["x-request-id"] = f"req-{self.count}"
        return response


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(vclock: VirtualClock) -> Simulator:
    return Simulator(clock=vclock)


@pytest.fixture
async def client(sim: Simulator, vclock: VirtualClock) -> AsyncIterator[AsyncKolbo]:
    async with AsyncKolbo(
        KEY, base_url=sim.base_url, rate_limits=None, _transport=Tagged(sim), _clock=vclock
    ) as client:
        yield client


def assert_no_key(raw: RawResponse[object]) -> None:
    request = raw.http_response.request
    assert request.headers["x-api-key"] != KEY
    for text in (repr(raw), str(dict(request.headers)), repr(request), repr(raw.http_response)):
        assert KEY not in text


@pytest.mark.anyio
class TestAsync:
    async def test_credits(self, client: AsyncKolbo) -> None:
        """Status, headers and the answer itself; parse() is what credits() returns."""
        raw = await client.with_raw_response.account.credits()
        assert raw.status_code == 200
        assert raw.headers["x-request-id"] == "req-1"
        assert raw.headers["content-type"].startswith("application/json")
        assert raw.http_response.request.url.path == CREDITS
        assert raw.parse() == await client.account.credits()
        assert repr(raw) == f"<RawResponse [200] GET {CREDITS}>"
        assert_no_key(raw)

    async def test_models(self, client: AsyncKolbo) -> None:
        """models.list(type) takes the same argument and parses the same models."""
        raw = await client.with_raw_response.models.list("video_from_image")
        assert raw.http_response.request.url.params["type"] == "video_from_image"
        assert raw.parse() == await client.models.list("video_from_image")
        assert_no_key(raw)

    async def test_generate_gives_a_working_handle(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """videos.generate: one POST, its answer, and a handle that waits like any other."""
        raw = await client.with_raw_response.videos.generate("a cat", duration=5)
        gen = raw.parse()
        assert isinstance(gen, AsyncGeneration)
        assert raw.http_response.json()["generation_id"] == gen.id
        assert gen.submission is not None and gen.submission.credits_charged == 35
        assert (await gen.wait()).state == "completed"
        posts = [r for r in sim.requests if r.method == "POST"]
        assert len(posts) == 1
        assert_no_key(raw)

    async def test_from_image(self, client: AsyncKolbo) -> None:
        """videos.from_image, the same way."""
        raw = await client.with_raw_response.videos.from_image("https://example.com/a.jpg")
        assert raw.status_code == 200
        assert raw.http_response.request.url.path == "/api/v1/generate/video/from-image"
        assert isinstance(raw.parse(), AsyncGeneration)

    async def test_after_a_retry_the_answer_that_succeeded(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """A 503 then a 200: the raw response is the 200."""
        sim.inject("credits", "503")
        raw = await client.with_raw_response.account.credits()
        assert raw.status_code == 200
        assert raw.headers["x-request-id"] == "req-2"

    async def test_errors_are_raised_as_without_raw(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """An error answer raises the usual error (whose response has no key either)."""
        sim.inject("generate", "insufficient_credits")
        with pytest.raises(k.InsufficientCreditsError) as info:
            await client.with_raw_response.videos.generate("a cat")
        assert KEY not in str(dict(info.value.response.request.headers))

    async def test_a_paid_post_is_never_sent_twice(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """An answer lost after the POST was processed: outcome unknown, not resubmitted."""
        sim.inject("generate", "drop_after")
        with pytest.raises(k.SubmissionOutcomeUnknownError):
            await client.with_raw_response.videos.generate("a cat")
        assert len([r for r in sim.requests if r.method == "POST"]) == 1

    async def test_concurrent_calls_keep_their_own_answers(self, client: AsyncKolbo) -> None:
        """Raw calls running at once never swap answers (each runs on its own copy)."""
        raw = client.with_raw_response
        got: dict[str, RawResponse[object]] = {}

        async def one(name: str) -> None:
            if name == "credits":
                got[name] = await raw.account.credits()
            else:
                got[name] = await raw.models.list()

        async with anyio.create_task_group() as tg:
            for name in ("credits", "models") * 3:
                tg.start_soon(one, name)
        assert got["credits"].http_response.request.url.path == CREDITS
        assert got["models"].http_response.request.url.path == "/api/v1/models"

    async def test_with_options_copies_have_it(self, client: AsyncKolbo) -> None:
        """A with_options copy has its own with_raw_response, with its settings."""
        raw = await client.with_options(timeout=7).with_raw_response.account.credits()
        assert raw.http_response.request.extensions["timeout"]["read"] == 7


class TestBlocking:
    def test_calls(self) -> None:
        """Kolbo.with_raw_response: the same calls, blocking; generate parses to a blocking
        Generation handle."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        with Kolbo(
            KEY, base_url=sim.base_url, rate_limits=None, _transport=Tagged(sim), _clock=clock
        ) as client:
            credits = client.with_raw_response.account.credits()
            assert credits.status_code == 200
            assert credits.parse() == client.account.credits()
            models = client.with_raw_response.models.list()
            assert models.headers["x-request-id"].startswith("req-")
            assert models.parse() == client.models.list()
            raw = client.with_raw_response.videos.generate("a cat")
            gen = raw.parse()
            assert isinstance(gen, Generation)
            assert gen.wait().state == "completed"
            image = client.with_raw_response.videos.from_image("https://example.com/a.jpg")
            assert isinstance(image.parse(), Generation)
            for each in (credits, models, raw, image):
                assert_no_key(each)

    @pytest.mark.parametrize("namespace", ["videos", "models", "account"])
    def test_mirrors_the_async_one(self, namespace: str) -> None:
        """Each raw call of Kolbo has the async one's parameters and a blocking result."""
        async_ns = type(getattr(AsyncKolbo(KEY).with_raw_response, namespace))
        clock = VirtualClock()
        with Kolbo(KEY, _transport=Simulator(clock=clock).transport(), _clock=clock) as client:
            sync_ns = type(getattr(client.with_raw_response, namespace))
        names = [n for n in vars(async_ns) if not n.startswith("_")]
        assert names == [n for n in vars(sync_ns) if not n.startswith("_")]
        for name in names:
            mine = inspect.signature(getattr(async_ns, name))
            theirs = inspect.signature(getattr(sync_ns, name))
            assert list(mine.parameters) == list(theirs.parameters)
            assert not inspect.iscoroutinefunction(getattr(sync_ns, name))
            assert str(theirs.return_annotation) == str(mine.return_annotation).replace(
                "AsyncGeneration", "Generation"
            )


def test_import_kolbo_async_does_not_load_it() -> None:
    """Raw responses cost `import kolbo_async` nothing: their modules load on first use."""
    import subprocess
    import sys

    code = (
        "import sys, kolbo_async\n"
        "client = kolbo_async.AsyncKolbo('k')\n"
        "assert not [m for m in sys.modules if m.startswith('kolbo_async._') and 'raw' in m]\n"
        "assert type(client.with_raw_response).__name__ == 'AsyncWithRawResponse'\n"
        "assert kolbo_async.RawResponse.__module__ == 'kolbo_async'\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
