"""Promises of `kolbo_async._batch` that its first full mutation run (issue 18) found
untested. On a virtual clock, counted at the simulator (`polls` and `KEY` from
tests/test_poller.py)."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

import kolbo_async as k
from kolbo_async._batch import AsyncBatch
from kolbo_async._journal import Journal
from kolbo_async.testing import Simulator, VirtualClock

from .test_poller import KEY, polls

pytestmark = pytest.mark.anyio


async def test_a_new_submission_is_first_polled_one_hint_after_its_post() -> None:
    """Kolbo has just said "pending, ask again in 8 s": the batch's first status request for
    each new generation goes out 8 s after its POST, not at once."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    async with sim.client(KEY, rate_limits=None) as client:
        start = clock.now()
        outcomes = [
            outcome
            async for outcome in client.videos.generate_many(
                [{"prompt": "a cat"}, {"prompt": "a dog"}, {"prompt": "a fox"}]
            )
        ]
    posts = [r.time - start for r in sim.requests if r.method == "POST"]
    assert posts == [0.0, 0.0, 0.0]
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert outcome.error is None and outcome.generation is not None
        submission = outcome.generation.submission
        assert submission is not None
        hint = submission.poll_interval_hint
        assert hint == 8.0
        first = polls(sim)[outcome.generation.id][0] - start
        assert first == pytest.approx(hint), polls(sim)


async def test_two_handles_of_one_generation_each_get_their_outcome() -> None:
    """`attach` twice gives two handles on one id (one status track): `as_completed` gives
    an outcome for each place in the list, from one stream of polls."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=20)
    async with sim.client(KEY, rate_limits=None) as client:
        first = client.generations.attach(gid)
        second = client.generations.attach(gid)
        outcomes = [outcome async for outcome in k.as_completed([first, second])]
    assert sorted(o.index for o in outcomes) == [0, 1]
    by_index = {o.index: o for o in outcomes}
    assert by_index[0].generation is first and by_index[1].generation is second
    for outcome in outcomes:
        assert outcome.error is None
        assert outcome.status is not None and outcome.status.state == "completed"
    times = polls(sim)[gid]
    assert len(times) == len(set(times))  # one poll at a time, shared by both places


async def _one_given_one_running(
    sim: Simulator, client: k.AsyncKolbo
) -> tuple[list[k.AsyncGeneration], AsyncBatch]:
    """`as_completed` over a 5 s and a 300 s generation, the first one's outcome taken."""
    ends = [sim.create_generation(key=KEY, processing_seconds=s) for s in (5, 300)]
    handles = [client.generations.attach(gid) for gid in ends]
    batch = k.as_completed(handles)
    assert (await batch.__anext__()).index == 0
    return handles, batch


async def test_a_closed_batch_ends_and_warns_of_what_runs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`aclose()` with a generation still running warns once, naming it; the batch then
    ends at once (no poll), and dropping it later warns nothing more."""
    sim = Simulator(clock=VirtualClock())
    async with sim.client(KEY, rate_limits=None) as client:
        handles, batch = await _one_given_one_running(sim, client)
        gid = handles[1].id
        with caplog.at_level(logging.WARNING, logger="kolbo_async"):
            await batch.aclose()
            seen = len(sim.requests)
            with pytest.raises(StopAsyncIteration):
                await batch.__anext__()
            del batch
            gc.collect()
        assert len(sim.requests) == seen
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert gid in warnings[0]


async def test_an_outcome_is_given_when_the_journal_cannot_say_who_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A shared journal out of reach when an outcome is handed over: the outcome is still
    given (at least once: a worker that took the item over may give it too), with a
    warning naming the item and the journal's error."""

    async def unreachable(self: Journal, key: object) -> bool:
        raise k.KolboError("the journal's server is out of reach")

    monkeypatch.setattr(Journal, "holds", unreachable)
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    async with sim.client(KEY, rate_limits=None) as client:
        with caplog.at_level(logging.WARNING, logger="kolbo_async"):
            batch = client.videos.generate_many(
                [{"prompt": "a cat"}, {"prompt": "a dog"}], journal=tmp_path / "batch.db"
            )
            outcomes = [outcome async for outcome in batch]
    assert sorted(o.index for o in outcomes) == [0, 1]
    assert all(o.error is None and o.status is not None for o in outcomes)
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warnings == [
        "requests[0]: the journal's server is out of reach",
        "requests[1]: the journal's server is out of reach",
    ]


async def test_handles_given_to_as_completed_are_polled_at_once() -> None:
    """`as_completed` over attached handles asks for their status at once (their last
    status is unknown), not one hint later."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=20)
    async with sim.client(KEY, rate_limits=None) as client:
        start = clock.now()
        [outcome] = [o async for o in k.as_completed([client.generations.attach(gid)])]
    assert outcome.status is not None and outcome.status.state == "completed"
    assert polls(sim)[gid][0] == start


async def test_a_rerun_polls_what_an_earlier_run_left_running_at_once(tmp_path: Path) -> None:
    """The earlier run stopped after its first outcome; the rerun (a new process: a new
    client, whose poller knows nothing of the item) re-attaches the item still running and
    asks for its status at once, sending nothing again."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    journal = tmp_path / "batch.db"
    requests = [{"prompt": "a cat", "duration": 5}, {"prompt": "a dog", "duration": 10}]
    async with sim.client(KEY, rate_limits=None) as client:
        batch = client.videos.generate_many(requests, journal=journal)
        first = await batch.__anext__()
        await batch.aclose()
    left = 1 - first.index
    await clock.sleep(3)
    start = clock.now()
    async with sim.client(KEY, rate_limits=None) as client:
        again = [o async for o in client.videos.generate_many(requests, journal=journal)]
    assert len([r for r in sim.requests if r.method == "POST"]) == 2
    [outcome] = [o for o in again if o.index == left]
    assert outcome.error is None and outcome.generation is not None
    assert next(t for t in polls(sim)[outcome.generation.id] if t >= start) == start


async def test_a_fault_of_the_sdks_own_while_sending_is_raised_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of the SDK's own while an item is sent (here: recording the answer) stops the
    batch with that exception, not an ExceptionGroup nor another error."""

    async def broken(self: Journal, *args: object) -> None:
        raise RuntimeError("a bug in the journal")

    monkeypatch.setattr(Journal, "submitted", broken)
    sim = Simulator(clock=VirtualClock())
    async with sim.client(KEY, rate_limits=None) as client:
        batch = client.videos.generate_many([{"prompt": "a cat"}], journal=tmp_path / "j.db")
        with pytest.raises(RuntimeError, match=r"^a bug in the journal$"):
            await batch.__anext__()


@pytest.mark.parametrize("how", ["aclose", "drop", "end"])
async def test_a_batch_leaves_no_listener_on_the_tracks_it_watched(how: str) -> None:
    """Closed, dropped (`break`) or run to its end, a batch stops listening to every
    generation it watched: the client's poller keeps no trace of it."""
    from kolbo_async._handles import track_of

    sim = Simulator(clock=VirtualClock())
    async with sim.client(KEY, rate_limits=None) as client:
        handles, batch = await _one_given_one_running(sim, client)
        if how == "aclose":
            await batch.aclose()
        elif how == "drop":
            del batch
            gc.collect()
        else:
            assert (await batch.__anext__()).index == 1
            await batch.aclose()
        assert [track_of(h).watchers for h in handles] == [[], []]


async def test_an_outcome_being_recorded_when_the_wait_is_cut_is_given_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller gives up waiting (a timeout, a cancelled scope) just as an ended
    generation's status is being written to the journal: the write and the outcome are kept,
    and the next `__anext__` gives it. Every item comes out once."""
    waits: list[anyio.CancelScope] = []
    cut: list[int] = []
    real = Journal.finished

    async def finished(self: Journal, key: Any, generation_id: str, status: Any) -> None:
        if not cut:
            cut.append(key)
            waits[-1].cancel()  # the caller's wait is cut here, mid-record
        await real(self, key, generation_id, status)

    monkeypatch.setattr(Journal, "finished", finished)
    sim = Simulator(clock=VirtualClock())
    prompts = [{"prompt": f"shot {i}", "duration": 5 + 5 * i} for i in range(3)]
    got: list[int] = []
    async with sim.client(KEY, rate_limits=None) as client:
        batch = client.videos.generate_many(prompts, journal=tmp_path / "j.db")
        for _ in range(10):
            with anyio.CancelScope() as scope:
                waits.append(scope)
                try:
                    got.append((await batch.__anext__()).index)
                except StopAsyncIteration:
                    break
    assert cut
    assert sorted(got) == [0, 1, 2]
