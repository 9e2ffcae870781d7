"""Promises of the shared poller (`kolbo_async._poller`) that its mutation run on a57df19 (the
role handed to the longest waiter, `wait()` woken only by the end) found untested (issue 18).

On a virtual clock, counted at the simulator (`polls` and `KEY` from tests/test_poller.py).
"""

from __future__ import annotations

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

from .test_mutants3_poller import _SlowStatus
from .test_poller import KEY, polls

pytestmark = pytest.mark.anyio


async def test_a_batch_back_after_its_generation_was_set_aside_polls_it_at_its_turn() -> None:
    """A batch holds a generation it is not waiting on; another caller's stream polls it at
    1 s (next turn: one hint later, about 9 s), then a third caller's wait sets it aside
    (nobody waits on it). When the batch waits again at 3 s, the generation keeps its turn
    at about 9 s: it is not polled again at once, two seconds after its last answer."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    done = sim.create_generation(key=KEY, processing_seconds=5)
    held = sim.create_generation(key=KEY, processing_seconds=20)
    other = sim.create_generation(key=KEY, processing_seconds=300)
    async with sim.client(KEY, rate_limits=None) as client:
        first = client.generations.attach(done)
        await first.wait()
        start = clock.now()
        batch = k.as_completed([first, client.generations.attach(held)])
        assert (await batch.__anext__()).generation is first  # known: no wait, no poll
        await clock.sleep(1)
        async with client.generations.attach(held).progress() as updates:
            assert (await updates.__anext__()).state == "processing"  # polled now
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.generations.attach(other).wait)  # drives: sets `held` aside
            await clock.sleep(2)
            outcome = await batch.__anext__()
            tg.cancel_scope.cancel()
        await batch.aclose()
    assert outcome.status is not None and outcome.status.state == "completed"
    times = [t - start for t in polls(sim)[held]]
    assert times[0] == pytest.approx(1.0)
    assert 1 + 8 <= times[1] <= 1 + 8 * 1.1 + 1e-6, times


class _Scripted(_SlowStatus):
    """The simulator (status answers for `slow` ids take that long), except that the next
    polls of one id get `answers`: each `(seconds, response)` is given that many seconds
    after the request came (None: the simulator's own answer). `given` is set as the last
    of them is given."""

    def __init__(
        self,
        sim: Simulator,
        generation_id: str,
        answers: list[tuple[float, httpx.Response | None]],
        slow: dict[str, float],
    ) -> None:
        super().__init__(sim, slow)
        self.path = f"/{generation_id}/status"
        self.answers = answers
        self.given = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.answers and request.url.path.endswith(self.path):
            seconds, response = self.answers.pop(0)
            if response is None:
                response = await self.inner.handle_async_request(request)
            await self.sim.clock.sleep(seconds)
            if not self.answers:
                self.given.set()
            return response
        return await super().handle_async_request(request)


def _not_found() -> httpx.Response:
    return httpx.Response(404, json={"success": False, "error": "Generation not found"})


@pytest.mark.parametrize("seen", [False, True], ids=["first-poll", "after-a-status"])
async def test_a_wait_told_of_a_404_that_a_new_wait_retries_before_it_reads_it_gets_the_end(
    seen: bool,
) -> None:
    """A `wait()` drives; the poll of its generation is answered 404 (on its first poll, or
    after a status that is not the end) while another caller's poll is on the wire, so the
    waiter's turn ends with a grace second. Within that second a new `wait()` on the same id
    starts, which polls it again (a new wait retries after an error), and finds it. The first
    waiter, which had not read the 404 yet, waits for that retry too: both get the
    completed status. It neither returns the status before the 404 (a `wait()` returns only
    an end) nor breaks on the status it never had."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=20)
    slow = sim.create_generation(key=KEY, processing_seconds=300)
    answers: list[tuple[float, httpx.Response | None]] = [(5.0, _not_found())]
    if seen:
        answers.insert(0, (0.0, None))  # "processing", then the next poll gets the 404
    script = _Scripted(sim, gid, answers, slow={slow: 30})
    http = httpx.AsyncClient(transport=script)
    results: dict[str, k.GenerationStatus] = {}
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:

        async def wait(name: str) -> None:
            results[name] = await client.generations.attach(gid).wait()

        async def wait_again() -> None:
            await script.given.wait()  # the 404 is given: its waiter ends its turn
            await clock.sleep(0.5)  # within the grace second of the slow poll
            await wait("second")

        with anyio.fail_after(30):  # real seconds: a hang is a failure, not a stuck run
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, "first")  # the first to wait drives
                await anyio.lowlevel.checkpoint()
                tg.start_soon(client.generations.attach(slow).wait)  # answers take 30 s
                tg.start_soon(wait_again)
                while len(results) < 2:
                    await clock.sleep(1)
                tg.cancel_scope.cancel()
    assert {name: status.state for name, status in results.items()} == {
        "first": "completed",
        "second": "completed",
    }


async def test_a_stream_cancelled_as_its_first_status_came_polls_afresh_when_iterated_again(
) -> None:
    """A `progress()` stream drives; its first status comes (at 2 s: a slow answer) while
    another caller's poll is on the wire, so its turn ends with a grace second, and within
    it the stream's wait is cancelled. The stream may be iterated again (a cancellation does
    not end it): at 5 s its first item is a status polled then, not the one from before the
    cancellation handed back with no poll."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=100)
    slow = sim.create_generation(key=KEY, processing_seconds=300)
    script = _Scripted(sim, gid, [(2.0, None)], slow={slow: 30})
    http = httpx.AsyncClient(transport=script)
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:
        updates = client.generations.attach(gid).progress()
        scope = anyio.CancelScope()

        async def first_item() -> None:
            with scope:
                await updates.__anext__()

        async def cancel_it() -> None:
            await script.given.wait()  # its status is given: its turn ends
            await clock.sleep(0.5)  # within the grace second of the slow poll
            scope.cancel()

        with anyio.fail_after(30):  # real seconds: a hang is a failure, not a stuck run
            async with anyio.create_task_group() as tg:
                tg.start_soon(first_item)  # the first to wait drives
                await anyio.lowlevel.checkpoint()
                tg.start_soon(client.generations.attach(slow).wait)  # answers take 30 s
                tg.start_soon(cancel_it)
                await clock.sleep(5)
                assert scope.cancelled_caught
                again = await updates.__anext__()
                tg.cancel_scope.cancel()
        await updates.aclose()
    assert polls(sim)[gid] == [0.0, 5.0]
    # Pending for 3 s, then processing: the status before the cancellation said pending.
    assert (again.state, again.progress) == sim.generations[gid].state_at(5.0)
    assert again.state == "processing"


async def test_a_wait_starting_in_a_departing_drivers_grace_second_times_out_on_time() -> None:
    """A `progress()` stream drives; its first answer comes at 5 s while another caller's
    poll is on the wire (30 s answers), so its turn ends with a grace second (5 to 6 s).
    A `wait(timeout=0.3)` that starts at 5.2 s, inside that second, raises at 5.5 s, not
    when the grace second is over."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    stream, slow, timed = (sim.create_generation(key=KEY, processing_seconds=300) for _ in range(3))
    script = _Scripted(sim, stream, [(5.0, None)], slow={slow: 30})
    http = httpx.AsyncClient(transport=script)
    raised: list[float] = []
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:

        async def follow() -> None:
            async with client.generations.attach(stream).progress() as updates:
                async for _ in updates:
                    pass

        async def wait_timed() -> None:
            await script.given.wait()  # the stream's answer: its turn ends
            await clock.sleep(0.2)
            with pytest.raises(k.GenerationTimeoutError):
                await client.generations.attach(timed).wait(timeout=0.3)
            raised.append(clock.now())

        with anyio.fail_after(30):  # real seconds: a hang is a failure, not a stuck run
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)  # the first to wait drives
                await anyio.lowlevel.checkpoint()
                tg.start_soon(client.generations.attach(slow).wait)
                tg.start_soon(wait_timed)
                await clock.sleep(20)
                tg.cancel_scope.cancel()
    assert raised == [pytest.approx(5.5)]


async def test_a_driving_wait_times_out_cleanly_with_every_request_slot_taken_by_others() -> None:
    """A client allows 2 requests at once; a `wait(timeout=5)` drives while two other
    callers' polls (30 s answers) hold both slots. At 5 s it raises `GenerationTimeoutError`
    (nothing else), and the polls it cuts short are sent again for their callers."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    mine = sim.create_generation(key=KEY, processing_seconds=300)
    slow = [sim.create_generation(key=KEY, processing_seconds=300) for _ in range(2)]
    http = httpx.AsyncClient(transport=_SlowStatus(sim, dict.fromkeys(slow, 30)))
    timed_out: list[float] = []
    async with sim.client(
        KEY, rate_limits=None, http_client=http, max_concurrent_requests=2
    ) as client:

        async def wait_mine() -> None:
            with pytest.raises(k.GenerationTimeoutError):
                await client.generations.attach(mine).wait(timeout=5)
            timed_out.append(clock.now())

        with anyio.fail_after(30):  # real seconds: a hang is a failure, not a stuck run
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_mine)  # the first to wait drives
                await anyio.lowlevel.checkpoint()
                for gid in slow:
                    tg.start_soon(client.generations.attach(gid).wait)
                await clock.sleep(10)
                tg.cancel_scope.cancel()
    assert timed_out == [5.0]
    for gid in slow:
        assert polls(sim)[gid][:2] == [0.0, 5.0]  # cut short at 5 s, sent again at once
