"""Promises of `progress()` streams that their mutation run found untested (issue 18).

Everything on a virtual clock, counted at the simulator.
"""

from __future__ import annotations

import math

import anyio
import pytest

import kolbo_async as k
from kolbo_async._progress import check_timeout
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "5c" * 20


def status_polls(sim: Simulator, generation_id: str) -> list[float]:
    """When the simulator answered a status poll of `generation_id`."""
    return [
        request.time
        for request in sim.requests
        if request.method == "GET" and request.path.endswith(f"/{generation_id}/status")
    ]


# -- the timeout argument ------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 0.5, 1, 30.0])
def test_a_positive_timeout_or_none_is_taken_as_given(timeout: float | None) -> None:
    assert check_timeout(timeout) == timeout


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.5, True, False, "30", math.nan, [30]])
def test_a_timeout_that_is_not_a_positive_number_is_refused_by_name(timeout: object) -> None:
    with pytest.raises(k.InvalidRequestError) as info:
        check_timeout(timeout)
    assert info.value.field == "timeout"
    assert str(info.value) == f"timeout: must be a positive number or None, not {timeout!r}"


# -- the stream's deadline -------------------------------------------------------------------


async def test_a_stream_without_timeout_runs_to_the_end() -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=30)
    async with (
        sim.client(KEY, rate_limits=None) as client,
        client.generations.attach(gid).progress(timeout=None) as updates,
    ):
        states = [update.state async for update in updates]
    assert states[-1] == "completed"


async def test_a_streams_timeout_is_one_deadline_from_its_first_item_not_one_per_item() -> None:
    """Items come every ~8 s; a 30 s stream still ends at 30 s, naming its timeout, and is
    over: iterating again stops without a poll."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=300)
    async with sim.client(KEY, rate_limits=None) as client:
        updates = client.generations.attach(gid).progress(timeout=30)
        start = clock.now()
        items: list[k.GenerationStatus] = []

        async def drain() -> None:
            async for update in updates:
                items.append(update)

        with pytest.raises(k.GenerationTimeoutError) as info:
            await drain()
        assert clock.now() - start == pytest.approx(30.0)
        assert len(items) >= 3
        assert "within 30 s" in str(info.value)
        assert info.value.generation_id == gid
        polls = len(status_polls(sim, gid))
        with pytest.raises(StopAsyncIteration):
            await updates.__anext__()
        assert len(status_polls(sim, gid)) == polls


async def test_a_429_asking_past_the_streams_deadline_is_a_rate_limit_error_at_once() -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=300)
    async with sim.client(KEY, rate_limits=None) as client:
        sim.inject("status", "429")
        start = clock.now()
        async with client.generations.attach(gid).progress(timeout=2) as updates:
            with pytest.raises(k.RateLimitError) as info:
                await updates.__anext__()
        assert clock.now() - start < 2
    assert info.value.retry_after is not None
    assert info.value.retry_after > 2


# -- errors end the stream -------------------------------------------------------------------


async def test_an_api_error_ends_the_stream_for_good() -> None:
    """A 404 is raised once; the same stream then stops, with no second poll."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    async with sim.client(KEY, rate_limits=None) as client:
        updates = client.generations.attach("gen_missing").progress(timeout=60)
        with pytest.raises(k.NotFoundError):
            await updates.__anext__()
        polls = len(status_polls(sim, "gen_missing"))
        with pytest.raises(StopAsyncIteration):
            await updates.__anext__()
        assert len(status_polls(sim, "gen_missing")) == polls == 1


# -- sharing the poller ----------------------------------------------------------------------


async def test_news_another_handle_polled_meanwhile_is_answered_at_once() -> None:
    """A stream resumed after another handle on the same id saw a newer status gets that
    status at once: no wait for the next turn, no poll."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=300)
    async with sim.client(KEY, rate_limits=None) as client:
        mine = client.generations.attach(gid).progress(timeout=None)
        other = client.generations.attach(gid).progress(timeout=None)
        first = await mine.__anext__()
        await other.__anext__()
        await clock.sleep(20)
        newer = await other.__anext__()
        assert newer.progress > first.progress
        polls, now = len(status_polls(sim, gid)), clock.now()
        again = await mine.__anext__()
        assert again == newer
        assert clock.now() == now
        assert len(status_polls(sim, gid)) == polls
        await mine.aclose()
        await other.aclose()


async def test_a_stream_left_between_items_no_longer_slows_other_polls_under_a_budget() -> None:
    """Under a poll budget every watched generation shares the load. A stream left after its
    first item leaves the plan at once, even while another poll is on the wire: that poll's
    generation is then polled at the pace it has alone (6 requests a minute: 90 % of it,
    0.09 polls/s, for a hint of 8 s: ~11 s apart), not at the pace of two (~22 s)."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    left = sim.create_generation(key=KEY, processing_seconds=600)
    watched = sim.create_generation(key=KEY, processing_seconds=600)
    answered: list[float] = []
    async with sim.client(KEY, rate_limits=k.RateLimits(requests_per_minute=6)) as client:

        async def watch() -> None:
            async with client.generations.attach(watched).progress(timeout=None) as updates:
                for _ in range(2):
                    await updates.__anext__()
                    answered.append(clock.now())

        async with anyio.create_task_group() as tg:
            sim.inject("status", "slow")  # the watched generation's first poll: 5 s
            tg.start_soon(watch)
            await clock.sleep(1)
            async with client.generations.attach(left).progress(timeout=None) as updates:
                await updates.__anext__()
    assert status_polls(sim, left) == [1.0]
    assert answered[0] == 5.0
    assert 11.0 <= answered[1] - answered[0] <= 13.0, answered
