"""One track per generation id: handles on the same id share its polls, each still answered.

Counted at the simulator, never by the SDK's word.
"""

from __future__ import annotations

import anyio
import httpx
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


class _NotFoundOnce(httpx.AsyncBaseTransport):
    """The simulator, except that the next status poll (when armed) answers Kolbo's 404."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.armed = False
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.armed and request.url.path.endswith("/status"):
            self.armed = False
            self.refused += 1
            return httpx.Response(
                404, json={"success": False, "error": "Generation not found", "code": "NOT_FOUND"}
            )
        return await self.inner.handle_async_request(request)


async def test_after_a_batch_is_left_with_break_a_new_wait_polls_its_ids_afresh() -> None:
    """A batch left with `break` listens no more: a new progress() on one of its ids gets a
    status polled now (not the batch's old one), and a 404 on it is retried by the next wait."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.plan("completed", processing_seconds=30)
    sim.plan("completed", processing_seconds=400)
    transport = _NotFoundOnce(sim.transport())
    async with sim.client(KEY, http_client=httpx.AsyncClient(transport=transport)) as client:
        fast = await client.videos.generate("fast")
        slow = await client.videos.generate("slow")
        batch = k.as_completed([fast, slow])
        async for _ in batch:
            break
        await clock.sleep(100)
        handle = client.generations.attach(slow.id)
        before = status_gets(sim, slow.id)
        async with handle.progress() as updates:
            first = await updates.__anext__()
        assert status_gets(sim, slow.id) == before + 1  # polled for this wait
        assert first.progress > 20  # 100 s on: not the status the batch saw at 0 s
        transport.armed = True
        with pytest.raises(k.NotFoundError):
            await handle.wait()
        assert (await handle.wait()).state == "completed"  # the retry polled again
        del batch


async def test_a_retry_after_a_404_polls_again_while_a_batch_listens_on_the_id() -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.plan("completed", processing_seconds=60)
    transport = _NotFoundOnce(sim.transport())
    async with sim.client(KEY, http_client=httpx.AsyncClient(transport=transport)) as client:
        gen = await client.videos.generate("a")
        outcomes: list[k.BatchOutcome[k.AsyncGeneration]] = []

        async def watch() -> None:
            async for outcome in k.as_completed([gen]):
                outcomes.append(outcome)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await clock.sleep(5)
            transport.armed = True
            waiter = client.generations.attach(gen.id)
            with pytest.raises(k.NotFoundError):
                await waiter.wait()
            assert (await waiter.wait()).state == "completed"
    assert transport.refused == 1 and len(outcomes) == 1


async def test_a_with_options_copy_polls_with_its_own_timeout() -> None:
    """Status answers take 10 s; the client allows 2 s per request, its copy 100 s: the
    copy's handle waits through the slow answers."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.plan("completed", processing_seconds=20)

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/status"):
                timeout = request.extensions["timeout"]["read"]
                if timeout is not None and timeout < 10:
                    raise httpx.ReadTimeout("slow", request=request)
                await clock.sleep(10)
            return await sim.transport().handle_async_request(request)

    async with sim.client(KEY, timeout=2, http_client=httpx.AsyncClient(transport=Slow())) as c:
        patient = c.with_options(timeout=100)
        gen = await patient.videos.generate("a")
        assert (await gen.wait(timeout=200)).state == "completed"
