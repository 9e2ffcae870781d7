"""Pacing and polling promises, judged by what the simulator received on a virtual clock.

Each test states one promise so that breaking it fails here: the second of slack in the
client's windows, a 429's cooldown never cut short by a later one, the poller's 90 % share
of the request budget, the spacing of poll launches, and the status answer's
``poll_interval_hint``.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import defaultdict

import anyio
import anyio.lowlevel
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, RateLimits
from kolbo_async._pacing import GENERATE, REQUEST, Pacer, Window
from kolbo_async.testing import Simulator, VirtualClock

from .conftest import StepClock

pytestmark = pytest.mark.anyio

KEY = "kolbo_live_" + "a1" * 20


def status_times(sim: Simulator) -> dict[str, list[float]]:
    """When the simulator received each generation's status polls."""
    times: dict[str, list[float]] = defaultdict(list)
    for request in sim.requests:
        if request.method == "GET" and request.path.endswith("/status"):
            times[request.path.split("/")[-2]].append(request.time)
    return times


class TestWindowSlack:
    """Kolbo counts in fixed one-minute windows on its side of the network, so the client
    keeps 61 s between the first and the (N+1)th request, not 60."""

    async def test_the_pacer_holds_a_second_beyond_the_minute(self, clock: StepClock) -> None:
        """Three generations at 2 per minute: the third waits 61 s from the first."""
        pacer = Pacer(RateLimits(generations_per_minute=2), clock)
        start = clock.now()
        for _ in range(3):
            await pacer.admit(GENERATE)
        assert clock.now() - start == pytest.approx(61.0)

    async def test_posts_reach_the_server_61_s_apart(self) -> None:
        """At 3 generations per minute the 4th POST arrives 61 s after the 1st, and no
        trailing 61 s ever holds more than 3."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        limits = RateLimits(generations_per_minute=3)
        async with sim.client(KEY, rate_limits=limits) as client:
            for i in range(7):
                await client.videos.generate(f"prompt {i}")
        posts = [r.time for r in sim.requests if r.method == "POST"]
        assert len(posts) == 7
        for first, fourth in zip(posts, posts[3:], strict=False):
            assert fourth - first >= 61.0 - 1e-9
        assert posts[3] - posts[0] == pytest.approx(61.0)


class TestPacerEdges:
    async def test_the_request_window_has_its_slack_too(self, clock: StepClock) -> None:
        """Plain requests get the same extra second as generations."""
        pacer = Pacer(RateLimits(requests_per_minute=2), clock)
        for _ in range(3):
            await pacer.admit(REQUEST)
        assert clock.sleeps == [pytest.approx(61.0)]

    async def test_each_wait_is_logged_with_its_reason_and_length(
        self, clock: StepClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """DEBUG records say which window or cooldown held the request, and for how long."""
        caplog.set_level(logging.DEBUG, logger="kolbo_async")
        pacer = Pacer(RateLimits(generations_per_minute=1, requests_per_minute=1), clock)
        await pacer.admit(GENERATE)
        await pacer.admit(GENERATE)
        await pacer.admit(REQUEST)
        unpaced = Pacer(None, clock)
        unpaced.cool_down(REQUEST, 2.5)
        await unpaced.admit(REQUEST)
        messages = [r.getMessage() for r in caplog.records]
        assert "pacing: waiting 61.00 s for the generate window" in messages
        assert "pacing: waiting 61.00 s for the request window" in messages
        assert "pacing: request bucket cooling down for 2.50 s after a 429" in messages
        assert "pacing: waiting 2.50 s for a 429 cooldown" in messages


    async def test_a_sub_second_remainder_is_waited(self, clock: StepClock) -> None:
        """Half a second before the window frees, a request waits that half second."""
        pacer = Pacer(RateLimits(requests_per_minute=1), clock)
        await pacer.admit(REQUEST)
        clock.time += 60.5  # the window (61 s) frees in 0.5 s
        await pacer.admit(REQUEST)
        assert clock.sleeps == [pytest.approx(0.5)]

    async def test_a_short_cooldown_holds_an_unpaced_client(self, clock: StepClock) -> None:
        """With pacing off a 429's cooldown still holds requests, however short."""
        pacer = Pacer(None, clock)
        pacer.cool_down(REQUEST, 0.4)
        await pacer.admit(REQUEST)
        assert clock.sleeps == [pytest.approx(0.4)]

    def test_a_429_without_retry_after_cools_down_until_the_window_frees(self) -> None:
        """No Retry-After: until the oldest counted request leaves the window, at least 1 s."""
        window = Window(limit=5)
        window.record(0.0)
        assert window.cool_down(10.0, None) == pytest.approx(50.0)
        assert window.cool_down(100.0, None) == 1.0  # the window is empty by then
        assert Window(limit=5).cool_down(0.0, None) == 1.0

    def test_status_polls_count_in_the_request_window(self, clock: StepClock) -> None:
        """The poller's try_admit counts each poll: at the limit the next one waits."""
        pacer = Pacer(RateLimits(requests_per_minute=3), clock)
        assert [pacer.try_admit() for _ in range(3)] == [0.0, 0.0, 0.0]
        assert pacer.try_admit() == pytest.approx(61.0)
        assert pacer.delay(REQUEST) == pytest.approx(61.0)
        clock.time += 60.5
        assert pacer.try_admit() == pytest.approx(0.5)  # not sent half a second early

    async def test_a_poll_behind_a_queued_request_checks_back_at_once(
        self, clock: StepClock
    ) -> None:
        """When the window frees while a request is queued for it, the poll lets the queued
        request have the slot (it is not counted ahead of it) and checks back a moment
        later, not a second later."""
        pacer = Pacer(RateLimits(requests_per_minute=1), clock)
        await pacer.admit(REQUEST)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pacer.admit, REQUEST)  # queued: holds the window's turn, asleep
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            assert pacer.delay(REQUEST) == pytest.approx(61.0)
            clock.time += 61.0  # the window frees; the queued request has not woken yet
            wait = pacer.try_admit()
            assert 0 < wait <= 0.05
        assert pacer.try_admit() == pytest.approx(61.0)  # the queued request took the slot


class TestCooldown:
    def test_a_shorter_429_never_cuts_a_longer_cooldown(self) -> None:
        """Retry-After 30 s, then Retry-After 2 s a second later: the bucket still waits
        until 30 s."""
        window = Window(limit=None)
        window.cool_down(0.0, 30.0)
        window.cool_down(1.0, 2.0)
        assert window.delay(5.0) == pytest.approx(25.0)
        window.cool_down(10.0, 40.0)  # a longer one does extend it
        assert window.delay(10.0) == pytest.approx(40.0)

    async def test_no_request_goes_out_before_the_longest_retry_after(self) -> None:
        """Two calls in flight meet 429s: Retry-After 30 s, then 2 s a second later. Both
        retries reach the server at 30 s, not at 3 s."""
        clock = VirtualClock()
        arrivals: list[tuple[float, str]] = []
        both_in = anyio.Event()

        class Limited(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                arrivals.append((clock.now(), request.url.path))
                first = len(arrivals) == 1
                if len(arrivals) <= 2:
                    if first:
                        await both_in.wait()
                    else:
                        both_in.set()
                        await clock.sleep(1)
                    return httpx.Response(
                        429,
                        headers={"Retry-After": "30" if first else "2"},
                        json={"status": False, "message": "Too many requests"},
                    )
                if request.url.path.endswith("/credits"):
                    return httpx.Response(200, json={"success": True, "credits": {"total": 5}})
                return httpx.Response(200, json={"success": True, "models": [], "count": 0})

        client = AsyncKolbo(KEY, _transport=Limited(), _clock=clock, rate_limits=None)
        async with client, anyio.create_task_group() as tg:
            tg.start_soon(client.account.credits)
            tg.start_soon(client.models.list)
        assert [t for t, _ in arrivals[:2]] == [0.0, 0.0]
        retries = [t for t, _ in arrivals[2:]]
        assert len(retries) == 2
        assert min(retries) >= 30.0 - 1e-9

    async def test_a_pacer_cooldown_holds_every_request_of_the_bucket(
        self, clock: StepClock
    ) -> None:
        """After cool_down(30) then cool_down(2), admission waits the whole 30 s."""
        pacer = Pacer(None, clock)
        start = clock.now()
        pacer.cool_down(REQUEST, 30.0)
        pacer.cool_down(REQUEST, 2.0)
        await pacer.admit(REQUEST)
        assert clock.now() - start == pytest.approx(30.0)


class TestPollBudget:
    @pytest.mark.slow
    async def test_polls_spend_at_most_90_percent_of_the_request_budget(self) -> None:
        """Far over budget, status polls stay under 90 % of requests_per_minute: the rest
        is headroom for POSTs and the caller's own calls (that room is what fails first
        when the poller takes all of it)."""
        clock = VirtualClock()
        sim = Simulator(clock=clock, rate_limits=True, requests_per_minute=60)
        ids = [sim.create_generation(key=KEY, processing_seconds=900) for _ in range(30)]
        async with sim.client(KEY, rate_limits=RateLimits(requests_per_minute=60)) as client:
            handles = [client.generations.attach(i) for i in ids]
            async with anyio.create_task_group() as tg:
                for handle in handles:
                    tg.start_soon(handle.wait)
        polls = sorted(t for times in status_times(sim).values() for t in times)
        # Ten steady minutes, after the first burst and before the generations end.
        steady = [t for t in polls if 120 <= t < 720]
        assert len(steady) <= 0.9 * 600 + 4  # 90 % of 60/min, plus the launcher's burst
        assert len(steady) >= 0.8 * 0.9 * 600  # and not starved either

    @pytest.mark.slow
    async def test_poll_launches_are_spread_at_the_budgets_pace(self) -> None:
        """40 handles due at once, budget 4.5 polls/s: a small burst (5), then one every
        1/4.5 s, not 40 in the same instant (which the 300/min window would allow)."""
        clock = VirtualClock()
        sim = Simulator(clock=clock)
        ids = [sim.create_generation(key=KEY, processing_seconds=300) for _ in range(40)]
        async with sim.client(KEY) as client:  # RateLimits(): 300/min, budget 4.5/s
            outcomes = [
                o async for o in k.as_completed([client.generations.attach(i) for i in ids])
            ]
        assert all(o.error is None for o in outcomes)
        first = sorted(times[0] for times in status_times(sim).values())
        assert len(first) == 40
        assert first[-1] - first[0] >= (40 - 5) / 4.5 - 1e-6
        for a, b in itertools.pairwise(first[4:]):
            assert b - a >= 1 / 4.5 - 1e-6


class _Hinting(httpx.AsyncBaseTransport):
    """The simulator, with status answers carrying another `poll_interval_hint`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, hint: float) -> None:
        self.inner = inner
        self.hint = hint

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/status"):
            return response
        body = json.loads(await response.aread())
        body["poll_interval_hint"] = self.hint
        return httpx.Response(response.status_code, json=body)


class TestStatusHint:
    @pytest.mark.parametrize("submitted", [True, False], ids=["generated", "attached"])
    async def test_the_status_answers_hint_sets_the_interval(self, submitted: bool) -> None:
        """The POST said 8 s (or an attached handle knows nothing); each status answer says
        3 s: the simulator receives polls 3 to 3.3 s apart (the hint plus jitter)."""
        clock = VirtualClock()
        sim = Simulator(clock=clock, processing_seconds=60)
        transport = _Hinting(sim.transport(), 3.0)
        async with AsyncKolbo(KEY, _transport=transport, _clock=clock, rate_limits=None) as c:
            if submitted:
                gen = await c.videos.generate("a cat")
                assert gen.submission is not None
                assert gen.submission.poll_interval_hint == 8
            else:
                gen = c.generations.attach(sim.create_generation(key=KEY))
            assert (await gen.wait()).state == "completed"
        times = status_times(sim)[gen.id]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) >= 10
        assert all(3.0 - 1e-6 <= gap <= 3.3 + 1e-6 for gap in gaps), gaps

    async def test_a_changed_hint_is_followed(self) -> None:
        """The hint is read from every answer: when it changes, the interval follows."""
        clock = VirtualClock()
        sim = Simulator(clock=clock, processing_seconds=200)
        transport = _Hinting(sim.transport(), 2.0)
        async with AsyncKolbo(KEY, _transport=transport, _clock=clock, rate_limits=None) as c:
            gen = c.generations.attach(sim.create_generation(key=KEY))
            updates = gen.progress()
            async for update in updates:
                if clock.now() >= 40:
                    transport.hint = 10.0
                if update.done:
                    break
        times = status_times(sim)[gen.id]
        early = [b - a for a, b in itertools.pairwise(times) if b <= 40]
        late = [b - a for a, b in itertools.pairwise(times) if a >= 60]
        assert early and all(2.0 - 1e-6 <= gap <= 2.2 + 1e-6 for gap in early), early
        assert late and all(10.0 - 1e-6 <= gap <= 11.0 + 1e-6 for gap in late), late
