"""The simulator's clocks: a virtual one that jumps when all is still, a scaled one that runs fast."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anyio
import pytest

from kolbo_async.testing import ScaledClock, VirtualClock
from kolbo_async.testing._clock import wait_all_tasks_blocked


class TestVirtualClockSync:
    def test_advance_and_now(self) -> None:
        """advance() moves time forward, never backwards."""
        clock = VirtualClock(start=10)
        clock.advance(5)
        clock.advance(-3)
        assert clock.now() == 15



@pytest.mark.anyio
class TestVirtualClock:
    async def test_sleep_jumps(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An hour of sleeping takes no real time: no real sleep is ever asked for."""
        asked: list[float] = []
        for module in (anyio, asyncio, time):
            real = module.sleep

            def recorded(delay: float, *args: Any, real: Any = real) -> Any:
                asked.append(delay)
                return real(0, *args)

            monkeypatch.setattr(module, "sleep", recorded)
        clock = VirtualClock()
        for _ in range(60):
            await clock.sleep(60)
        assert clock.now() == 3600
        assert [delay for delay in asked if delay > 0] == []

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

    async def test_a_long_chain_of_steps_finishes_before_time_jumps(self) -> None:
        """However many steps ready work takes, it finishes before time moves."""
        clock = VirtualClock()
        seen: list[float] = []

        async def busy() -> None:
            for _ in range(200):
                await anyio.lowlevel.checkpoint()
            seen.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep, 100)
            tg.start_soon(busy)
        assert seen == [0]

    async def test_an_overtaken_sleeper_waits_for_the_earlier_one_to_settle(self) -> None:
        """A later sleeper never jumps while an earlier one's task is still at work."""
        for _ in range(20):  # trio wakes idle waiters in a random order: try it often
            clock = VirtualClock()
            ticks: list[float] = []

            async def ticker(clock: VirtualClock, ticks: list[float]) -> None:
                for _ in range(5):
                    await clock.sleep(0.05)
                    for _ in range(20):
                        await anyio.lowlevel.checkpoint()
                    ticks.append(round(clock.now(), 2))

            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker, clock, ticks)
                await clock.sleep(0.3)
                assert ticks == [0.05, 0.1, 0.15, 0.2, 0.25]

    async def test_a_reached_deadline_wakes_without_waiting_for_stillness(self) -> None:
        """sleep(0), or a deadline already passed, returns while others keep working."""
        clock = VirtualClock()
        stop = anyio.Event()

        async def spin() -> None:
            while not stop.is_set():
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(spin)
            await clock.sleep(0)
            stop.set()
        assert clock.now() == 0

    async def test_tasks_on_real_timers_count_as_blocked(self) -> None:
        """A task waiting on a real timer does not hold virtual time back."""
        clock = VirtualClock()
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 3600)
            await clock.sleep(5)
            tg.cancel_scope.cancel()
        assert clock.now() == 5

    async def test_two_clocks_in_one_loop(self) -> None:
        """Sleepers of two clocks in one loop both wake (neither keeps the other busy)."""
        first, second = VirtualClock(), VirtualClock(start=100)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.sleep, 10)
            tg.start_soon(second.sleep, 10)
            await first.sleep(20)
        assert (first.now(), second.now()) == (20, 110)


@pytest.mark.anyio
class TestWaitAllTasksBlocked:
    async def test_returns_once_the_others_block(self) -> None:
        """It returns only after every other task reached a blocking wait."""
        done: list[str] = []
        gate = anyio.Event()

        async def worker() -> None:
            for _ in range(50):
                await anyio.lowlevel.checkpoint()
            done.append("worked")
            await gate.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await wait_all_tasks_blocked()
            assert done == ["worked"]
            gate.set()

    async def test_waiters_take_turns(self) -> None:
        """Several waiters at once all return; one watching at a time keeps none stuck."""
        returned: list[int] = []

        async def wait(i: int) -> None:
            await wait_all_tasks_blocked()
            returned.append(i)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(wait, i)
        assert sorted(returned) == [0, 1, 2, 3, 4]

    async def test_a_cancelled_waiter_hands_its_turn_on(self) -> None:
        """A waiter cancelled while watching or queued does not stop the others."""
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await wait_all_tasks_blocked()
                tg.start_soon(wait_all_tasks_blocked)
                await wait_all_tasks_blocked()


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
