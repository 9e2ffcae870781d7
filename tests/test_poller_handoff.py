"""Who drives next: the role goes to the waiter that has waited longest, never straight back.

A driver whose own news has come (a `progress()` update) cuts the polls still on the wire
after a grace second. If the same caller, waiting again at once, took the role back, the poll
of a generation whose status answers are slow would be cut at every one of its updates and
never land. These tests count the polls the simulator received.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from kolbo_async._poller import Listener, Poller
from kolbo_async.testing import Simulator, VirtualClock

from .test_mutants3_poller import _SlowStatus
from .test_poller import KEY, polls

pytestmark = pytest.mark.anyio


async def test_two_streams_with_slow_answers_both_keep_learning() -> None:
    """Two `progress()` streams whose status answers take 12 s each, both changing at every
    poll: each keeps getting updates and ends about when its generation does, rather than
    one stream starving while the other's updates keep cutting its polls short."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    ids = [sim.create_generation(key=KEY, processing_seconds=120) for _ in range(2)]
    http = httpx.AsyncClient(transport=_SlowStatus(sim, dict.fromkeys(ids, 12)))
    seen: dict[str, list[float]] = {gid: [] for gid in ids}
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:

        async def follow(gid: str) -> None:
            async with client.generations.attach(gid).progress() as updates:
                async for _ in updates:
                    seen[gid].append(clock.now())

        with anyio.fail_after(30):  # real seconds: a hang is a failure, not a stuck run
            async with anyio.create_task_group() as tg:
                for gid in ids:
                    tg.start_soon(follow, gid)
    for gid in ids:
        assert len(seen[gid]) >= 5, seen
        # Its end (120 s and a moment pending) shows in the answer (12 s) to the next poll
        # (8.8 s apart at most), or the one after when that poll is cut at the other's update.
        assert seen[gid][-1] < 120 + 3 * (8.8 + 12), seen
        # Cut polls are sent again; without the hand-off they are most of the polls.
        assert len(polls(sim)[gid]) <= len(seen[gid]) * 2, (polls(sim)[gid], seen)


async def test_a_heir_woken_for_its_own_reason_passes_the_role_on() -> None:
    """The driver's wait ends and hands the role to the longest waiter (a batch's, say),
    whose owner pokes it before it runs again (the batch has an outcome to give): it returns
    without driving and the role goes on to the next waiter, which learns its end (it would
    wait forever otherwise). The poke comes with no checkpoint after the hand-off, which
    only the poller's own listener API can arrange deterministically."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    first, heirs, last = (
        sim.create_generation(key=KEY, processing_seconds=s) for s in (20, 90, 60)
    )
    ended: list[str] = []
    async with sim.client(KEY, rate_limits=None) as client:
        poller: Poller = client._poller  # type: ignore[attr-defined]
        heir = Listener(every=False)
        poller.watch(heir, client.generations.attach(heirs)._tracked(), fresh=True)

        async def wait_first() -> None:
            await client.generations.attach(first).wait()
            ended.append(first)
            poller.poke(heir)  # no checkpoint since the role was handed over

        async def wait_heir() -> None:
            await poller.wait(heir, None)
            ended.append("heir poked" if heir.woken else "heir told")

        async def wait_last() -> None:
            await client.generations.attach(last).wait()
            ended.append(last)

        with anyio.fail_after(10):  # real seconds: a hang is a failure, not a stuck run
            async with anyio.create_task_group() as tg:
                for waiter in (wait_first, wait_heir, wait_last):  # the first to wait drives
                    tg.start_soon(waiter)
                    await anyio.lowlevel.checkpoint()
    assert ended == [first, "heir poked", last]
    assert clock.now() < 60 + 8.8 + 1


async def test_a_stream_between_updates_does_not_take_the_role_back() -> None:
    """A `progress()` stream drives; another caller waits on a generation whose status
    answers take 30 s. At each update the stream's turn ends and the other caller's poll on
    the wire is cut: the other caller must drive next (its poll sent again then lands), not
    the stream, which asks again at once and would cut it at every update."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    busy = sim.create_generation(key=KEY, processing_seconds=200)
    slow = sim.create_generation(key=KEY, processing_seconds=10)
    http = httpx.AsyncClient(transport=_SlowStatus(sim, {slow: 30}))
    learnt: list[float] = []
    async with (
        sim.client(KEY, rate_limits=None, http_client=http) as client,
        anyio.create_task_group() as tg,
    ):

        async def stream_busy() -> None:
            async with client.generations.attach(busy).progress() as updates:
                async for _ in updates:
                    pass

        tg.start_soon(stream_busy)  # the first to wait drives
        await anyio.lowlevel.checkpoint()
        status = await client.generations.attach(slow).wait()
        assert status.state == "completed"
        learnt.append(clock.now())
        tg.cancel_scope.cancel()
    # Its first poll is cut at the stream's first update (polled at once, then ~8 s), sent
    # again, and lands 30 s later; then one more poll finds it done.
    assert len(learnt) == 1
    assert learnt[0] < 8.8 + 1 + 2 * 30 + 8.8 + 1, polls(sim)[slow]
    assert len(polls(sim)[slow]) <= 3, polls(sim)[slow]
