"""The simulator's clocks: a virtual one that jumps, a scaled one that runs fast."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from kolbo_async.testing import ScaledClock, Simulator, VirtualClock


class TestVirtualClockSync:
    def test_advance_and_now(self) -> None:
        """advance() moves time forward, never backwards."""
        clock = VirtualClock(start=10)
        clock.advance(5)
        clock.advance(-3)
        assert clock.now() == 15

    def test_simulator_refuses_a_speed_with_a_virtual_clock(self) -> None:
        """A virtual clock runs at speed 1; asking for another speed is an error."""
        with pytest.raises(ValueError, match="speed"):
            Simulator(clock=VirtualClock(), speed=10)


@pytest.mark.anyio
class TestVirtualClock:
    async def test_sleep_jumps(self) -> None:
        """An hour of sleeping takes no real time."""
        clock = VirtualClock()
        started = time.monotonic()
        for _ in range(60):
            await clock.sleep(60)
        assert clock.now() == 3600
        assert time.monotonic() - started < 1

    async def test_sleepers_wake_in_deadline_order(self) -> None:
        """Concurrent sleepers wake in order of their deadlines, at those times."""
        clock = VirtualClock()
        woke: list[tuple[str, float]] = []

        async def nap(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(nap, "late", 30)
            tg.start_soon(nap, "early", 10)
            tg.start_soon(nap, "middle", 20)
            tg.start_soon(nap, "also-middle", 20)
        # Equal deadlines wake in the order they went to sleep, which trio randomises.
        assert [t for _, t in woke] == [10, 20, 20, 30]
        assert [woke[0][0], woke[3][0]] == ["early", "late"]

    async def test_ready_tasks_run_before_time_jumps(self) -> None:
        """Work that needs no sleep finishes before the sleeper's deadline arrives."""
        clock = VirtualClock()
        seen: list[float] = []

        async def busy() -> None:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            seen.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep, 100)
            tg.start_soon(busy)
        assert seen == [0]

    async def test_cancelled_head_sleeper_hands_over(self) -> None:
        """A sleeper cancelled while first in line hands over to the next."""
        clock = VirtualClock()
        done: list[float] = []

        async def nap() -> None:
            await clock.sleep(50)
            done.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(nap)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await clock.sleep(5)
        assert done == [50]

    async def test_cancelled_waiting_sleeper_is_forgotten(self) -> None:
        """A sleeper cancelled while waiting its turn neither wakes nor blocks anyone."""
        clock = VirtualClock()
        done: list[str] = []

        async def nap(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            done.append(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(nap, "first", 10)
            async with anyio.create_task_group() as inner:
                inner.start_soon(nap, "cancelled", 20)
                await anyio.lowlevel.checkpoint()  # now it waits its turn on an event
                inner.cancel_scope.cancel()
            tg.start_soon(nap, "last", 30)
        assert done == ["first", "last"]

    async def test_many_tasks(self) -> None:
        """Hundreds of sleepers all wake, in order, with no deadlock."""
        clock = VirtualClock()
        woke: list[float] = []

        async def nap(seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append(clock.now())

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(nap, float((i * 37) % 101))
        assert woke == sorted(woke)
        assert len(woke) == 300


class TestScaledClock:
    def test_speed_scales_real_time(self) -> None:
        """Simulated seconds are real seconds times the speed."""
        clock = ScaledClock(speed=1000)
        before = clock.now()
        time.sleep(0.02)
        assert clock.now() - before >= 20

    def test_readable_from_threads(self) -> None:
        """now() works from a thread with no event loop."""
        clock = ScaledClock(speed=2)
        seen: list[float] = []
        thread = threading.Thread(target=lambda: seen.append(clock.now()))
        thread.start()
        thread.join()
        assert seen[0] >= 0

    def test_rejects_non_positive_speed(self) -> None:
        """A speed of zero or less makes no sense."""
        with pytest.raises(ValueError, match="speed"):
            ScaledClock(speed=0)

    @pytest.mark.anyio
    async def test_sleep_waits_the_real_equivalent(self) -> None:
        """Sleeping 10 simulated seconds at speed 500 takes about 20 ms."""
        clock = ScaledClock(speed=500)
        before = clock.now()
        await clock.sleep(10)
        assert clock.now() - before >= 10
