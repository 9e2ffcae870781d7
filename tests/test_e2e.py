"""End-to-end flows through the simulator: the SDK against a faithful Kolbo, on a virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, RateLimits
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "d4" * 20


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(vclock: VirtualClock) -> Simulator:
    return Simulator(clock=vclock)


@pytest.fixture
async def client(sim: Simulator, vclock: VirtualClock) -> AsyncIterator[AsyncKolbo]:
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=vclock) as client:
        yield client


class TestLifecycle:
    async def test_generate_progress_download(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A whole generation: submit, changes only, a completed result, a file on disk."""
        gen = await client.videos.generate("A drone over snowy peaks", duration=5)
        assert gen.submission is not None
        assert gen.submission.credits_charged == 35  # Smart Select, as in Kolbo's docs
        updates = [u async for u in gen.progress()]
        states = [u.state for u in updates]
        assert states[0] in ("pending", "processing")
        assert states[-1] == "completed"
        assert len({(u.state, u.progress) for u in updates}) == len(updates)
        progress = [u.progress for u in updates]
        assert progress == sorted(progress)
        path = await gen.download(tmp_path / "drone.mp4")
        assert path.stat().st_size > 0
        cdn = [r for r in sim.requests if r.host == "cdn"]
        assert cdn, "the video came from the CDN origin"
        assert all("x-api-key" not in {h.lower() for h in r.headers} for r in cdn)

    async def test_a_session_carries_a_series(self, sim: Simulator, client: AsyncKolbo) -> None:
        """The submit answer's session_id, passed to the next call, files it in that session;
        the text route sends its own fields, the from-image route does not take them."""
        first = await client.videos.generate("a cat", preset_id="p1", skip_color_palette=True)
        assert first.submission is not None and first.submission.session_id
        session = first.submission.session_id
        second = await client.videos.from_image(
            "https://example.com/a.png", prompt="and then", session_id=session, project_id="pr"
        )
        assert second.submission is not None
        assert second.submission.session_id == session
        posts = [r.json for r in sim.requests if r.method == "POST"]
        assert posts[0] == {"prompt": "a cat", "preset_id": "p1", "skip_color_palette": True}
        assert posts[1]["session_id"] == session and posts[1]["project_id"] == "pr"
        with pytest.raises(TypeError, match="reference_images"):
            await client.videos.from_image(
                "https://example.com/a.png", reference_images=["https://example.com/r.png"]
            )
        assert len([r for r in sim.requests if r.method == "POST"]) == 2

    async def test_polls_follow_the_hint(self, sim: Simulator, client: AsyncKolbo) -> None:
        """Polling happens at the server's hint: roughly generation time / 8 s polls."""
        gen = await client.videos.generate("a cat")
        await gen.wait()
        polls = [r for r in sim.requests if r.path.endswith("/status")]
        record = sim.generations[gen.id]
        assert record.state == "completed"
        assert 5 <= len(polls) <= 40

    async def test_failed_generation_is_refunded_and_raised(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """A failure raises GenerationFailedError with the typed Failure; credits come back."""
        before = (await client.account.credits()).total
        sim.plan(outcome="failed")
        gen = await client.videos.generate("a cat")
        with pytest.raises(k.GenerationFailedError) as info:
            await gen.wait()
        assert info.value.status.failure is not None
        assert info.value.status.failure.category
        after = (await client.account.credits()).total
        assert after == before

    async def test_filtered_result(self, sim: Simulator, client: AsyncKolbo) -> None:
        """Completed without URLs: wait() returns it, result() raises."""
        sim.plan(outcome="filtered")
        gen = await client.videos.generate("a cat")
        final = await gen.wait()
        assert final.state == "completed" and final.failed
        with pytest.raises(k.GenerationFailedError):
            await gen.result()

    async def test_cancel_then_cancel_again(self, client: AsyncKolbo) -> None:
        """cancel() cancels; cancelling again (409) returns the current status."""
        gen = await client.videos.generate("a cat")
        assert (await gen.cancel()).state == "cancelled"
        assert (await gen.cancel()).state == "cancelled"
        with pytest.raises(k.GenerationCancelledError):
            await gen.wait()

    async def test_attach_by_id(self, client: AsyncKolbo) -> None:
        """A handle rebuilt from the id alone reaches the same generation."""
        gen = await client.videos.generate("a cat")
        again = client.generations.attach(gen.id)
        assert (await again.result()).url

    async def test_unknown_id_is_not_found(self, client: AsyncKolbo) -> None:
        """A generation that does not exist is NotFoundError, not retried for 30 minutes."""
        with pytest.raises(k.NotFoundError):
            await client.generations.attach("0" * 24).wait()

    async def test_timeout_names_the_id(self, client: AsyncKolbo) -> None:
        """A short deadline ends with GenerationTimeoutError; the generation goes on."""
        gen = await client.videos.generate("a cat")
        with pytest.raises(k.GenerationTimeoutError) as info:
            await gen.wait(timeout=20)
        assert info.value.generation_id == gen.id
        assert (await gen.wait()).state == "completed"


class TestCatalogAndAccount:
    async def test_models_and_cost(self, client: AsyncKolbo) -> None:
        """The catalog lists video models with prices; cost() uses the multipliers."""
        models = await client.models.list(type="video")
        assert models
        assert all("text_to_video" in m.types for m in models)
        priced = [m for m in models if m.credit]
        assert priced and all(m.cost(5) == m.credit * 5 for m in priced)  # type: ignore[operator]
        image_models = await client.models.list(type="video_from_image")
        assert all("img_to_video" in m.types for m in image_models)

    async def test_generation_with_a_named_model_charges_its_price(
        self, client: AsyncKolbo
    ) -> None:
        """Credits charged = the model's credit per second x duration."""
        model = next(m for m in await client.models.list() if m.credit)
        duration = (model.supported_durations or (5.0,))[0]
        gen = await client.videos.generate("a cat", model=model.identifier, duration=duration)
        assert gen.submission is not None
        assert gen.submission.credits_charged == model.cost(duration)

    async def test_insufficient_credits(self, vclock: VirtualClock) -> None:
        """An empty account gets InsufficientCreditsError (documented as 400 + code)."""
        sim = Simulator(clock=vclock, credits=10)
        async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=vclock) as client:
            with pytest.raises(k.InsufficientCreditsError) as info:
                await client.videos.generate("a cat", duration=10)
        assert info.value.status_code == 400

    async def test_bad_key(self, vclock: VirtualClock) -> None:
        """A key the service does not accept is AuthenticationError."""
        sim = Simulator(clock=vclock, api_key=KEY)
        async with AsyncKolbo(
            "kolbo_live_wrong", _transport=sim.transport(), _clock=vclock
        ) as client:
            with pytest.raises(k.AuthenticationError):
                await client.account.credits()

    async def test_unknown_model(self, client: AsyncKolbo) -> None:
        """A model id the catalog does not have is a BadRequestError with its code."""
        with pytest.raises(k.BadRequestError) as info:
            await client.videos.generate("a cat", model="no-such-model")
        assert info.value.code == "MODEL_NOT_FOUND"


class TestFaults:
    async def test_status_faults_are_ridden_out(self, sim: Simulator, client: AsyncKolbo) -> None:
        """5xx, HTML pages and dropped connections on polls do not end wait()."""
        gen = await client.videos.generate("a cat")
        for fault in ("500", "html_502", "drop_after", "drop_before", "503"):
            sim.inject("status", fault)
        assert (await gen.wait()).state == "completed"

    async def test_post_dropped_after_create_is_outcome_unknown(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """A POST dropped after the server created the generation is never resubmitted."""
        sim.inject("generate", "drop_after")
        with pytest.raises(k.SubmissionOutcomeUnknownError):
            await client.videos.generate("a cat")
        assert len(sim.generations) == 1
        posts = [r for r in sim.requests if r.method == "POST"]
        assert len(posts) == 1

    async def test_post_refused_is_retried_once_safely(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """A POST refused before it was read is retried, and exactly one generation exists."""
        sim.inject("generate", "drop_before")
        gen = await client.videos.generate("a cat")
        assert list(sim.generations) == [gen.id]
        posts = [r for r in sim.requests if r.method == "POST"]
        assert [r.fault for r in posts] == ["drop_before", None]

    async def test_post_5xx_is_not_retried(self, sim: Simulator, client: AsyncKolbo) -> None:
        """A 500 on a POST is raised: it may have followed a charge."""
        sim.inject("generate", "500")
        with pytest.raises(k.InternalServerError):
            await client.videos.generate("a cat")
        assert len([r for r in sim.requests if r.method == "POST"]) == 1

    async def test_429_on_post_is_waited_out(self, sim: Simulator, client: AsyncKolbo) -> None:
        """A 429 on a POST (rejected before any charge) is retried after the cooldown."""
        sim.inject("generate", "429")
        gen = await client.videos.generate("a cat")
        assert list(sim.generations) == [gen.id]
        posts = [r for r in sim.requests if r.method == "POST"]
        assert [r.status for r in posts] == [429, 200]
        assert posts[1].time > posts[0].time  # after the cooldown, not at once


class TestTimeoutsAndStorms:
    async def test_slow_get_past_read_timeout_is_retried(
        self, sim: Simulator, vclock: VirtualClock
    ) -> None:
        """A status answer slower than the read timeout is a timeout, and retried."""
        sim.faults.slow_seconds = 30
        async with sim.client(KEY, timeout=5, rate_limits=None) as client:
            gen = await client.videos.generate("a cat")
            sim.inject("status", "slow")
            status = await gen.status()
        assert status.generation_id == gen.id
        polls = [r for r in sim.requests if r.path.endswith("/status")]
        assert [r.fault for r in polls] == ["slow", None]

    async def test_slow_post_is_outcome_unknown(self, sim: Simulator) -> None:
        """A POST answer slower than its (>= 120 s) read timeout may have been charged."""
        sim.faults.slow_seconds = 500
        sim.inject("generate", "slow")
        async with sim.client(KEY, timeout=5, rate_limits=None) as client:
            with pytest.raises(k.SubmissionOutcomeUnknownError):
                await client.videos.generate("a cat")
        assert len(sim.generations) == 1
        assert len([r for r in sim.requests if r.method == "POST"]) == 1

    async def test_deadline_counts_from_the_start_whatever_the_retries(
        self, sim: Simulator, vclock: VirtualClock
    ) -> None:
        """Slow answers and retries inside wait() never push it past its deadline."""
        sim.faults.slow_seconds = 50
        async with sim.client(KEY, timeout=40, rate_limits=None) as client:
            gen = await client.videos.generate("a cat")
            sim.inject("status", "slow", times=20)
            start = vclock.now()
            with pytest.raises(k.GenerationTimeoutError):
                await gen.wait(timeout=100)
            assert vclock.now() - start <= 100 + 1e-6

    async def test_a_429_pauses_every_poller(self, sim: Simulator, vclock: VirtualClock) -> None:
        """One 429 on a status poll holds every in-flight poll of the client until it passes."""
        async with sim.client(KEY, rate_limits=None) as client:
            gens = [await client.videos.generate(f"p{i}") for i in range(8)]
            sim.inject("status", "429")
            async with anyio.create_task_group() as tg:
                for gen in gens:
                    tg.start_soon(gen.wait)
        polls = [r for r in sim.requests if r.path.endswith("/status")]
        limited = next(r for r in polls if r.status == 429)
        retry_after = 60 - limited.time % 60
        during = [r for r in polls if limited.time < r.time < limited.time + retry_after - 1e-6]
        assert during == []
        assert all(record.state == "completed" for record in sim.generations.values())

    async def test_retry_after_past_the_deadline_is_a_rate_limit_error(
        self, sim: Simulator
    ) -> None:
        """When the server asks for longer than the caller has, RateLimitError says so."""
        async with sim.client(KEY, rate_limits=None) as client:
            gen = await client.videos.generate("a cat")
            sim.inject("status", "429")
            with pytest.raises(k.RateLimitError) as info:
                await gen.wait(timeout=2)
        assert info.value.retry_after is not None
        assert info.value.retry_after > 2


class TestPacing:
    async def test_batch_stays_under_the_servers_limit(self, vclock: VirtualClock) -> None:
        """With limits on at both ends, 25 POSTs meet no 429 and take at least 2 minutes."""
        sim = Simulator(clock=vclock, rate_limits=True)
        async with AsyncKolbo(
            KEY, _transport=sim.transport(), _clock=vclock, rate_limits=RateLimits()
        ) as client:
            start = vclock.now()
            async with anyio.create_task_group() as tg:
                for i in range(25):
                    tg.start_soon(client.videos.generate, f"prompt {i}")
            elapsed = vclock.now() - start
        assert len(sim.generations) == 25
        assert not [r for r in sim.requests if r.status == 429]
        assert elapsed >= 120
