"""Promises of `kolbo_async._batch` that its mutation run left untested: what another caller
does on a generation a batch holds (a retry after a 404, a wait with a timeout through a 429)
never costs the batch an outcome nor changes that caller's answer, and a batch that drives
the polls does not cut other polls on the wire short at every change of status.

On a virtual clock, counted at the simulator (`polls` and `KEY` from tests/test_poller.py);
refused, rate-limited or slow answers come from a small transport around the simulator's.
"""

from __future__ import annotations

import itertools

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

from .test_poller import KEY, polls

pytestmark = pytest.mark.anyio


class _Scripted(httpx.AsyncBaseTransport):
    """The simulator, except for the status polls of the ids named: `not_found` answers the
    next one with Kolbo's 404, `rate_limited` the next one with a 429 asking for that many
    seconds (neither reaches the simulator), and `slow` answers take that many seconds to
    arrive after the simulator has answered."""

    def __init__(self, sim: Simulator) -> None:
        self.clock = sim.clock
        self.inner = sim.transport()
        self.not_found: set[str] = set()
        self.rate_limited: dict[str, float] = {}
        self.slow: dict[str, float] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        gid = parts[-2] if parts[-1] == "status" else None
        if gid in self.not_found:
            self.not_found.discard(gid)
            return httpx.Response(
                404, json={"success": False, "error": "Generation not found", "code": "NOT_FOUND"}
            )
        if gid is not None and gid in self.rate_limited:
            seconds = self.rate_limited.pop(gid)
            return httpx.Response(
                429,
                headers={"retry-after": str(seconds)},
                json={"status": False, "message": "Too many requests, please try again later"},
            )
        response = await self.inner.handle_async_request(request)
        if gid is not None and gid in self.slow:
            await self.clock.sleep(self.slow[gid])
        return response


def _client(sim: Simulator, transport: _Scripted) -> k.AsyncKolbo:
    return sim.client(KEY, rate_limits=None, http_client=httpx.AsyncClient(transport=transport))


async def test_a_retry_after_a_404_does_not_cost_the_batch_an_outcome_ended_with_it() -> None:
    """`as_completed` over two generations: the first poll of one answers 404 while the
    other's answer, on its way, says it has ended. Meanwhile another part of the program
    waits on the 404'd id again (which clears the 404: it is polled afresh). The batch still
    gives the ended one's outcome, and later the other's: every item comes out."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    retried = sim.create_generation(key=KEY, processing_seconds=60)
    ended = sim.create_generation(key=KEY, processing_seconds=5)
    await clock.sleep(20)  # `ended` has ended before anyone asks
    transport = _Scripted(sim)
    transport.not_found.add(retried)
    transport.slow[ended] = 0.5  # its answer lands half a second after the 404
    outcomes: list[k.BatchOutcome[k.AsyncGeneration]] = []
    waited: list[k.GenerationStatus] = []
    async with _client(sim, transport) as client:
        handles = [client.generations.attach(gid) for gid in (retried, ended)]

        async def collect() -> None:
            async for outcome in k.as_completed(handles):
                outcomes.append(outcome)

        async def retry() -> None:
            await clock.sleep(0.25)  # after the 404, before the other answer lands
            waited.append(await client.generations.attach(retried).wait())

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            tg.start_soon(retry)
            await clock.sleep(1000)  # on the virtual clock: a batch left hanging is cut here
            tg.cancel_scope.cancel()
    assert not transport.not_found  # the 404 was answered
    assert [s.state for s in waited] == ["completed"]
    assert [o.index for o in outcomes] == [1, 0], outcomes
    for outcome in outcomes:
        assert outcome.error is None
        assert outcome.status is not None and outcome.status.state == "completed"


async def test_a_wait_timing_out_during_a_short_429_gets_a_timeout_when_a_batch_joins() -> None:
    """A wait with a 12 s timeout hears a 429 (at its second poll) asking for 2 s, less than
    it has left, and the retry's answer is slow (10 s on the way). An `as_completed` over
    the same generation, started meanwhile, changes nothing for that wait: when its timeout
    passes it gets `GenerationTimeoutError` (the server never asked to wait past it), not
    `RateLimitError`. (Another generation's wait, started first, drives the polls.)"""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    other = sim.create_generation(key=KEY, processing_seconds=300)
    gid = sim.create_generation(key=KEY, processing_seconds=60)
    transport = _Scripted(sim)
    errors: list[tuple[float, BaseException]] = []
    outcomes: list[k.BatchOutcome[k.AsyncGeneration]] = []
    async with _client(sim, transport) as client:

        async def wait_with_timeout() -> None:
            try:
                await client.generations.attach(gid).wait(timeout=12)
            except (k.GenerationTimeoutError, k.RateLimitError) as error:
                errors.append((clock.now(), error))

        async def collect() -> None:
            async for outcome in k.as_completed([client.generations.attach(gid)]):
                outcomes.append(outcome)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client.generations.attach(other).wait)  # the driver
            await clock.sleep(1)
            start = clock.now()
            tg.start_soon(wait_with_timeout)  # polled at once: an answer
            await clock.sleep(1)
            transport.rate_limited[gid] = 2  # its next poll, at its turn: a 429 for 2 s
            transport.slow[gid] = 10  # and the retry takes 10 s to answer
            while gid in transport.rate_limited:
                await clock.sleep(0.5)
            assert clock.now() - start < 10  # the 429 came; its retry is not yet due
            tg.start_soon(collect)
            while not outcomes:
                await clock.sleep(1)
            tg.cancel_scope.cancel()
    [(ended, error)] = errors
    assert isinstance(error, k.GenerationTimeoutError), repr(error)
    assert ended == start + 12
    # The retry was on the wire when the timeout passed (sent after the 429's 2 s).
    assert any(start + 8 < t < start + 12 for t in polls(sim)[gid]), polls(sim)[gid]
    assert outcomes[0].status is not None and outcomes[0].status.state == "completed"


async def test_a_batch_lets_a_slow_poll_land_while_other_items_only_progress() -> None:
    """`as_completed` over two running generations, one whose status answers take 3 s to
    arrive: the other's quick answers (still processing) do not make the batch cut the slow
    poll short and send it again. Each of the slow generation's status requests is let
    finish before the next is sent, and both outcomes come out."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    quick = sim.create_generation(key=KEY, processing_seconds=40)
    slow = sim.create_generation(key=KEY, processing_seconds=40)
    transport = _Scripted(sim)
    transport.slow[slow] = 3
    async with _client(sim, transport) as client:
        handles = [client.generations.attach(gid) for gid in (quick, slow)]
        outcomes = [o async for o in k.as_completed(handles)]
    assert sorted(o.index for o in outcomes) == [0, 1]
    assert all(o.status is not None and o.status.state == "completed" for o in outcomes)
    times = polls(sim)[slow]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 3 for gap in gaps), times
