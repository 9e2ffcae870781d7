"""Promises of a batch item's POST (`kolbo_async._batch_send`) that its mutation run found
untested: a POST that failed without Kolbo refusing it (a 5xx in Kolbo's own envelope) ends
outcome-unknown, its message says which item, why, and whether a rerun with the journal would
report it rather than pay again, and it keeps the error as its cause. Counted at the simulator.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

import kolbo_async as k
from kolbo_async import TextToVideo
from kolbo_async._batch_send import Created, Ends, Fault, post
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "e1" * 20


def posts(sim: Simulator) -> int:
    return sum(r.method == "POST" and r.path == "/api/v1/generate/video" for r in sim.requests)


@pytest.mark.parametrize("journaled", [True, False], ids=["journal", "no-journal"])
async def test_a_5xx_refusal_ends_outcome_unknown_and_says_what_a_rerun_does(
    tmp_path: Path, journaled: bool
) -> None:
    sim = Simulator(clock=VirtualClock())
    sim.inject("generate", "500")  # Kolbo's own 500: nothing says it created nothing
    journal = tmp_path / "batch.db" if journaled else None
    async with sim.client(KEY, max_retries=0) as client:
        batch = client.videos.generate_many([TextToVideo("a cat")], journal=journal)
        [outcome] = [o async for o in batch]
    error = outcome.error
    assert isinstance(error, k.SubmissionOutcomeUnknownError)
    cause = error.__cause__
    assert isinstance(cause, k.APIStatusError) and cause.status_code == 500
    rerun = (
        " A rerun with this journal reports it instead of sending it (resubmit_unknown=True "
        "sends it)."
        if journaled
        else ""
    )
    assert str(error) == (
        f"requests[0]: the POST failed without Kolbo refusing it ({type(cause).__name__}: "
        f"{cause}); Kolbo may have created (and charged for) the generation. Check your Kolbo "
        f"dashboard before sending it again.{rerun}"
    )
    assert posts(sim) == 1


async def test_a_cancelled_batch_with_slow_posts_keeps_every_paid_generation() -> None:
    """Cancelled while its POSTs are on the wire (Kolbo has created the generations, the
    answers take 30 s), the batch still waits for each answer and knows every generation
    Kolbo created: none is paid for and lost."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.faults.slow_seconds = 30
    sim.inject("generate", "slow", times=4)
    async with sim.client(KEY, rate_limits=None) as client:
        batch = client.videos.generate_many([TextToVideo(f"p{i}") for i in range(4)], concurrency=4)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_mid_post() -> None:
                    await clock.sleep(10)
                    scope.cancel()

                tg.start_soon(cancel_mid_post)
                await batch.__anext__()
        assert scope.cancelled_caught
        assert posts(sim) == 4 and len(sim.generations) == 4
        assert {g.id for g in batch.unfinished} == set(sim.generations)
        rest = [o async for o in batch]
    assert sorted(o.generation.id for o in rest if o.generation) == sorted(sim.generations)
    assert posts(sim) == 4


class FakeJournal:
    """The journal calls `post` makes, each after a checkpoint (where a cancellation lands)."""

    def __init__(
        self, stop: k.KolboError | None = None, unrecorded: k.KolboError | None = None
    ) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.stop = stop
        self.unrecorded = unrecorded  # what `submitted` returns: the id could not be written
        self.kept = True

    async def _note(self, *call: Any) -> None:
        await anyio.lowlevel.checkpoint()
        self.calls.append(call)

    async def intent(self, index: int, path: str, body: Any) -> k.KolboError | None:
        await self._note("intent", index, path, body)
        return self.stop

    async def unsent(self, index: int) -> None:
        await self._note("unsent", index)

    async def rejected(self, index: int, error: str) -> None:
        await self._note("rejected", index, error)

    async def unknown(self, index: int, error: str) -> None:
        await self._note("unknown", index, error)

    async def submitted(self, index: int, generation_id: str, raw: Any) -> k.KolboError | None:
        await self._note("submitted", index, generation_id, raw)
        return self.unrecorded


class FakeSender:
    def __init__(
        self, *, closed: bool = False, fails: Exception | None = None, closes: bool = False
    ) -> None:
        self.sent: list[Any] = []
        self.is_closed = closed
        self.fails = fails
        self.closes = closes  # the client is closed while the POST is under way

    async def submit(self, path: str, body: dict[str, Any]) -> Any:
        self.sent.append(body)
        self.is_closed = self.is_closed or self.closes
        if self.fails is not None:
            raise self.fails
        return CREATED

    def closed(self) -> bool:
        return self.is_closed


BODY = {"prompt": "a cat"}
#: What the client's submit returns for a created generation (its id and Kolbo's answer).
CREATED = types.SimpleNamespace(
    id="gen_7", submission=types.SimpleNamespace(raw={"generation_id": "gen_7"})
)


async def post_of(sender: FakeSender, journal: FakeJournal) -> Any:
    return await post(3, "/api/v1/generate/video", BODY, sender, journal)  # type: ignore[arg-type]


async def test_a_cancellation_before_the_post_leaves_takes_the_intent_back() -> None:
    """Cancelled before its POST: the intent is written whole, then taken back (a rerun
    sends the item instead of reporting an unknown outcome); nothing is sent."""
    journal, sender = FakeJournal(), FakeSender()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await post_of(sender, journal)
    assert scope.cancelled_caught
    assert journal.calls == [("intent", 3, "/api/v1/generate/video", BODY), ("unsent", 3)]
    assert sender.sent == []


async def test_a_journal_that_refuses_the_intent_sends_nothing_and_halts() -> None:
    stop = k.KolboError("the journal cannot be written")
    journal, sender = FakeJournal(stop), FakeSender()
    assert await post_of(sender, journal) == Ends(stop, halt=stop)
    assert sender.sent == []


async def test_a_closed_client_sends_nothing_and_takes_the_intent_back() -> None:
    journal, sender = FakeJournal(), FakeSender(closed=True)
    answer = await post_of(sender, journal)
    assert isinstance(answer, Ends) and answer.halt is None
    assert str(answer.error) == "Not submitted: the client was closed before its POST was sent."
    assert journal.calls[-1] == ("unsent", 3)
    assert sender.sent == []


async def test_an_error_of_the_sdks_own_is_a_fault_not_an_outcome() -> None:
    bug = ValueError("a bug in the SDK")
    assert await post_of(FakeSender(fails=bug), FakeJournal()) == Fault(bug)


async def test_the_closed_clients_own_refusal_takes_the_intent_back() -> None:
    """The SDK refusing a POST on a client closed meanwhile (a plain `KolboError`) sent no
    byte: the intent is taken back, and the item ends without halting the rest."""
    refusal = k.KolboError("The client is closed")
    journal, sender = FakeJournal(), FakeSender(fails=refusal, closes=True)
    assert await post_of(sender, journal) == Ends(refusal)
    assert [call[0] for call in journal.calls] == ["intent", "unsent"]
    assert journal.calls[-1] == ("unsent", 3)


async def test_a_lost_answer_keeps_its_intent_even_if_the_client_closed_meanwhile() -> None:
    """A POST that may have reached Kolbo keeps its intent (a rerun reports it, never pays
    again), even when the client was closed while it was under way."""
    lost = k.SubmissionOutcomeUnknownError("POST /api/v1/generate/video: connection lost")
    journal, sender = FakeJournal(), FakeSender(fails=lost, closes=True)
    answer = await post_of(sender, journal)
    assert isinstance(answer, Ends) and answer.error is lost
    assert journal.calls[1] == ("unknown", 3, f"SubmissionOutcomeUnknownError: {lost}")


async def test_a_refusal_is_recorded_with_its_reason() -> None:
    """Kolbo's 4xx charged nothing: the row says why (a rerun sends the item again)."""
    refusal = k.BadRequestError(
        "400 Bad Request: bad prompt",
        response=httpx.Response(400, request=httpx.Request("POST", "https://api.kolbo.ai")),
        body={"success": False, "error": "bad prompt"},
        code=None,
    )
    journal = FakeJournal()
    assert await post_of(FakeSender(fails=refusal), journal) == Ends(refusal)
    assert journal.calls[1] == ("rejected", 3, "400 Bad Request: bad prompt")


async def test_a_created_generation_is_recorded_and_an_unrecorded_id_halts() -> None:
    """The id Kolbo answered is written at once; when it cannot be, the batch is told to send
    nothing more (no POST goes out without its record)."""
    journal = FakeJournal()
    assert await post_of(FakeSender(), journal) == Created(CREATED, None)  # type: ignore[arg-type]
    assert journal.calls[1] == ("submitted", 3, "gen_7", {"generation_id": "gen_7"})
    full = k.KolboError("the journal cannot be written: disk full")
    answer = await post_of(FakeSender(), FakeJournal(unrecorded=full))
    assert answer == Created(CREATED, halt=full)  # type: ignore[arg-type]
