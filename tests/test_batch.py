"""Batches end to end through the simulator: generate_many, as_completed, journal, budget."""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, ImageToVideo, RateLimits, TextToVideo
from kolbo_async.testing import FAULTS, Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "b7" * 20


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(vclock: VirtualClock) -> Simulator:
    return Simulator(clock=vclock)


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncKolbo]:
    async with sim.client(KEY) as client:
        yield client


def posts(sim: Simulator) -> list[Any]:
    return [
        r
        for r in sim.requests
        if r.method == "POST" and r.path.startswith("/api/v1/generate/video")
    ]


def prompts_posted(sim: Simulator) -> Counter[str]:
    return Counter(str(r.json.get("prompt") or r.json.get("image_url")) for r in posts(sim))


async def collect(batch: Any) -> list[k.BatchOutcome[k.AsyncGeneration]]:
    return [outcome async for outcome in batch]


class TestValidation:
    async def test_one_bad_item_sends_nothing(self, sim: Simulator, client: AsyncKolbo) -> None:
        """Every item is validated before the first POST; the error names the item."""
        with pytest.raises(k.InvalidRequestError) as info:
            client.videos.generate_many([TextToVideo("fine"), {"prompt": "  "}])
        assert info.value.field == "requests[1].prompt"
        with pytest.raises(k.InvalidRequestError, match=r"requests\[0\]\.promt"):
            client.videos.generate_many([{"promt": "typo"}])
        with pytest.raises(k.InvalidRequestError, match=r"requests\[0\]\.duration"):
            client.videos.generate_many([TextToVideo("a", duration=-1)])
        with pytest.raises(k.InvalidRequestError, match=r"requests\[0\]\.image_url"):
            client.videos.generate_many([ImageToVideo("ftp://example.com/a.jpg")])
        with pytest.raises(k.InvalidRequestError, match=r"requests\[0\]"):
            client.videos.generate_many([42])  # type: ignore[list-item]
        assert sim.requests == []

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"concurrency": 0}, "concurrency"),
            ({"concurrency": True}, "concurrency"),
            ({"max_credits": 0}, "max_credits"),
            ({"max_credits": float("nan")}, "max_credits"),
            ({"journal": 3}, "journal"),
            ({"resubmit_unknown": "yes"}, "resubmit_unknown"),
        ],
    )
    async def test_bad_options(
        self, client: AsyncKolbo, kwargs: dict[str, Any], field: str
    ) -> None:
        """Options are checked up front too."""
        with pytest.raises(k.InvalidRequestError) as info:
            client.videos.generate_many([TextToVideo("a")], **kwargs)
        assert info.value.field == field

    async def test_a_string_is_not_a_list_of_requests(self, client: AsyncKolbo) -> None:
        """A bare prompt would otherwise become one request per character."""
        with pytest.raises(k.InvalidRequestError, match="requests"):
            client.videos.generate_many("a cat")  # type: ignore[arg-type]

    def test_request_objects(self) -> None:
        """Frozen, hashable, lists kept as tuples, a short repr of the fields set."""
        request = TextToVideo("a cat", duration=5, visual_dna_ids=["x"])
        assert request.visual_dna_ids == ("x",)
        assert hash(request) == hash(TextToVideo("a cat", duration=5, visual_dna_ids=("x",)))
        assert repr(request) == "TextToVideo(prompt='a cat', duration=5, visual_dna_ids=('x',))"
        with pytest.raises(AttributeError):
            request.prompt = "b"  # type: ignore[misc]


class TestJournalArgument:
    async def test_sqlite_urls_name_files(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``sqlite:///rel.db`` is relative, ``sqlite:////abs.db`` absolute (SQLAlchemy's
        convention); both are the same journal as the plain path."""
        monkeypatch.chdir(tmp_path)
        await collect(client.videos.generate_many([TextToVideo("a")], journal="sqlite:///rel.db"))
        assert (tmp_path / "rel.db").is_file()
        absolute = f"sqlite:///{tmp_path}/abs.db"
        assert absolute.startswith("sqlite:////")
        await collect(client.videos.generate_many([TextToVideo("b")], journal=absolute))
        assert (tmp_path / "abs.db").is_file()
        again = await collect(
            client.videos.generate_many([TextToVideo("a")], journal=tmp_path / "rel.db")
        )
        assert again[0].error is None
        assert prompts_posted(sim) == {"a": 1, "b": 1}

    @pytest.mark.parametrize(
        "url",
        [
            "redis://localhost:6379/0",
            "sqlite://",
            "sqlite://host/batch.db",
            "sqlite:///batch.db?mode=ro",
        ],
    )
    async def test_other_urls_are_refused_before_anything(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, url: str,
    ) -> None:  # fmt: skip
        """A URL that names no local file is an InvalidRequestError at the call."""
        monkeypatch.chdir(tmp_path)
        with pytest.raises(k.InvalidRequestError, match="journal") as info:
            client.videos.generate_many([TextToVideo("a")], journal=url)
        assert info.value.field == "journal"
        assert sim.requests == []
        assert list(tmp_path.iterdir()) == []


class TestOutcomes:
    async def test_every_item_once_in_completion_order(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """A slow first item finishes last; failures and refusals are outcomes, not raises."""
        sim.plan("completed", processing_seconds=400)
        requests: list[Any] = [
            TextToVideo("slow"),
            {"prompt": "quick"},
            TextToVideo("broken [fail]"),
            TextToVideo("hidden [filtered]"),
            TextToVideo("refused", model="no-such-model"),
            ImageToVideo("https://example.com/a.jpg", prompt="zoom"),
        ]
        outcomes = await collect(client.videos.generate_many(requests))
        assert sorted(o.index for o in outcomes) == list(range(6))
        # Whichever POST reached Kolbo first got the 400 s plan; it finishes last.
        slow = next(g.id for g in sim.generations.values() if g.processing_seconds == 400)
        assert outcomes[-1].generation is not None
        assert outcomes[-1].generation.id == slow
        by_index = {o.index: o for o in outcomes}
        assert by_index[1].error is None
        assert by_index[1].status is not None and by_index[1].status.succeeded
        assert by_index[1].request == TextToVideo("quick")
        assert isinstance(by_index[2].error, k.GenerationFailedError)
        assert isinstance(by_index[3].error, k.GenerationFailedError)
        assert "without any video URL" in str(by_index[3].error)
        assert isinstance(by_index[4].error, k.BadRequestError)
        assert by_index[4].generation is None
        assert by_index[5].request == ImageToVideo("https://example.com/a.jpg", prompt="zoom")
        assert by_index[5].error is None
        assert by_index[5].generation is not None
        path = await by_index[5].generation.download(Path(sim_tmp(sim)) / "v.mp4")
        assert path.stat().st_size > 0

    async def test_never_more_than_concurrency_in_flight(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """At most `concurrency` generations run at once; all 12 end."""
        seen = 0
        async for _ in client.videos.generate_many([TextToVideo(f"p{i}") for i in range(12)],
                                                   concurrency=3):  # fmt: skip
            running = [g for g in sim.generations.values() if g.state in ("pending", "processing")]
            assert len(running) <= 3
            seen += 1
        assert seen == 12
        assert len(sim.generations) == 12

    async def test_account_errors_stop_the_rest_unsent(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """After INSUFFICIENT_CREDITS no later POST can succeed: the rest are not sent."""
        sim.inject("generate", "insufficient_credits", times=1)
        requests = [TextToVideo(f"p{i}") for i in range(5)]
        outcomes = await collect(client.videos.generate_many(requests, concurrency=1))
        assert len(outcomes) == 5
        assert all(isinstance(o.error, k.InsufficientCreditsError) for o in outcomes)
        assert len(posts(sim)) == 1

    async def test_an_item_waiting_for_its_place_when_the_batch_halts_is_reported(
        self, sim: Simulator
    ) -> None:
        """Item 1 is claimed and waits a minute for its place in the generation window when
        item 0's POST answers INSUFFICIENT_CREDITS: it goes back, and ends like the rest
        (reported, never sent); the batch does not wait for it."""
        sim.inject("generate", "insufficient_credits", times=1)
        async with sim.client(KEY, rate_limits=RateLimits(1, 300)) as client:
            outcomes = await collect(client.videos.generate_many(
                [TextToVideo(f"p{i}") for i in range(3)], concurrency=3))  # fmt: skip
        assert sorted(o.index for o in outcomes) == [0, 1, 2]
        assert all(isinstance(o.error, k.InsufficientCreditsError) for o in outcomes)
        assert len(posts(sim)) == 1

    async def test_posts_are_paced_at_the_generation_rate(self, vclock: VirtualClock) -> None:
        """25 items, limits on at both ends: no 429, and no trailing minute holds over 10."""
        sim = Simulator(clock=vclock, rate_limits=True, processing_seconds=20)
        async with sim.client(KEY, rate_limits=RateLimits()) as client:
            outcomes = await collect(
                client.videos.generate_many(
                    [TextToVideo(f"p{i}") for i in range(25)], concurrency=25
                )
            )
        assert all(o.error is None for o in outcomes)
        assert all(r.status != 429 for r in sim.requests)
        times = sorted(r.time for r in posts(sim))
        assert all(later - earlier >= 60 for earlier, later in zip(times, times[10:], strict=False))
        assert times[-1] - times[0] <= 2 * 61 + 1  # and no slower than the limit needs (+ slack)


def sim_tmp(sim: Simulator) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="kolbo-batch-")


class TestStoppingEarly:
    async def test_break_says_how_to_reattach(
        self, sim: Simulator, client: AsyncKolbo, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Leaving the loop cancels nothing; a warning names the ids and how to go on, and
        as_completed finishes them."""
        caplog.set_level(logging.WARNING, logger="kolbo_async")
        batch = client.videos.generate_many([TextToVideo(f"p{i}") for i in range(6)], concurrency=3)
        async for _ in batch:
            break
        left = batch.unfinished
        assert 1 <= len(left) <= 3
        del batch
        warning = " ".join(r.getMessage() for r in caplog.records)
        assert all(gen.id in warning for gen in left)
        assert "as_completed" in warning and "journal" in warning
        assert not [r for r in sim.requests if r.path.endswith("/cancel")]
        outcomes = await collect(k.as_completed(left))
        assert {o.generation.id for o in outcomes if o.generation} == {g.id for g in left}
        assert all(o.error is None for o in outcomes)

    async def test_aclose_stops_submitting(self, sim: Simulator, client: AsyncKolbo) -> None:
        """After aclose nothing more is sent, and iteration ends."""
        async with client.videos.generate_many([TextToVideo(f"p{i}") for i in range(6)],
                                               concurrency=2) as batch:  # fmt: skip
            await batch.__anext__()
        sent = len(sim.requests)
        assert [o async for o in batch] == []
        assert len(sim.requests) == sent
        assert len(posts(sim)) <= 3

    async def test_cancellation_loses_no_paid_generation(
        self, sim: Simulator, client: AsyncKolbo, vclock: VirtualClock
    ) -> None:
        """A cancelled __anext__ lets its POST land: every created generation is known."""
        batch = client.videos.generate_many([TextToVideo(f"p{i}") for i in range(8)], concurrency=8)
        with anyio.CancelScope() as scope:

            async def cancel_soon() -> None:
                await vclock.sleep(15)
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_soon)
                await batch.__anext__()
        assert scope.cancelled_caught
        assert {g.id for g in batch.unfinished} == set(sim.generations)
        rest = await collect(batch)  # the batch can go on after a cancelled wait
        assert len(rest) == 8


class TestJournal:
    async def test_rerun_returns_finished_without_requests(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """Finished items come back from the journal; duplicate prompts stay distinct."""
        journal = tmp_path / "batch.db"
        requests = [TextToVideo("same"), TextToVideo("same"), TextToVideo("other [fail]")]
        first = await collect(client.videos.generate_many(requests, journal=journal))
        assert len(sim.generations) == 3
        sent = len(sim.requests)
        again = await collect(client.videos.generate_many(requests, journal=journal))
        assert len(sim.requests) == sent
        assert {o.index: o.generation.id for o in again if o.generation} == {
            o.index: o.generation.id for o in first if o.generation
        }
        assert isinstance({o.index: o for o in again}[2].error, k.GenerationFailedError)
        done = {o.index: o for o in again}[0]
        assert done.generation is not None
        await done.generation.result()  # known from the journal: still no request
        assert len(sim.requests) == sent

    async def test_rerun_reattaches_running_ones(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """Submitted but unfinished items are re-attached, not sent again."""
        journal = tmp_path / "batch.db"
        requests = [TextToVideo(f"p{i}") for i in range(4)]
        batch = client.videos.generate_many(requests, journal=journal, concurrency=4)
        await batch.__anext__()
        await batch.aclose()
        assert len(posts(sim)) == 4
        outcomes = await collect(client.videos.generate_many(requests, journal=journal))
        assert len(outcomes) == 4  # the finished one from the journal, three re-attached
        assert len(posts(sim)) == 4
        assert all(o.error is None for o in outcomes)

    async def test_unknown_outcome_is_flagged_not_resent(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A POST whose answer was lost: flagged on the rerun, resent only when asked."""
        journal = tmp_path / "batch.db"
        requests = [TextToVideo("lost"), TextToVideo("fine")]
        sim.inject("generate", "drop_after")
        first = await collect(client.videos.generate_many(requests, journal=journal, concurrency=1))
        assert isinstance(first[0].error, k.SubmissionOutcomeUnknownError)
        assert prompts_posted(sim) == {"lost": 1, "fine": 1}
        again = await collect(client.videos.generate_many(requests, journal=journal))
        flagged = {o.index: o for o in again}[0]
        assert isinstance(flagged.error, k.SubmissionOutcomeUnknownError)
        assert "resubmit_unknown=True" in str(flagged.error)
        assert prompts_posted(sim) == {"lost": 1, "fine": 1}
        forced = await collect(
            client.videos.generate_many(requests, journal=journal, resubmit_unknown=True)
        )
        assert {o.index: o for o in forced}[0].error is None
        assert prompts_posted(sim) == {"lost": 2, "fine": 1}

    async def test_refused_items_are_sent_again(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """A POST Kolbo refused with a 4xx charged nothing: a rerun sends it again."""
        journal = tmp_path / "batch.db"
        sim.inject("generate", "insufficient_credits")
        first = await collect(client.videos.generate_many([TextToVideo("x")], journal=journal))
        assert isinstance(first[0].error, k.InsufficientCreditsError)
        with closing(sqlite3.connect(journal)) as db:
            assert db.execute("SELECT state FROM items").fetchall() == [("rejected",)]
        again = await collect(client.videos.generate_many([TextToVideo("x")], journal=journal))
        assert again[0].error is None
        assert prompts_posted(sim) == {"x": 2}

    @pytest.mark.parametrize(
        "fault",
        # The gateway faults (Kolbo created the generation, a gateway's page answered) are
        # the simulator's where it has them.
        [f for f in ("500", "html_502", "invalid_json", "drop_after", "gateway_502",
                     "gateway_504", "gateway_524", "gateway_garbled_200") if f in FAULTS],
    )  # fmt: skip
    async def test_only_a_4xx_counts_as_refused(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path, fault: str
    ) -> None:
        """A 5xx (Kolbo's or a gateway's), an unreadable 2xx or a lost answer may follow a
        POST Kolbo acted on: the item stays an intent, and a rerun reports it unsent."""
        journal = tmp_path / "batch.db"
        sim.inject("generate", fault)
        first = await collect(client.videos.generate_many([TextToVideo("x")], journal=journal))
        assert isinstance(first[0].error, k.SubmissionOutcomeUnknownError)
        assert first[0].generation is None
        with closing(sqlite3.connect(journal)) as db:
            assert db.execute("SELECT state FROM items").fetchall() == [("intent",)]
        sent = len(posts(sim))
        again = await collect(client.videos.generate_many([TextToVideo("x")], journal=journal))
        assert isinstance(again[0].error, k.SubmissionOutcomeUnknownError)
        assert "resubmit_unknown=True" in str(again[0].error)
        assert len(posts(sim)) == sent
        forced = await collect(
            client.videos.generate_many([TextToVideo("x")], journal=journal, resubmit_unknown=True)
        )
        assert forced[0].error is None
        assert len(posts(sim)) == sent + 1

    async def test_a_connection_never_made_is_sent_again_by_a_rerun(
        self, sim: Simulator, tmp_path: Path
    ) -> None:
        """Refused before the request was read (connection refused, every retry): Kolbo
        cannot have created anything, so the item is not an unknown one."""
        journal = tmp_path / "batch.db"
        sim.inject("generate", "drop_before", times=3)
        async with sim.client(max_retries=2) as client:
            first = await collect(client.videos.generate_many([TextToVideo("x")], journal=journal))
            assert isinstance(first[0].error, k.APIConnectionError)
            assert not isinstance(first[0].error, k.SubmissionOutcomeUnknownError)
            again = await collect(client.videos.generate_many([TextToVideo("x")], journal=journal))
        assert again[0].error is None
        assert len(sim.generations) == 1

    async def test_intent_is_durable_before_the_post(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """When a POST reaches Kolbo, its intent row is already on disk."""
        journal = tmp_path / "batch.db"
        seen: list[tuple[str, Any]] = []
        inner = sim.transport()

        class Peek(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if request.method == "POST":
                    with closing(sqlite3.connect(journal)) as db:
                        seen.extend(db.execute("SELECT state, generation_id FROM items"))
                return await inner.handle_async_request(request)

        async with AsyncKolbo(KEY, _transport=Peek(), _clock=sim.clock) as peeking:  # type: ignore[arg-type]
            await collect(peeking.videos.generate_many([TextToVideo("x")], journal=journal))
        assert seen == [("intent", None)]
        with closing(sqlite3.connect(journal)) as db:
            assert db.execute("SELECT state FROM items").fetchall() == [("finished",)]


class TestBudget:
    async def test_stops_before_crossing(self, sim: Simulator, client: AsyncKolbo) -> None:
        """seedance-2 costs 150 credits for 5 s: a 400-credit budget sends two."""
        requests = [TextToVideo(f"p{i}", model="seedance-2", duration=5) for i in range(4)]
        outcomes = await collect(client.videos.generate_many(requests, max_credits=400))
        assert len(posts(sim)) == 2
        held = [o for o in outcomes if o.generation is None]
        assert len(held) == 2
        assert all("max_credits=400" in str(o.error) for o in held)
        assert sum(g.credits for g in sim.generations.values()) == 300

    async def test_smart_select_stops_once_charges_reach_it(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        """Price unknown before the POST: it stops as soon as the charges reach the budget."""
        requests = [TextToVideo(f"p{i}", duration=5) for i in range(5)]
        outcomes = await collect(client.videos.generate_many(requests, max_credits=70))
        assert len(posts(sim)) == 2  # 35 + 35 reaches 70
        assert len([o for o in outcomes if o.generation is None]) == 3

    @pytest.mark.parametrize(
        "request_",
        [
            TextToVideo("p", duration=10, extra_body={"model": "seedance-2"}),
            TextToVideo("p", model="seedance-2", extra_body={"duration": 10}),
            TextToVideo("p", extra_body={"model": "seedance-2", "duration": 10}),
        ],
        ids=["model-in-extra_body", "duration-in-extra_body", "both-in-extra_body"],
    )
    async def test_prices_the_body_sent(
        self, sim: Simulator, client: AsyncKolbo, request_: TextToVideo
    ) -> None:
        """A model or duration given only through extra_body is what Kolbo charges for:
        seedance-2 for 10 s costs 300, so a 100-credit budget sends nothing."""
        outcomes = await collect(client.videos.generate_many([request_] * 3, max_credits=100))
        assert posts(sim) == []
        assert sum(g.credits for g in sim.generations.values()) == 0
        assert all(o.generation is None and "max_credits=100" in str(o.error) for o in outcomes)

    async def test_posts_go_one_at_a_time(self, sim: Simulator, vclock: VirtualClock) -> None:
        """With a budget no two POSTs overlap (each answer's charge decides the next)."""
        inner = sim.transport()
        state = {"now": 0, "max": 0}

        class Slow(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                is_post = request.method == "POST"
                state["now"] += is_post
                state["max"] = max(state["max"], state["now"])
                try:
                    if is_post:
                        await vclock.sleep(2)
                    return await inner.handle_async_request(request)
                finally:
                    state["now"] -= is_post

        async with AsyncKolbo(KEY, _transport=Slow(), _clock=vclock, rate_limits=None) as client:  # type: ignore[arg-type]
            requests = [TextToVideo(f"p{i}") for i in range(6)]
            await collect(client.videos.generate_many(requests, max_credits=10_000))
            assert state["max"] == 1
            state["max"] = 0
            await collect(client.videos.generate_many(requests))
            assert state["max"] > 1  # without a budget they may overlap

    async def test_preview_with_model_cost(self, client: AsyncKolbo) -> None:
        """Model.cost totals preview a batch before anything is spent."""
        models = {m.identifier: m for m in await client.models.list()}
        requests = [TextToVideo(f"p{i}", model="seedance-2", duration=5) for i in range(4)]
        total = sum(
            models[r.model].cost(r.duration) or 0 for r in requests if r.model and r.duration
        )
        assert total == 600


class TestAsCompleted:
    async def test_indexes_are_positions(self, sim: Simulator, client: AsyncKolbo) -> None:
        """Outcomes carry the handle's position and the caller's own handle object."""
        slow = sim.create_generation(key=KEY, processing_seconds=300)
        quick = sim.create_generation(key=KEY, processing_seconds=10)
        handles = [client.generations.attach(slow), client.generations.attach(quick)]
        outcomes = await collect(k.as_completed(handles))
        assert [o.index for o in outcomes] == [1, 0]
        assert outcomes[0].generation is handles[1]
        assert outcomes[0].request is None

    async def test_poll_errors_are_outcomes(self, client: AsyncKolbo) -> None:
        """An id Kolbo does not know ends as a NotFoundError outcome; the others go on."""
        outcomes = await collect(k.as_completed([client.generations.attach("0" * 24)]))
        assert isinstance(outcomes[0].error, k.NotFoundError)

    async def test_bad_handles(self, sim: Simulator, client: AsyncKolbo) -> None:
        """Duplicates, mixed kinds and handles of two clients are refused up front."""
        gen = client.generations.attach("a" * 24)
        with pytest.raises(k.InvalidRequestError, match="twice"):
            k.as_completed([gen, gen])
        async with sim.client(KEY) as other:
            with pytest.raises(k.InvalidRequestError, match="one client"):
                k.as_completed([gen, other.generations.attach("b" * 24)])
        with pytest.raises(k.InvalidRequestError, match="handles"):
            k.as_completed([gen, "c" * 24])  # type: ignore[list-item]

    async def test_empty(self) -> None:
        """No handles: an empty iterator, for async for and for alike."""
        assert [o async for o in k.as_completed([])] == []
        assert list(k.as_completed([])) == []  # type: ignore[call-overload]


class TestBlocking:
    """The blocking client runs the same batch code through its portal."""

    def test_generate_many_is_a_plain_iterator(self) -> None:
        """Outcomes hold blocking Generation handles that work as usual."""
        sim = Simulator(speed=2000)
        with k.Kolbo(KEY, _transport=sim.transport(), rate_limits=None) as client:
            batch = client.videos.generate_many([TextToVideo("a"), TextToVideo("b [fail]")])
            outcomes = list(batch)
            assert sorted(o.index for o in outcomes) == [0, 1]
            ok = next(o for o in outcomes if o.error is None)
            assert isinstance(ok.generation, k.Generation)
            assert ok.generation.result().url
            failed = next(o for o in outcomes if o.error is not None)
            assert isinstance(failed.error, k.GenerationFailedError)

    def test_as_completed_returns_the_callers_handles(self) -> None:
        """With blocking handles as_completed is a plain iterator over the same objects."""
        sim = Simulator(speed=2000)
        with k.Kolbo(KEY, _transport=sim.transport(), rate_limits=None) as client:
            gens = [client.videos.generate(f"p{i}") for i in range(3)]
            outcomes = list(k.as_completed(gens))
            assert sorted(id(o.generation) for o in outcomes) == sorted(id(g) for g in gens)
            assert all(o.error is None for o in outcomes)

    def test_break_leaves_unfinished_handles(self) -> None:
        """Leaving the loop early: `unfinished` holds blocking handles to finish later."""
        sim = Simulator(speed=200)
        with k.Kolbo(KEY, _transport=sim.transport(), rate_limits=None) as client:
            with client.videos.generate_many(
                [TextToVideo(f"p{i}") for i in range(6)], concurrency=3
            ) as batch:
                for _ in batch:
                    break
                left = batch.unfinished
            assert left
            assert all(isinstance(g, k.Generation) for g in left)
            assert len(list(k.as_completed(left))) == len(left)
            assert len(sim.generations) <= 4
