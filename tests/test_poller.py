"""The shared poller: one budgeted scheduler for every waiter of a client."""

from __future__ import annotations

from collections import defaultdict

import anyio
import pytest

import kolbo_async as k
from kolbo_async import RateLimits
from kolbo_async._retries import shared_poll_interval
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "e5" * 20


def polls(sim: Simulator) -> dict[str, list[float]]:
    """Status request times per generation id."""
    times: dict[str, list[float]] = defaultdict(list)
    for request in sim.requests:
        if request.method == "GET" and request.path.endswith("/status"):
            times[request.path.split("/")[-2]].append(request.time)
    return times


def test_fair_stretching_rule() -> None:
    """Within budget each at its hint; over it, every interval stretched alike."""
    assert shared_poll_interval(8.0, load=1.0, budget=4.5) == 8.0
    assert shared_poll_interval(8.0, load=1000 / 8, budget=5.0) == 200.0
    assert shared_poll_interval(2.0, load=1000 / 8, budget=5.0) == 50.0  # ratio kept
    assert shared_poll_interval(8.0, load=10**6, budget=None) == 8.0


class TestSharedPoller:
    async def test_over_budget_every_handle_is_stretched_alike(self) -> None:
        """30 handles at 60 requests/min: the window is never exceeded, each is polled
        about as often as the others, and never faster than its hint."""
        clock = VirtualClock()
        sim = Simulator(clock=clock, rate_limits=True, requests_per_minute=60)
        ids = [sim.create_generation(key=KEY, processing_seconds=900) for _ in range(30)]
        async with sim.client(KEY, rate_limits=RateLimits(requests_per_minute=60)) as client:
            outcomes = [
                o async for o in k.as_completed([client.generations.attach(i) for i in ids])
            ]
        assert all(o.error is None for o in outcomes)
        assert all(r.status != 429 for r in sim.requests)
        times = sorted(t for per in polls(sim).values() for t in per)
        assert all(b - a >= 60 for a, b in zip(times, times[60:], strict=False))
        counts = [len(polls(sim)[i]) for i in ids]
        assert max(counts) - min(counts) <= 3
        planned = shared_poll_interval(8.0, load=30 / 8, budget=60 * 0.9 / 60)
        for i in ids:
            gaps = [b - a for a, b in zip(polls(sim)[i], polls(sim)[i][1:], strict=False)]
            assert min(gaps) >= 8
            # Each completion is noticed within one planned interval (+ jitter, + pacing).
            assert max(gaps) <= planned * 1.1 + 5

    async def test_within_budget_each_at_its_hint(self) -> None:
        """A few handles: each polled at its 8 s hint, plus at most 10 % jitter."""
        clock = VirtualClock()
        sim = Simulator(clock=clock, rate_limits=True)
        ids = [sim.create_generation(key=KEY, processing_seconds=120) for _ in range(3)]
        async with sim.client(KEY) as client, anyio.create_task_group() as tg:
            for i in ids:
                tg.start_soon(client.generations.attach(i).wait)
        for i in ids:
            gaps = [b - a for a, b in zip(polls(sim)[i], polls(sim)[i][1:], strict=False)]
            assert all(8 <= gap <= 8 * 1.1 + 0.01 for gap in gaps), gaps

    async def test_handles_drift_apart(self) -> None:
        """Attached together, 40 handles do not keep polling in lock-step."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        ids = [sim.create_generation(key=KEY, processing_seconds=200) for _ in range(40)]
        async with sim.client(KEY, rate_limits=None) as client:
            [o async for o in k.as_completed([client.generations.attach(i) for i in ids])]
        # The 16th poll: fifteen jittered intervals in, the drift no longer hangs on luck.
        later = sorted(polls(sim)[i][15] for i in ids)
        assert later[-1] - later[0] > 1.5  # spread over seconds, not one instant
        assert len({round(t, 1) for t in later}) > 10

    async def test_one_poll_serves_every_waiter_of_a_handle(self) -> None:
        """Three waiters on one handle cost what one does."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        gen_id = sim.create_generation(key=KEY, processing_seconds=80)
        async with sim.client(KEY) as client:
            gen = client.generations.attach(gen_id)
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(gen.wait)
        assert len(polls(sim)[gen_id]) <= 80 / 8 + 3

    async def test_nobody_waiting_nothing_polled(self) -> None:
        """A stream left after one item is not polled while others are waited on."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        idle_id = sim.create_generation(key=KEY, processing_seconds=300)
        busy_id = sim.create_generation(key=KEY, processing_seconds=200)
        async with sim.client(KEY) as client:
            updates = client.generations.attach(idle_id).progress()
            await updates.__anext__()
            await client.generations.attach(busy_id).wait()
            assert len(polls(sim)[idle_id]) == 1
            assert len(polls(sim)[busy_id]) >= 200 / 8.8
            await updates.aclose()

    async def test_a_cancelled_driver_hands_over(self) -> None:
        """Cancel whichever waiter drives: the other still learns its result."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        first = sim.create_generation(key=KEY, processing_seconds=500)
        second = sim.create_generation(key=KEY, processing_seconds=100)
        async with sim.client(KEY) as client:
            results: list[k.GenerationStatus] = []

            async def wait_second() -> None:
                results.append(await client.generations.attach(second).wait())

            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as scope:
                    tg.start_soon(wait_second)
                    await anyio.lowlevel.checkpoint()

                    async def stop() -> None:
                        await clock.sleep(30)
                        scope.cancel()

                    tg.start_soon(stop)
                    await client.generations.attach(first).wait()
            assert results and results[0].state == "completed"
            assert scope.cancelled_caught

    async def test_errors_go_only_to_their_waiters(self) -> None:
        """A 404 for one handle does not disturb the wait on another."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        good = sim.create_generation(key=KEY, processing_seconds=60)
        async with sim.client(KEY) as client:
            errors: list[Exception] = []

            async def bad() -> None:
                try:
                    await client.generations.attach("f" * 24).wait()
                except k.NotFoundError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(bad)
                status = await client.generations.attach(good).wait()
        assert status.state == "completed"
        assert len(errors) == 1

    async def test_timeouts_of_non_drivers_are_kept(self) -> None:
        """A short wait next to a long one times out on time."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        slow = sim.create_generation(key=KEY, processing_seconds=600)
        other = sim.create_generation(key=KEY, processing_seconds=600)
        async with sim.client(KEY) as client:
            ended: list[float] = []

            async def short() -> None:
                await anyio.lowlevel.checkpoint()
                with pytest.raises(k.GenerationTimeoutError):
                    await client.generations.attach(slow).wait(timeout=30)
                ended.append(clock.now())

            async with anyio.create_task_group() as tg:
                tg.start_soon(short)
                with pytest.raises(k.GenerationTimeoutError):
                    await client.generations.attach(other).wait(timeout=100)
        assert ended and ended[0] <= 30 + 1e-6
