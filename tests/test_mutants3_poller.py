"""More promises of the shared poller (`kolbo_async._poller`) that its full mutation run found
untested (issue 18): a batch between outcomes costs no poll and is polled at once when
iterated again; a batch's submitter wakes its caller; polls keep to 90 % of the request
rate and to each generation's hint; a stream joining a live wait costs no poll; deadlines,
Retry-After and transient failures end or delay exactly the waits they concern; a caller
done waiting gives others' polls in flight at most a grace second; hooks hear only changes.

On a virtual clock, counted at the simulator (`polls` and `KEY` from tests/test_poller.py);
slow or refused answers come from small transports around the simulator's.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import pytest

import kolbo_async as k
from kolbo_async.testing import Simulator, VirtualClock

from .test_poller import KEY, polls

pytestmark = pytest.mark.anyio


async def a_batch_between_outcomes(
    sim: Simulator, client: k.AsyncKolbo
) -> tuple[k.AsyncBatch, str]:
    """A batch of a finished generation and one of 50 s (its id returned), the first outcome
    taken (from the finished track, with no wait): nobody waits on the second for now."""
    done = sim.create_generation(key=KEY, processing_seconds=5)
    held = sim.create_generation(key=KEY, processing_seconds=50)
    first = client.generations.attach(done)
    await first.wait()
    batch = k.as_completed([first, client.generations.attach(held)])
    outcome = await batch.__anext__()
    assert outcome.generation is first
    return batch, held


async def test_a_batch_between_outcomes_costs_no_poll_and_is_polled_at_once_when_iterated(
) -> None:
    """A batch whose first outcome came without waiting (a finished handle) is not waiting
    while its caller does something else: another wait sends none of its polls. Iterated
    again, its generation is polled at once (the driver of that other wait is woken for it),
    not at that driver's next turn."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    other = sim.create_generation(key=KEY, processing_seconds=300)
    async with sim.client(KEY, rate_limits=None) as client:
        batch, held = await a_batch_between_outcomes(sim, client)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.generations.attach(other).wait)
            await clock.sleep(100)
            assert polls(sim)[held] == []  # nobody waited on it
            asked = clock.now()
            last = await batch.__anext__()
            answered = clock.now()
            tg.cancel_scope.cancel()
        await batch.aclose()
    assert last.status is not None and last.status.state == "completed"
    assert polls(sim)[held] == [asked]
    assert answered - asked < 0.5


async def test_a_batch_caller_hears_of_a_refused_post_at_once_while_others_run() -> None:
    """The second POST of a batch is refused (no credits) while the first generation runs
    for 1000 s: the caller waiting on the batch gets that outcome when the refusal comes,
    not at the next poll, nor when the running generation ends."""
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=1000)
    limits = k.RateLimits(generations_per_minute=1)
    async with sim.client(KEY, rate_limits=limits) as client:
        requests = [k.TextToVideo("runs"), k.TextToVideo("refused")]
        batch = client.videos.generate_many(requests)

        async def refuse_the_next_post() -> None:
            await clock.sleep(10)  # after the first POST, before the second (60 s later)
            sim.inject("generate", "insufficient_credits")

        async with anyio.create_task_group() as tg:
            tg.start_soon(refuse_the_next_post)
            outcome = await batch.__anext__()
        await batch.aclose()
    refused = [r.time for r in sim.requests if r.method == "POST" and r.status == 400]
    assert outcome.index == 1 and isinstance(outcome.error, k.InsufficientCreditsError)
    assert len(refused) == 1 and 50 < refused[0] < 100
    assert clock.now() - refused[0] < 0.5


async def test_polls_past_a_burst_of_four_go_at_ninety_percent_of_the_request_rate() -> None:
    """20 generations waited on at once at 60 requests a minute: the first 5 polls go
    together (a burst of 4 on top of the first), then one every 1 / 0.9 s: the polls'
    share of the budget is 90 %, exactly."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    ids = [sim.create_generation(key=KEY, processing_seconds=5_000) for _ in range(20)]
    limits = k.RateLimits(requests_per_minute=60)
    async with sim.client(KEY, rate_limits=limits) as client, anyio.create_task_group() as tg:
        start = clock.now()
        for gid in ids:
            tg.start_soon(client.generations.attach(gid).wait, None)
        await clock.sleep(30)
        tg.cancel_scope.cancel()
    first = sorted(times[0] - start for times in polls(sim).values())
    assert len(first) == 20
    assert first[:5] == [0.0] * 5
    assert first[5:] == pytest.approx([n / 0.9 for n in range(1, 16)], abs=1e-6)


async def test_an_image_without_a_hint_in_its_status_is_polled_at_its_submissions_hint() -> None:
    """An image's submission asks for a poll every 3 s and its statuses say nothing: it is
    polled every 3 s (+ at most 10 % jitter), not at the default 8 s."""
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=30)
    async with sim.client(KEY, rate_limits=None) as client:
        gen = await client.images.generate("a lighthouse")
        assert gen.submission is not None and gen.submission.poll_interval_hint == 3
        assert (await gen.wait()).state == "completed"
    times = polls(sim)[gen.id]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 5
    assert all(3 <= gap <= 3 * 1.1 + 1e-6 for gap in gaps), gaps


async def test_a_batchs_new_generation_is_first_polled_one_hint_after_its_post() -> None:
    """A generation a batch just submitted is pending: its first poll waits for the hint (8
    s), neither sooner nor later, also while the batch's next POST waits a minute for the
    generation window (the batch's caller then sleeps with nothing else planned)."""
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=1000)
    limits = k.RateLimits(generations_per_minute=1)
    async with sim.client(KEY, rate_limits=limits) as client:
        batch = client.videos.generate_many([k.TextToVideo("a"), k.TextToVideo("b")])
        async with anyio.create_task_group() as tg:
            tg.start_soon(batch.__anext__)
            await clock.sleep(30)
            tg.cancel_scope.cancel()
        await batch.aclose()
    posts = [r.time for r in sim.requests if r.method == "POST"]
    assert posts == [0.0]
    (first,) = [times[0] for times in polls(sim).values()]
    assert first == pytest.approx(posts[0] + 8.0)


async def test_a_new_stream_on_an_id_another_caller_waits_on_starts_with_no_poll_of_its_own(
) -> None:
    """While one caller waits on a generation (and its polls run), a new `progress()` on it
    starts with the latest status those polls found: as fresh as a poll, and free."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=100)
    async with sim.client(KEY, rate_limits=None) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.generations.attach(gid).wait)
        await clock.sleep(30)
        before = polls(sim)[gid]
        async with client.generations.attach(gid).progress() as updates:
            first = await updates.__anext__()
        assert polls(sim)[gid] == before
        assert first.state == "processing" and first.progress > 0
        tg.cancel_scope.cancel()


async def test_asked_for_its_next_item_at_its_deadline_a_stream_times_out_with_no_poll(
) -> None:
    """A stream asked for its next item when its timeout has run out (to the instant) raises
    `GenerationTimeoutError` at once and sends nothing, while another caller drives."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=100)
    busy = sim.create_generation(key=KEY, processing_seconds=100)
    async with sim.client(KEY, rate_limits=None) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.generations.attach(busy).wait)
        await clock.sleep(1)
        updates = client.generations.attach(gid).progress(timeout=10)
        start = clock.now()
        await updates.__anext__()
        await clock.sleep(10)
        assert clock.now() == start + 10
        with pytest.raises(k.GenerationTimeoutError):
            await updates.__anext__()
        assert clock.now() == start + 10
        await clock.sleep(20)
        assert polls(sim)[gid] == [start]
        tg.cancel_scope.cancel()


async def test_a_poll_in_flight_when_a_batch_comes_back_is_not_sent_twice() -> None:
    """A batch's generation left unpolled between its outcomes is being polled for another
    caller (a slow answer) when the batch is iterated again: it waits for that poll rather
    than sending a second one."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    other = sim.create_generation(key=KEY, processing_seconds=60)
    async with sim.client(KEY, rate_limits=None) as client:
        batch, held = await a_batch_between_outcomes(sim, client)
        await client.generations.attach(other).wait()  # its polls leave `held` aside
        assert polls(sim)[held] == []
        sim.inject("status", "slow")  # answered after 5 s
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.generations.attach(held).wait)
            await clock.sleep(1)
            last = await batch.__anext__()
        await batch.aclose()
    assert last.status is not None and last.status.state == "completed"
    assert len(polls(sim)[held]) == 1


@pytest.mark.parametrize("waited", [False, True])
async def test_a_429_on_an_id_a_batch_holds_is_retried_for_the_caller_waiting_on_it(
    waited: bool,
) -> None:
    """A short Retry-After on a poll is slept and retried for the handle waiting on it, also
    when a batch holds the same id between its outcomes (the batch has no deadline of its
    own to compare with the server's), whether or not the batch ever waited."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    done = sim.create_generation(key=KEY, processing_seconds=5)
    held = sim.create_generation(key=KEY, processing_seconds=50)
    async with sim.client(KEY, rate_limits=None) as client:
        first = client.generations.attach(done)
        if not waited:
            await first.wait()  # then the batch's first outcome needs no wait
        batch = k.as_completed([first, client.generations.attach(held)])
        assert (await batch.__anext__()).generation is first
        sim.inject("status", "429")
        before = len(sim.requests)
        status = await client.generations.attach(held).wait(timeout=150)
        await batch.aclose()
    assert status.state == "completed"
    answers = [r.status for r in sim.requests[before:] if r.path.endswith(f"/{held}/status")]
    assert answers[0] == 429 and answers[-1] == 200


async def test_a_waiter_cancelled_as_it_is_handed_the_polling_hands_it_on() -> None:
    """The caller that drove the polls is done, and the waiter it hands the polling to is
    cancelled as it takes over: the next waiter takes over and still gets its outcome.
    (The two waiters are batches, which wake only for an end: no news reorders them.)"""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    driver = sim.create_generation(key=KEY, processing_seconds=5)
    cancelled = sim.create_generation(key=KEY, processing_seconds=500)
    last = sim.create_generation(key=KEY, processing_seconds=30)
    outcomes: list[k.BatchOutcome[k.AsyncGeneration]] = []
    async with sim.client(KEY, rate_limits=None) as client:
        scope = anyio.CancelScope()

        async def drive() -> None:
            await client.generations.attach(driver).wait()
            scope.cancel()  # before the waiter it just handed the polling to runs

        async def first_outcome(gid: str) -> None:
            async with k.as_completed([client.generations.attach(gid)]) as batch:
                outcomes.append(await batch.__anext__())

        async def cancel_me() -> None:
            with scope:
                await first_outcome(cancelled)

        with anyio.fail_after(30):  # real seconds: only a waiter left asleep takes them
            async with anyio.create_task_group() as tg:
                tg.start_soon(drive)
                await clock.sleep(1)  # its first poll done: it drives, the others wait
                tg.start_soon(cancel_me)
                await anyio.lowlevel.checkpoint()
                tg.start_soon(first_outcome, last)
    assert scope.cancelled_caught
    assert [o.generation.id for o in outcomes if o.generation] == [last]
    assert all(o.error is None for o in outcomes)
    assert clock.now() < 30 + 2 * 8.8


class _SlowStatus(httpx.AsyncBaseTransport):
    """The simulator, whose status answers for some ids take that many seconds to arrive."""

    def __init__(self, sim: Simulator, seconds: dict[str, float]) -> None:
        self.sim = sim
        self.inner = sim.transport()
        self.seconds = seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        parts = request.url.path.split("/")
        if parts[-1] == "status" and parts[-2] in self.seconds:
            await self.sim.clock.sleep(self.seconds[parts[-2]])
        return response


async def test_a_caller_done_waiting_lets_others_polls_land_for_a_second_not_longer() -> None:
    """The caller that drives is done while another waiter's poll is on the wire (a 30 s
    answer): it returns one second (the grace) after its own answer, not when the slow one
    lands; the poll cut short is sent again for the other waiter, who gets its result."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    quick = sim.create_generation(key=KEY, processing_seconds=10)
    slow = sim.create_generation(key=KEY, processing_seconds=40)
    http = httpx.AsyncClient(transport=_SlowStatus(sim, {slow: 30}))
    ended: list[float] = []
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:
        results: list[k.GenerationStatus] = []

        async def wait_quick() -> None:  # first to wait: it drives
            await client.generations.attach(quick).wait()
            ended.append(clock.now())

        async def wait_slow() -> None:
            results.append(await client.generations.attach(slow).wait())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_quick)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(wait_slow)
    last_quick = polls(sim)[quick][-1]
    assert ended == [pytest.approx(last_quick + 1.0)]
    assert [r.state for r in results] == ["completed"]
    assert last_quick + 1.0 in polls(sim)[slow]  # cut short, sent again at once


async def test_a_caller_that_timed_out_leaves_at_once_while_others_polls_are_on_the_wire(
) -> None:
    """A driving caller's timeout passes while another waiter's poll is on the wire: it
    raises `GenerationTimeoutError` on time, with no grace second."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    mine = sim.create_generation(key=KEY, processing_seconds=500)
    slow = sim.create_generation(key=KEY, processing_seconds=500)
    http = httpx.AsyncClient(transport=_SlowStatus(sim, {slow: 30}))
    async with (
        sim.client(KEY, rate_limits=None, http_client=http) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.generations.attach(slow).wait, None)  # runs once we drive
        start = clock.now()
        with pytest.raises(k.GenerationTimeoutError):
            await client.generations.attach(mine).wait(timeout=12)
        assert clock.now() == start + 12
        tg.cancel_scope.cancel()


class _Refuse(httpx.AsyncBaseTransport):
    """The simulator, except that the next polls of one id get `answers` (in order)."""

    def __init__(self, sim: Simulator, generation_id: str, answers: list[httpx.Response]):
        self.sim = sim
        self.inner = sim.transport()
        self.path = f"/{generation_id}/status"
        self.answers = answers
        self.times: list[float] = []  # when each of them was given

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.answers and request.url.path.endswith(self.path):
            self.times.append(self.sim.clock.now())
            return self.answers.pop(0)
        return await self.inner.handle_async_request(request)


def _busy(retry_after: str) -> httpx.Response:
    body = {"status": False, "message": "Too many requests, please try again later"}
    return httpx.Response(429, headers={"retry-after": retry_after}, json=body)


async def test_a_transient_failure_is_retried_after_its_backoff_for_a_waiter_that_does_not_drive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 503 on a poll is retried after the first backoff (0.375 to 0.5 s), not at once and
    not at the driving caller's next turn; the debug log says when the generation is polled
    again and why, and after each status how long until the next poll."""
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    driving = sim.create_generation(key=KEY, processing_seconds=100)
    failing = sim.create_generation(key=KEY, processing_seconds=20)
    refuse = _Refuse(sim, failing, [httpx.Response(503, json={"success": False})])
    http = httpx.AsyncClient(transport=refuse)
    async with (
        sim.client(KEY, rate_limits=None, http_client=http) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.generations.attach(driving).wait)
        await clock.sleep(1)  # it drives, on an 8 s turn
        status = await client.generations.attach(failing).wait()
        tg.cancel_scope.cancel()
    assert status.state == "completed"
    (failed,) = refuse.times
    times = polls(sim)[failing]
    delay = times[0] - failed
    assert 0.375 <= delay <= 0.5
    again = [m for m in caplog.messages if m.startswith(f"polling {failing} again")]
    assert len(again) == 1
    assert again[0].startswith(f"polling {failing} again in {delay:.2f} s after: ")
    assert "503" in again[0]
    waits = [m for m in caplog.messages if m.startswith("waiting ") and m.endswith(failing + " again")]
    assert waits[0] == f"waiting {times[1] - times[0]:.2f} s before polling {failing} again"
    assert len(waits) == len(times) - 1


async def test_a_retry_after_past_a_waiters_deadline_ends_that_wait_at_once() -> None:
    """A 429 asks for 40 s: the caller with 20 s left gets `RateLimitError` now rather than
    a timeout later; a caller with time enough is polled again after the 40 s."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=20)
    refuse = _Refuse(sim, gid, [_busy("40")])
    http = httpx.AsyncClient(transport=refuse)
    results: list[k.GenerationStatus] = []
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:

        async def patient() -> None:
            results.append(await client.generations.attach(gid).wait(timeout=300))

        async with anyio.create_task_group() as tg:
            tg.start_soon(patient)
            await anyio.lowlevel.checkpoint()
            with pytest.raises(k.RateLimitError):
                await client.generations.attach(gid).wait(timeout=20)
            assert clock.now() == refuse.times[0]
    assert [r.state for r in results] == ["completed"]
    assert polls(sim)[gid][0] >= refuse.times[0] + 40


async def test_a_retry_after_longer_than_the_sdk_sleeps_ends_every_wait_on_it_at_once() -> None:
    """A 429 asking for an hour ends the watch: each caller waiting on that generation gets
    `RateLimitError` at once, whatever its deadline."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=20)
    refuse = _Refuse(sim, gid, [_busy("3600")])
    http = httpx.AsyncClient(transport=refuse)
    errors: list[Exception] = []
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:

        async def wait(timeout: float | None) -> None:
            try:
                await client.generations.attach(gid).wait(timeout=timeout)
            except k.RateLimitError as error:
                errors.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, None)
            tg.start_soon(wait, 7200)
    assert len(errors) == 2
    assert clock.now() == refuse.times[0]
    assert polls(sim)[gid] == []


async def test_a_slow_status_answer_is_not_cut_short_at_every_change_of_another_wait() -> None:
    """Status answers for one generation take 12 s; another caller waits (and drives) on a
    generation whose progress changes at each 8 s poll. The slow generation ends at 20 s:
    its waiter should learn it within two slow answers after its next poll, not only once
    the other generation has ended (300 s), after some 38 polls cut short."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    driving = sim.create_generation(key=KEY, processing_seconds=300)
    slow = sim.create_generation(key=KEY, processing_seconds=20)
    http = httpx.AsyncClient(transport=_SlowStatus(sim, {slow: 12}))
    learnt: list[float] = []
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:

        async def wait_slow() -> None:
            await client.generations.attach(slow).wait()
            learnt.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_slow)  # starts once the caller below drives
            await client.generations.attach(driving).wait()
    # Its answer to a poll just before its end says "processing": two polls and answers
    # (8.8 s apart at most, 12 s each) after the end at the latest.
    assert learnt[0] < 20 + 2 * (8.8 + 12)
    assert len(polls(sim)[slow]) <= 6


async def test_hooks_hear_nothing_from_a_poll_that_finds_no_change() -> None:
    """A generation pending for 40 s is polled several times with the same status: the hooks
    hear of it once, then once per change."""
    clock = VirtualClock()
    sim = Simulator(clock=clock, pending_seconds=40)
    gid = sim.create_generation(key=KEY, processing_seconds=10)
    events: list[object] = []
    async with sim.client(KEY, rate_limits=None, hooks=[events.append]) as client:
        await client.generations.attach(gid).wait()
    changes = [(e.state, e.progress) for e in events if isinstance(e, k.StateChanged)]
    assert len(polls(sim)[gid]) >= 6
    assert changes[0] == ("pending", 0)
    assert changes.count(("pending", 0)) == 1
    assert all(a != b for a, b in itertools.pairwise(changes))


async def test_a_generation_a_journal_knows_finished_costs_no_poll(tmp_path: Path) -> None:
    """Run again with its journal (by a new client, which has polled nothing), a finished
    batch hands back handles whose end is known: waiting on them, or streaming them, sends
    nothing."""
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=20)
    journal = tmp_path / "batch.db"
    requests = [k.TextToVideo("a"), k.TextToVideo("b")]
    async with sim.client(KEY, rate_limits=None) as client:
        first = [o async for o in client.videos.generate_many(requests, journal=journal)]
    assert all(o.error is None for o in first)
    sent = len(sim.requests)
    async with sim.client(KEY, rate_limits=None) as client:
        again = [o async for o in client.videos.generate_many(requests, journal=journal)]
        for outcome in again:
            assert outcome.generation is not None
            assert (await outcome.generation.wait()).state == "completed"
            async with outcome.generation.progress() as updates:
                assert [s.state async for s in updates] == ["completed"]
        assert len(sim.requests) == sent


async def test_a_driving_wait_cancelled_while_its_poll_is_on_the_wire_just_stops() -> None:
    """Cancelling the caller that drives, while a poll is on the wire (a 12 s answer), ends
    its wait with the cancellation and nothing else; a later wait on the same generation
    gets its result."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=30)
    http = httpx.AsyncClient(transport=_SlowStatus(sim, {gid: 12}))
    async with sim.client(KEY, rate_limits=None, http_client=http) as client:
        handle = client.generations.attach(gid)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_soon() -> None:
                    await clock.sleep(5)
                    scope.cancel()

                tg.start_soon(cancel_soon)
                await handle.wait()
        assert scope.cancelled_caught
        assert clock.now() == 5
        assert (await handle.wait()).state == "completed"


async def test_a_caller_done_waiting_leaves_as_soon_as_others_polls_have_landed() -> None:
    """The driving caller's wait ends (its answer takes 0.1 s) while another waiter's poll is
    on the wire (a 0.3 s answer): it leaves when that poll lands, at 0.3 s, without sitting
    out the whole grace second."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    mine = sim.create_generation(key=KEY, processing_seconds=100)
    other = sim.create_generation(key=KEY, processing_seconds=100)
    http = httpx.AsyncClient(transport=_SlowStatus(sim, {mine: 0.1, other: 0.3}))
    async with (
        sim.client(KEY, rate_limits=None, http_client=http) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.generations.attach(other).wait)  # runs once we drive
        async with client.generations.attach(mine).progress() as updates:
            await updates.__anext__()
        assert polls(sim)[other] == [0.0]
        assert clock.now() == pytest.approx(0.3)
        tg.cancel_scope.cancel()


async def test_a_stream_left_frees_its_share_of_the_poll_budget_at_once() -> None:
    """At 20 requests a minute (0.3 polls/s) two waits at 8 s (0.25/s) fit; a third stream
    (0.375/s) would stretch every interval. One item from it, then it is left: the other
    two keep their 8 s turns (+ jitter) straight away, not only once its turn comes."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    waited = [sim.create_generation(key=KEY, processing_seconds=300) for _ in range(2)]
    left = sim.create_generation(key=KEY, processing_seconds=300)
    limits = k.RateLimits(requests_per_minute=20)
    async with sim.client(KEY, rate_limits=limits) as client, anyio.create_task_group() as tg:
        for gid in waited:
            tg.start_soon(client.generations.attach(gid).wait, None)
        await clock.sleep(50)
        async with client.generations.attach(left).progress() as updates:
            await updates.__anext__()
        closed = clock.now()
        await clock.sleep(50)
        tg.cancel_scope.cancel()
    assert polls(sim)[left] == [closed]
    for gid in waited:
        times = polls(sim)[gid]
        gaps = [b - a for a, b in itertools.pairwise(times) if a >= closed]
        assert len(gaps) >= 4
        assert all(8 <= gap <= 8 * 1.1 + 1e-6 for gap in gaps), gaps
