"""An adversarial user of the shared poller's hand-off (commit a57df19): the driver role goes
to the longest waiter, and `wait()` listens for the end only.

Many waiters of every kind at once (wait, result, progress streams, `as_completed`,
`generate_many`), cancelled at random virtual times (the heir right after a hand-off among
them), timeouts expiring together, handles whose polls fail for good (404, 401) or are
refused for a while (429 with Retry-After), and the blocking client from several threads.
Counted at the server edge (a transport in front of the simulator that logs every status
request and every answer it delivers), never on the SDK's word. A hang is a failure: each
test is guarded in real seconds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import httpx
import pytest

import kolbo_async as k
from kolbo_async import Kolbo
from kolbo_async._hooks import Event, StateChanged
from kolbo_async.testing import Simulator, VirtualClock

from .test_poller import KEY, polls

pytestmark = pytest.mark.anyio

HINT = 8.0  # the SDK's interval when the server gives no hint
JITTER = 1.1
GRACE = 1.0  # a departing driver lets polls in flight land for this long, launching none
REAL_SECONDS = 20  # a hang fails the test instead of the run


@dataclass(frozen=True)
class Answer:
    """A status answer as it reached the client (after any delay)."""

    time: float
    code: int
    state: str | None
    progress: int | None


def _busy(retry_after: float) -> httpx.Response:
    body = {"status": False, "message": "Too many requests, please try again later"}
    return httpx.Response(429, headers={"retry-after": str(retry_after)}, json=body)


def _unauthorized() -> httpx.Response:
    body = {"success": False, "error": "Invalid API key", "code": "INVALID_API_KEY"}
    return httpx.Response(401, json=body)


class Edge(httpx.AsyncBaseTransport):
    """The simulator behind a server edge that logs each status request when it arrives and
    each answer when it is delivered (a poll cut short while its answer is delayed has a
    request and no answer). `slow` delays the answers of some ids; `scripted` answers the
    next polls of an id itself, in order, before the simulator does again."""

    def __init__(
        self,
        sim: Simulator,
        *,
        slow: dict[str, float] | None = None,
        scripted: dict[str, list[httpx.Response]] | None = None,
    ) -> None:
        self.sim = sim
        self.inner = sim.transport()
        self.slow = slow or {}
        self.scripted = scripted or {}
        self.sent: dict[str, list[float]] = defaultdict(list)
        self.answers: dict[str, list[Answer]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        if parts[-1] != "status":
            return await self.inner.handle_async_request(request)
        gid = parts[-2]
        clock = self.sim.clock
        self.sent[gid].append(clock.now())
        queue = self.scripted.get(gid)
        if queue:
            response = queue.pop(0)
        else:
            response = await self.inner.handle_async_request(request)
        if gid in self.slow:
            assert isinstance(clock, VirtualClock)
            await clock.sleep(self.slow[gid])
        body = json.loads(response.content)
        state = body.get("state") if response.status_code == 200 else None
        progress = body.get("progress") if response.status_code == 200 else None
        self.answers[gid].append(Answer(clock.now(), response.status_code, state, progress))
        return response

    def statuses(self, gid: str, until: float) -> list[Answer]:
        """The 200 answers of `gid` delivered by `until`."""
        return [a for a in self.answers[gid] if a.code == 200 and a.time <= until]


def client_on(sim: Simulator, edge: Edge, **options: object) -> k.AsyncKolbo:
    options.setdefault("rate_limits", None)
    return sim.client(KEY, http_client=httpx.AsyncClient(transport=edge), **options)


def check_cadence(edge: Edge, gid: str, *, fresh: list[float], retry_after: float = 0.0) -> None:
    """No two polls of `gid` closer than its hint, except a poll at a waiter's first ask
    (`fresh`: polled at once, by design, or as soon as a departing driver's grace is over), the re-send of a poll cut short (a request with no
    answer), and a retry after a refused poll (at least `retry_after` later)."""
    sent = edge.sent[gid]
    delivered = {a.time - edge.slow.get(gid, 0.0) for a in edge.answers[gid]}
    refused = {a.time for a in edge.answers[gid] if a.code == 429}
    for before, after in itertools.pairwise(sent):
        gap = after - before
        if gap >= HINT - 1e-6:
            continue
        if gap <= 1e-6:
            continue  # cut the instant it was answered (a driver that timed out leaves at once)
        if any(t - 1e-6 <= after <= t + GRACE + 1e-6 for t in fresh):
            continue  # polled at a first ask, or when a departing driver's grace ended
        if not any(math.isclose(before, t) for t in delivered):
            continue  # `before` was cut short: sent again
        if any(math.isclose(before, t) for t in refused) and gap >= retry_after - 1e-6:
            continue
        raise AssertionError(f"{gid} polled {gap:.2f} s apart at {after}: {sent}")


def check_last_status(edge: Edge, gid: str, error: k.GenerationTimeoutError, at: float) -> None:
    """The status a timeout names is one the server gave for `gid` by then, and the latest
    (an answer delivered at the very instant of the timeout may or may not count), or None
    when no status had come."""
    got = edge.statuses(gid, at)
    before = [a for a in got if a.time < at]
    allowed: set[tuple[str | None, int | None] | None] = {
        (a.state, a.progress) for a in got if a.time >= (before[-1].time if before else at)
    }
    if not before:
        allowed.add(None)
    last = error.last_status
    named = None if last is None else (last.state, last.progress)
    assert named in allowed, (named, got, at)
    assert error.generation_id == gid


# -- the role after a hand-off ---------------------------------------------------------------


async def test_the_heir_cancelled_right_after_the_hand_off_passes_the_role_on() -> None:
    """The driver's wait ends and hands the role to the longest waiter, which its caller
    cancels at that very moment (no checkpoint between): the next waiter drives and learns
    its end on time, and the cancelled waiter's generation is not polled again."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    first, heir, last = (
        sim.create_generation(key=KEY, processing_seconds=s) for s in (20, 200, 60)
    )
    edge = Edge(sim)
    learnt: dict[str, float] = {}
    async with client_on(sim, edge) as client:
        heir_scope = anyio.CancelScope()

        async def wait_first() -> None:
            await client.generations.attach(first).wait()
            learnt[first] = clock.now()
            heir_scope.cancel()  # the heir was just handed the role

        async def wait_heir() -> None:
            with heir_scope:
                await client.generations.attach(heir).wait()
            learnt[heir] = -1.0

        async def wait_last() -> None:
            await client.generations.attach(last).wait()
            learnt[last] = clock.now()

        with anyio.fail_after(REAL_SECONDS):
            async with anyio.create_task_group() as tg:
                for waiter in (wait_first, wait_heir, wait_last):  # the first to wait drives
                    tg.start_soon(waiter)
                    await anyio.lowlevel.checkpoint()
    assert learnt[heir] == -1.0
    assert 20 + 3 <= learnt[first] <= 23 + HINT * JITTER + 0.01
    assert 60 + 3 <= learnt[last] <= 63 + HINT * JITTER + 0.01
    assert all(t <= learnt[first] for t in edge.sent[heir]), edge.sent[heir]
    for gid in (first, heir, last):
        check_cadence(edge, gid, fresh=[0.0])


async def test_each_heir_cancelled_in_turn_the_last_waiter_still_learns() -> None:
    """Ten waiters in line; each time the role is handed over the heir is cancelled before
    it runs (by the caller that just left): the role goes down the line to the one waiter
    left, which learns its end, and nothing polls the cancelled ones' generations after."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    quick = sim.create_generation(key=KEY, processing_seconds=10)
    line = [sim.create_generation(key=KEY, processing_seconds=300) for _ in range(10)]
    survivor = sim.create_generation(key=KEY, processing_seconds=40)
    edge = Edge(sim)
    scopes = [anyio.CancelScope() for _ in line]
    cancelled_at: list[float] = []
    learnt: list[float] = []
    async with client_on(sim, edge) as client:

        async def wait_quick() -> None:
            await client.generations.attach(quick).wait()
            for scope in scopes:  # every heir in turn, with no checkpoint in between
                scope.cancel()
            cancelled_at.append(clock.now())

        async def wait_in_line(i: int) -> None:
            with scopes[i]:
                await client.generations.attach(line[i]).wait()

        async def wait_survivor() -> None:
            await client.generations.attach(survivor).wait()
            learnt.append(clock.now())

        with anyio.fail_after(REAL_SECONDS):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_quick)
                await anyio.lowlevel.checkpoint()
                for i in range(len(line)):
                    tg.start_soon(wait_in_line, i)
                    await anyio.lowlevel.checkpoint()
                tg.start_soon(wait_survivor)
    assert len(learnt) == 1
    assert 43 <= learnt[0] <= 43 + HINT * JITTER + 0.01
    for gid in line:
        assert all(t <= cancelled_at[0] for t in edge.sent[gid]), edge.sent[gid]


# -- what wait() costs and hears -------------------------------------------------------------


@pytest.mark.parametrize("joiner", ["wait", "progress"])
async def test_a_caller_joining_a_live_wait_costs_no_poll(joiner: str) -> None:
    """A caller waits on a generation; nineteen more callers (waits, or `progress()` streams)
    join it, one a second. Its status is as fresh as the live caller's last poll: none of
    them should cost a poll (the generation is polled at its hint)."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=100)
    edge = Edge(sim)
    async with client_on(sim, edge) as client, anyio.create_task_group() as tg:

        async def late(delay: float) -> None:
            await clock.sleep(delay)
            handle = client.generations.attach(gid)
            if joiner == "wait":
                await handle.wait()
                return
            async with handle.progress() as updates:
                async for _ in updates:
                    pass

        tg.start_soon(client.generations.attach(gid).wait)
        for i in range(1, 20):
            tg.start_soon(late, float(i))
    check_cadence(edge, gid, fresh=[0.0])


async def test_hooks_hear_every_change_when_only_wait_listens() -> None:
    """Only `wait()` and `result()` callers (which are woken by the end alone): the hooks
    still hear every change of state or progress the polls found, in order, once each."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    ids = [sim.create_generation(key=KEY, processing_seconds=s) for s in (30, 75, 120)]
    edge = Edge(sim)
    heard: list[Event] = []
    async with (
        client_on(sim, edge, hooks=[heard.append]) as client,
        anyio.create_task_group() as tg,
    ):
        for gid in ids:
            tg.start_soon(client.generations.attach(gid).wait)
            tg.start_soon(client.generations.attach(gid).result)
    for gid in ids:
        changes: list[tuple[str | None, int | None]] = []
        for answer in edge.statuses(gid, math.inf):
            if not changes or changes[-1] != (answer.state, answer.progress):
                changes.append((answer.state, answer.progress))
        told = [
            (e.state, e.progress)
            for e in heard
            if isinstance(e, StateChanged) and e.generation_id == gid
        ]
        assert told == changes
        assert len(told) >= 5
        assert told[-1] == ("completed", 100)


# -- timeouts --------------------------------------------------------------------------------


async def test_timeouts_expiring_together_each_name_the_latest_status() -> None:
    """Twelve waits (the driver among them) with the same 50 s timeout on generations that
    outlast it, beside a caller without one: all twelve raise at 50 s exactly, each naming
    the latest status the server gave for its generation; the other caller learns its end,
    and the twelve generations are not polled after 50 s."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    timed = [sim.create_generation(key=KEY, processing_seconds=300) for _ in range(12)]
    patient = sim.create_generation(key=KEY, processing_seconds=90)
    edge = Edge(sim, slow={timed[3]: 6.0, timed[7]: 60.0})
    errors: dict[str, tuple[k.GenerationTimeoutError, float]] = {}
    done: list[float] = []
    async with client_on(sim, edge) as client:

        async def wait_timed(gid: str) -> None:
            try:
                await client.generations.attach(gid).wait(timeout=50)
            except k.GenerationTimeoutError as error:
                errors[gid] = (error, clock.now())

        async def wait_patient() -> None:
            await client.generations.attach(patient).wait(timeout=None)
            done.append(clock.now())

        with anyio.fail_after(REAL_SECONDS):
            async with anyio.create_task_group() as tg:
                for gid in timed:
                    tg.start_soon(wait_timed, gid)
                tg.start_soon(wait_patient)
    assert set(errors) == set(timed)
    for gid, (error, at) in errors.items():
        assert at == 50
        check_last_status(edge, gid, error, at)
        assert all(t <= 50 for t in edge.sent[gid]), edge.sent[gid]
    assert errors[timed[7]][0].last_status is None  # its only answer comes at 60 s
    assert errors[timed[0]][0].last_status is not None
    assert len(done) == 1 and 93 <= done[0] <= 93 + HINT * JITTER + 0.01
    check_cadence(edge, patient, fresh=[0.0])


async def test_a_timeout_shorter_than_the_first_answer() -> None:
    """The first answer takes 20 s; a wait with 5 s raises at 5 s naming no status; a later
    wait with 30 s after one answer has come names that answer (a real one, not made up)."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=500)
    edge = Edge(sim, slow={gid: 20.0})
    async with client_on(sim, edge) as client:
        handle = client.generations.attach(gid)
        with pytest.raises(k.GenerationTimeoutError) as first:
            await handle.wait(timeout=5)
        assert clock.now() == 5
        assert first.value.last_status is None
        assert "last seen" not in str(first.value)
        with pytest.raises(k.GenerationTimeoutError) as second:
            await handle.wait(timeout=30)
        check_last_status(edge, gid, second.value, clock.now())
        assert second.value.last_status is not None
        assert str(second.value.last_status.progress) + "%" in str(second.value)


# -- errors and refusals among many waiters --------------------------------------------------


async def test_waiters_whose_polls_fail_for_good_or_are_refused_for_a_while() -> None:
    """Among waiters on healthy generations: one on an id that does not exist (404, the
    first to wait: it drives), one whose polls are answered 401, one refused twice with a
    429 asking for 20 s. The first two raise at once; the refused one is polled again no
    sooner than asked and learns its end; the others are unaffected."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    missing = "f" * 24
    unauthorized = sim.create_generation(key=KEY, processing_seconds=50)
    refused = sim.create_generation(key=KEY, processing_seconds=30)
    healthy = [sim.create_generation(key=KEY, processing_seconds=40 + 10 * i) for i in range(6)]
    edge = Edge(
        sim,
        scripted={unauthorized: [_unauthorized()], refused: [_busy(20), _busy(20)]},
    )
    outcome: dict[str, tuple[str, float]] = {}
    async with client_on(sim, edge, max_retries=0) as client:

        async def wait(gid: str) -> None:
            try:
                status = await client.generations.attach(gid).wait()
                outcome[gid] = (status.state, clock.now())
            except k.KolboError as error:
                outcome[gid] = (type(error).__name__, clock.now())

        with anyio.fail_after(REAL_SECONDS):
            async with anyio.create_task_group() as tg:
                for gid in (missing, unauthorized, refused, *healthy):
                    tg.start_soon(wait, gid)
                    await anyio.lowlevel.checkpoint()
    assert outcome[missing] == ("NotFoundError", 0.0)
    assert outcome[unauthorized] == ("AuthenticationError", 0.0)
    assert outcome[refused][0] == "completed"
    assert len(edge.sent[missing]) == len(edge.sent[unauthorized]) == 1
    sent = edge.sent[refused]
    assert sent[:3] == [0.0, 20.0, 40.0]
    for gid in healthy:
        assert outcome[gid][0] == "completed"
        end = sim.generations[gid].ends_at
        assert end <= outcome[gid][1] <= end + HINT * JITTER + 0.01
        check_cadence(edge, gid, fresh=[0.0])
    check_cadence(edge, refused, fresh=[0.0], retry_after=20)


# -- streams and waits on the same generation ------------------------------------------------


async def test_a_wait_then_a_stream_on_one_handle_and_a_stream_broken_out_of() -> None:
    """On one handle a wait times out and a `progress()` stream then follows it to the end;
    meanwhile, on another handle of the same generation, a stream breaks out after two
    updates while a third caller waits: everyone who stayed learns the end, and once all
    have left, nothing polls it (counted later in virtual time)."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=80)
    other = sim.create_generation(key=KEY, processing_seconds=400)
    edge = Edge(sim)
    ends: dict[str, str] = {}
    broke_at: list[float] = []
    async with client_on(sim, edge) as client:
        handle = client.generations.attach(gid)

        async def wait_then_stream() -> None:
            with pytest.raises(k.GenerationTimeoutError):
                await handle.wait(timeout=20)
            last = None
            async with handle.progress() as updates:
                async for last in updates:  # noqa: B007
                    pass
            assert last is not None
            ends["stream after wait"] = last.state

        async def breaker() -> None:
            seen = 0
            async with client.generations.attach(gid).progress() as updates:
                async for _ in updates:
                    seen += 1
                    if seen == 2:
                        broke_at.append(clock.now())
                        break

        async def waiter() -> None:
            await clock.sleep(3)
            ends["waiter"] = (await client.generations.attach(gid).wait()).state

        with anyio.fail_after(REAL_SECONDS):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_then_stream)
                tg.start_soon(breaker)
                tg.start_soon(waiter)
            end = clock.now()
            # Another caller waits a long time on something else: nothing of `gid` is sent.
            await client.generations.attach(other).wait(timeout=None)
    assert ends == {"stream after wait": "completed", "waiter": "completed"}
    assert len(broke_at) == 1
    assert 83 <= end <= 83 + HINT * JITTER + 0.01
    assert all(t <= end for t in edge.sent[gid]), (edge.sent[gid], end)
    # Fresh asks: the stream after the wait's timeout (20 s), the waiter at 3 s.
    check_cadence(edge, gid, fresh=[0.0, 3.0, 20.0])


async def test_a_stream_alone_broken_out_of_leaves_nothing_polled() -> None:
    """A stream broken out of after its first update, nobody else waiting on that
    generation while another caller waits a long time: the generation is never polled
    again (the first poll only)."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    gid = sim.create_generation(key=KEY, processing_seconds=100)
    other = sim.create_generation(key=KEY, processing_seconds=200)
    edge = Edge(sim)
    async with client_on(sim, edge) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.generations.attach(other).wait)
        await clock.sleep(1)
        async with client.generations.attach(gid).progress() as updates:
            async for _ in updates:
                break
    assert edge.sent[gid] == [1.0]


# -- the blocking client from several threads ------------------------------------------------


@pytest.mark.timeout(30)
def test_the_blocking_client_waited_on_from_several_threads() -> None:
    """Eight threads share one blocking client: each calls `wait()` or `result()` on its own
    generation (two pairs share one). Every thread learns its end; no generation is polled
    faster than its hint except at a thread's first ask."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    ids = [sim.create_generation(key=KEY, processing_seconds=20 + 15 * i) for i in range(6)]
    ids += ids[:2]
    got: dict[int, str] = {}
    errors: list[BaseException] = []
    with Kolbo(
        KEY, base_url=sim.base_url, _transport=sim.transport(), _clock=clock, rate_limits=None
    ) as client:

        def run(i: int) -> None:
            try:
                handle = client.generations.attach(ids[i])
                if i % 2:
                    got[i] = handle.wait().state
                else:
                    got[i] = "completed" if handle.result().urls else "no urls"
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ids))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(REAL_SECONDS)
        assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    assert errors == []
    assert got == dict.fromkeys(range(len(ids)), "completed")
    times = polls(sim)
    for gid in set(ids):
        sent = times[gid]
        # Each thread's first ask may poll at once; otherwise at the hint.
        short = [b - a for a, b in itertools.pairwise(sent) if b - a < HINT - 1e-6]
        assert len(short) <= ids.count(gid), sent
        assert len(sent) <= math.ceil(sim.generations[gid].ends_at / HINT) + 2 + ids.count(gid)


# -- everything at once ----------------------------------------------------------------------


@dataclass
class Waiter:
    """One caller of the mixed crowd, and what it learnt."""

    kind: str
    ids: list[str]
    start: float
    timeout: float | None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancel_at: float | None = None  # virtual time its caller gives up
    kills: bool = False  # when its wait returns, it cancels another waiter at once
    outcome: str | None = None
    ended: float | None = None
    asks: list[tuple[str, float]] = field(default_factory=list)  # first asks: (id, time)
    error: BaseException | None = None


async def _crowd(seed: int) -> None:
    rng = random.Random(seed)
    clock = VirtualClock()
    sim = Simulator(clock=clock, processing_seconds=60, seed=seed)
    ids = [
        sim.create_generation(key=KEY, processing_seconds=rng.uniform(15, 200)) for _ in range(24)
    ]
    failing = [
        sim.create_generation(key=KEY, outcome="failed", processing_seconds=40) for _ in range(2)
    ]
    missing = "e" * 24
    unauthorized = sim.create_generation(key=KEY, processing_seconds=50)
    refused = sim.create_generation(key=KEY, processing_seconds=70)
    slow = sim.create_generation(key=KEY, processing_seconds=90)
    edge = Edge(
        sim,
        slow={slow: 12.0},
        scripted={unauthorized: [_unauthorized()], refused: [_busy(10), _busy(10), _busy(10)]},
    )
    pool = [*ids, *failing, missing, unauthorized, refused, slow]
    waiters: list[Waiter] = []
    kinds = ["wait"] * 50 + ["result"] * 15 + ["stream"] * 30 + ["break"] * 10
    kinds += ["wait-then-stream"] * 5 + ["as_completed"] * 6 + ["generate_many"] * 2
    for kind in kinds:
        many = kind in ("as_completed", "generate_many")
        timeout = rng.choice([None, None, None, 40.0, 60.0])
        waiter = Waiter(
            kind=kind,
            ids=rng.sample(pool, 3) if many else [rng.choice(pool)],
            # Many start together (and with equal timeouts, expire together).
            start=float(rng.choice([0, 0, 0, 5, 10, 10, 30, rng.randrange(0, 120)])),
            timeout=None if many else timeout,
        )
        if rng.random() < 0.2:
            waiter.cancel_at = waiter.start + rng.choice([0.0, 1.0, 8.0, rng.uniform(0, 90)])
        waiter.kills = kind in ("wait", "result") and rng.random() < 0.2
        waiters.append(waiter)
    created: list[str] = []  # by generate_many

    async with client_on(sim, edge, max_retries=0) as client:

        def finish(waiter: Waiter, outcome: str) -> None:
            waiter.outcome, waiter.ended = outcome, clock.now()
            if waiter.kills:  # the departing driver's moment: cancel someone, no checkpoint
                victims = [w for w in waiters if w.outcome is None and w.start <= clock.now()]
                if victims:
                    victim = rng.choice(victims)
                    victim.cancel_at = clock.now()
                    victim.scope.cancel()

        async def one(waiter: Waiter) -> None:
            gid = waiter.ids[0]
            handle = client.generations.attach(gid)
            if waiter.kind in ("wait", "result"):
                waiter.asks.append((gid, clock.now()))
                if waiter.kind == "wait":
                    finish(waiter, (await handle.wait(waiter.timeout)).state)
                else:
                    await handle.result(waiter.timeout)
                    finish(waiter, "completed")
            elif waiter.kind in ("stream", "break", "wait-then-stream"):
                if waiter.kind == "wait-then-stream":
                    waiter.asks.append((gid, clock.now()))
                    with contextlib.suppress(k.GenerationTimeoutError):
                        await handle.wait(20)
                waiter.asks.append((gid, clock.now()))
                last: k.GenerationStatus | None = None
                async with handle.progress(waiter.timeout) as updates:
                    async for last in updates:
                        if waiter.kind == "break" and last.progress >= 30:
                            finish(waiter, "broke")
                            return
                assert last is not None
                finish(waiter, last.state)
            elif waiter.kind == "as_completed":
                handles = [client.generations.attach(i) for i in waiter.ids]
                waiter.asks += [(i, clock.now()) for i in waiter.ids]
                states = []
                async for outcome in k.as_completed(handles):
                    states.append(
                        type(outcome.error).__name__
                        if outcome.status is None
                        else outcome.status.state
                    )
                finish(waiter, ",".join(sorted(states)))
            else:
                requests = [k.TextToVideo(f"crowd {seed} {i}") for i in range(3)]
                outcomes = []
                async for outcome in client.videos.generate_many(requests):
                    assert outcome.generation is not None
                    created.append(outcome.generation.id)
                    outcomes.append(outcome.status.state if outcome.status else "none")
                finish(waiter, ",".join(outcomes))

        async def run(waiter: Waiter) -> None:
            await clock.sleep(waiter.start)
            with waiter.scope:
                try:
                    await one(waiter)
                except k.GenerationTimeoutError as error:
                    waiter.error = error
                    finish(waiter, "timeout")
                except k.KolboError as error:
                    waiter.error = error
                    finish(waiter, type(error).__name__)
            if waiter.scope.cancelled_caught:
                waiter.ended = clock.now()

        async def cancel_later(waiter: Waiter) -> None:
            assert waiter.cancel_at is not None
            await clock.sleep(waiter.cancel_at)
            waiter.scope.cancel()

        with anyio.fail_after(REAL_SECONDS):
            async with anyio.create_task_group() as tg:
                for waiter in waiters:
                    tg.start_soon(run, waiter)
                    if waiter.cancel_at is not None:
                        tg.start_soon(cancel_later, waiter)
            end = clock.now()
            # Nobody waits now: another long wait sends nothing for anyone else.
            later = sim.create_generation(key=KEY, processing_seconds=100)
            await client.generations.attach(later).wait(timeout=None)

    records = sim.generations
    # A 429 holds every request of the client for its Retry-After (by design).
    cooldowns = [(a.time, a.time + 10) for a in edge.answers[refused] if a.code == 429]

    def due_by(at: float) -> float:
        """When a generation that ended (or was first asked about) at `at` must be learnt:
        its next poll (a jittered hint later, plus a departing driver's grace), once any
        cooldown over `at` has passed."""
        for start, stop in cooldowns:
            if start <= at < stop:
                at = stop
        return at + HINT * JITTER + GRACE + 0.01

    for waiter in waiters:
        gid = waiter.ids[0]
        if waiter.outcome is None:  # cancelled, and only by us
            assert waiter.scope.cancel_called and waiter.cancel_at is not None, waiter
            continue
        assert waiter.ended is not None
        if waiter.kind == "generate_many":
            assert waiter.outcome == "completed,completed,completed", waiter
            continue
        if waiter.kind == "as_completed":
            # The 401 answers one poll only: a batch asking after it is told the end.
            told = {"AuthenticationError", "completed"}
            variants: list[list[str]] = [[], []]
            for i in waiter.ids:
                if i == missing:
                    ends = ["NotFoundError"] * 2
                elif i == unauthorized:
                    ends = sorted(told)
                else:
                    ends = [records[i].outcome] * 2
                for variant, outcome in zip(variants, ends, strict=True):
                    variant.append(outcome)
            allowed = {",".join(sorted(variant)) for variant in variants}
            assert waiter.outcome in allowed, (waiter, allowed)
            continue
        if gid == missing:
            assert waiter.outcome == "NotFoundError", waiter
            continue
        if gid == unauthorized and waiter.outcome != "completed":
            # Its first poll only is refused; whoever asks after is told the status.
            assert waiter.outcome in ("AuthenticationError", "timeout", "broke"), waiter
            continue
        if gid == refused and waiter.outcome == "RateLimitError":
            # A 429 asked for more than its deadline had left: said at once (by design).
            assert waiter.timeout is not None or waiter.kind == "wait-then-stream", waiter
            continue
        record = records[gid]
        began = waiter.asks[-1][1]
        if waiter.outcome == "timeout":
            assert isinstance(waiter.error, k.GenerationTimeoutError)
            assert waiter.timeout is not None
            # On time, also in a departing driver's grace second.
            assert waiter.ended == pytest.approx(began + waiter.timeout, abs=1e-6), waiter
            check_last_status(edge, gid, waiter.error, waiter.ended)
            if gid not in (slow, refused):
                assert due_by(record.ends_at) > waiter.ended, waiter
            continue
        if waiter.outcome == "broke":
            continue
        if record.outcome == "failed":
            assert waiter.outcome in ("failed", "GenerationFailedError"), waiter
        else:
            assert waiter.outcome == "completed", waiter
        assert waiter.ended >= record.ends_at, waiter
        if gid not in (slow, refused):
            assert waiter.ended <= due_by(max(began, record.ends_at)), waiter

    asks: dict[str, list[float]] = defaultdict(list)
    left: dict[str, float] = defaultdict(float)
    for waiter in waiters:
        for gid, at in waiter.asks:
            asks[gid].append(at)
        for gid in waiter.ids:
            left[gid] = max(left[gid], waiter.ended or 0.0)
    for gid in pool:
        check_cadence(edge, gid, fresh=asks[gid], retry_after=10)
        # Nothing is polled once nobody waits on it any more.
        assert all(t <= left[gid] for t in edge.sent[gid]), (gid, left[gid], edge.sent[gid])
    for gid in created:
        check_cadence(edge, gid, fresh=[])
        assert all(t <= end for t in edge.sent[gid])
    assert all(t <= end for gid in pool for t in edge.sent[gid])


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_crowd_of_every_kind_of_waiter_with_random_cancellations(seed: int) -> None:
    """About 120 callers of every kind on 30 generations (some failing, one missing, one
    answered 401, one refused with 429s, one with 12 s answers), starting together or
    staggered, some with equal timeouts, a fifth cancelled at random virtual times, and some
    cancelling another caller the moment their own wait returns (when the role is handed
    over). Every caller not cancelled learns the truth, on time; timeouts name a real,
    latest status; no generation is polled faster than its hint (except at a caller's first
    ask, a re-sent cut poll, or a retry after a 429), nor once nobody waits on it."""
    await _crowd(seed)


async def test_a_timeout_in_a_departing_drivers_grace_second_is_on_time() -> None:
    """A `progress()` stream drives; its first answer takes 5 s, another caller's poll is
    on the wire (30 s answers) when it lands, so the stream's turn ends with a grace second
    (5 to 6 s). A third caller's wait(timeout=5.5) should raise at 5.5 s."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    stream, slow, timed = (sim.create_generation(key=KEY, processing_seconds=300) for _ in range(3))
    edge = Edge(sim, slow={stream: 5.0, slow: 30.0})
    raised: list[float] = []
    async with client_on(sim, edge) as client, anyio.create_task_group() as tg:

        async def follow() -> None:
            async with client.generations.attach(stream).progress() as updates:
                async for _ in updates:
                    pass

        async def wait_timed() -> None:
            with pytest.raises(k.GenerationTimeoutError):
                await client.generations.attach(timed).wait(timeout=5.5)
            raised.append(clock.now())

        tg.start_soon(follow)  # the first to wait drives
        await anyio.lowlevel.checkpoint()
        tg.start_soon(client.generations.attach(slow).wait)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(wait_timed)
        await clock.sleep(20)
        tg.cancel_scope.cancel()
    assert edge.answers[stream][0].time == 5.0  # the stream's turn ended then
    assert raised == [5.5]


async def test_twenty_streams_do_not_starve_waits_with_slow_answers() -> None:
    """Twenty `progress()` streams change at every poll (each update ends its caller's turn
    if it drives); three callers wait on generations whose status answers take 12 s. Each
    wait learns its end within two polls and slow answers of it (not when the streams end,
    300 s later, after some 38 polls cut short, as before a57df19)."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    streams = [sim.create_generation(key=KEY, processing_seconds=300) for _ in range(20)]
    slow = [sim.create_generation(key=KEY, processing_seconds=s) for s in (20, 40, 60)]
    edge = Edge(sim, slow=dict.fromkeys(slow, 12.0))
    learnt: dict[str, float] = {}
    async with client_on(sim, edge) as client, anyio.create_task_group() as tg:

        async def follow(gid: str) -> None:
            async with client.generations.attach(gid).progress() as updates:
                async for _ in updates:
                    pass

        async def wait(gid: str) -> None:
            await client.generations.attach(gid).wait()
            learnt[gid] = clock.now()

        with anyio.fail_after(REAL_SECONDS):
            for gid in streams:  # the first stream drives
                tg.start_soon(follow, gid)
                await anyio.lowlevel.checkpoint()
            async with anyio.create_task_group() as waits:
                for gid in slow:
                    waits.start_soon(wait, gid)
        tg.cancel_scope.cancel()
    for gid in slow:
        end = sim.generations[gid].ends_at
        assert end <= learnt[gid] <= end + 2 * (HINT * JITTER + 12) + GRACE, learnt
        assert len(edge.sent[gid]) <= end / HINT + 3, edge.sent[gid]


async def test_the_heir_told_its_end_with_the_driver_passes_the_role_on() -> None:
    """Two callers wait on one generation (the first drives), a third on a longer one. The
    shared generation's end tells both at once, as the driver's turn ends: whichever order
    they run in (the second may be handed the role with its news already in), the third is
    still driven to its end, on time."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    shared = sim.create_generation(key=KEY, processing_seconds=20)
    longer = sim.create_generation(key=KEY, processing_seconds=60)
    edge = Edge(sim)
    learnt: list[tuple[str, float]] = []
    async with client_on(sim, edge) as client:

        async def wait(gid: str) -> None:
            await client.generations.attach(gid).wait()
            learnt.append((gid, clock.now()))

        with anyio.fail_after(REAL_SECONDS):
            async with anyio.create_task_group() as tg:
                for gid in (shared, shared, longer):  # in this order into the line
                    tg.start_soon(wait, gid)
                    await anyio.lowlevel.checkpoint()
    assert [gid for gid, _ in learnt] == [shared, shared, longer]
    assert learnt[0][1] == learnt[1][1] <= 23 + HINT * JITTER + 0.01
    assert 63 <= learnt[2][1] <= 63 + HINT * JITTER + 0.01
    check_cadence(edge, longer, fresh=[0.0])
