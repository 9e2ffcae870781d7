"""One track per generation id: handles on the same id share its polls, each still answered.

Counted at the simulator, never by the SDK's word.
"""

from __future__ import annotations

import anyio
import pytest

import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "7a" * 20


def status_gets(sim: Simulator, generation_id: str) -> int:
    return sum(
        1
        for request in sim.requests
        if request.method == "GET" and request.path.endswith(f"/{generation_id}/status")
    )


async def test_two_handles_on_one_id_wait_on_one_poll_each_turn() -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=60)
    async with sim.client(KEY, rate_limits=None) as client:
        first, second = client.generations.attach(gid), client.generations.attach(gid)
        results: list[k.GenerationStatus] = []

        async def wait(handle: k.AsyncGeneration) -> None:
            results.append(await handle.wait())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, first)
            tg.start_soon(wait, second)
        alone = sim.clock.now()
    assert [r.state for r in results] == ["completed", "completed"]
    # One handle polls every ~8 s for 60 s: about 8 GETs. Two on one id must not double it.
    assert status_gets(sim, gid) <= 10, (status_gets(sim, gid), alone)


async def test_as_completed_with_one_id_twice_yields_both() -> None:
    """Two distinct handles on one id (attached twice) are two items: both are answered."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=20)
    other = sim.create_generation(key=KEY, processing_seconds=30)
    async with sim.client(KEY, rate_limits=None) as client:
        handles = [client.generations.attach(i) for i in (gid, other, gid)]
        outcomes = [o async for o in k.as_completed(handles)]
    assert sorted(o.index for o in outcomes) == [0, 1, 2]
    assert all(o.error is None and o.status is not None for o in outcomes)
    assert {id(o.generation) for o in outcomes} == {id(h) for h in handles}


async def test_a_finished_id_costs_no_poll_for_a_new_handle_while_one_is_held() -> None:
    """A terminal status never changes: a second handle on a finished id, while the first is
    still held, is answered without a request."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=5)
    async with sim.client(KEY, rate_limits=None) as client:
        first = client.generations.attach(gid)
        await first.wait()
        before = status_gets(sim, gid)
        again = await client.generations.attach(gid).wait()
    assert again.state == "completed"
    assert status_gets(sim, gid) == before
