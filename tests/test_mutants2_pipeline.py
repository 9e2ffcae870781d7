"""Promises of the request pipeline (`kolbo_async._pipeline`) that its mutation run found
untested (issue 18): what every request carries, what the client refuses before sending,
what is logged about a paid POST whose caller left, and what a retry says.

Requests go to a respx router on the API (as in tests/test_pipeline.py), on a `StepClock`.
"""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async import _pipeline as pipeline_module
from kolbo_async._hooks import Event, RequestDone, Retrying
from kolbo_async._pipeline import Call, Lifecycle, log_orphan
from kolbo_async._retries import Attempt, Failure
from kolbo_async._send import Retryable

from .conftest import StepClock
from .test_pipeline import API, KEY, MakeClient
from .test_pipeline import make_client as make_client  # noqa: PLC0414
from .test_pipeline import router as router  # noqa: PLC0414

pytestmark = pytest.mark.anyio

SUBMITTED = {
    "success": True,
    "generation_id": "gen1",
    "type": "video",
    "model": "auto",
    "credits_charged": 35,
}
CREDITS = {"success": True, "credits": {"total": 120, "plan_credits": 100, "credit_pack": 20}}
VIDEO = "/api/v1/generate/video"

def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- what every request carries -------------------------------------------------------------------


async def test_a_call_asks_for_json_with_the_key_and_the_calls_timeout(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """A GET runs on the client's timeout; a paid POST on the generation timeout (its
    answer may take longer, and a timeout there is an unknown outcome)."""
    credits = router.get("/api/v1/account/credits").respond(200, json=CREDITS)
    post = router.post(VIDEO).respond(200, json=SUBMITTED)
    client = make_client(timeout=7.0)
    await client.account.credits()
    await client.videos.generate("a cat")
    settings = client._pipeline.settings
    get_request, post_request = credits.calls.last.request, post.calls.last.request
    for request in (get_request, post_request):
        assert request.headers["Accept"] == "application/json"
        assert request.headers["X-API-Key"] == KEY
    assert get_request.extensions["timeout"] == settings.timeout.as_dict()
    assert post_request.extensions["timeout"] == settings.generation_timeout.as_dict()
    assert settings.generation_timeout.as_dict() != settings.timeout.as_dict()


async def test_an_answer_is_logged_at_debug_with_its_status(
    router: respx.MockRouter, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    router.get("/api/v1/account/credits").respond(200, json=CREDITS)
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    await make_client().account.credits()
    [line] = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert line.startswith("GET /api/v1/account/credits -> 200 (")
    assert line.endswith(" s)")


async def test_a_retry_is_logged_and_told_to_hooks(
    router: respx.MockRouter, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    router.get("/api/v1/account/credits").mock(
        side_effect=[httpx.Response(503, text="busy"), httpx.Response(200, json=CREDITS)]
    )
    events: list[Event] = []
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    await make_client(hooks=[events.append]).account.credits()
    [retry] = [e for e in events if isinstance(e, Retrying)]
    assert (retry.method, retry.path, retry.attempt, retry.reason) == (
        "GET", "/api/v1/account/credits", 1, "HTTP 503"
    )  # fmt: skip
    done = [e for e in events if isinstance(e, RequestDone)]
    assert [(e.attempt, e.status_code, e.error) for e in done] == [(1, 503, None), (2, 200, None)]
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    assert line.startswith(f"retrying GET /api/v1/account/credits in {retry.delay:.2f} s (retry 1)")
    assert "after: " in line


async def test_an_unanswered_attempt_is_told_to_hooks_with_the_transport_error(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    router.get("/api/v1/account/credits").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=CREDITS)]
    )
    events: list[Event] = []
    await make_client(hooks=[events.append]).account.credits()
    done = [e for e in events if isinstance(e, RequestDone)]
    assert [(e.attempt, e.status_code, e.error) for e in done] == [
        (1, None, "ConnectError"),
        (2, 200, None),
    ]
    [retry] = [e for e in events if isinstance(e, Retrying)]
    assert retry.reason == "APIConnectionError"


async def test_a_raw_response_keeps_the_answer_without_the_key(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    router.get("/api/v1/account/credits").respond(200, json=CREDITS)
    client = make_client()
    raw = await client.with_raw_response.account.credits()
    assert raw.http_response.status_code == 200
    assert KEY not in str(raw.http_response.request.headers)
    assert raw.http_response.request.headers["X-API-Key"] != KEY


# -- refused before anything is sent --------------------------------------------------------------


async def test_a_closed_client_refuses_before_sending(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    route = router.get("/api/v1/account/credits").respond(200, json=CREDITS)
    client = make_client()
    await client.aclose()
    with pytest.raises(k.KolboError) as refused:
        await client.account.credits()
    assert str(refused.value) == "This client is closed; create a new one to make requests."
    assert route.call_count == 0


def test_a_lifecycle_keeps_its_first_loop() -> None:
    lifecycle = Lifecycle()
    assert (lifecycle.closed, lifecycle.loop, lifecycle.paid_in_flight) == (False, None, 0)
    assert lifecycle.landed is None
    first, second = object(), object()
    lifecycle.bind(None)  # outside any loop: nothing adopted
    assert lifecycle.loop is None
    lifecycle.bind(first)
    lifecycle.bind(first)
    lifecycle.bind(None)
    assert lifecycle.loop is first
    with pytest.raises(k.KolboError) as refused:
        lifecycle.bind(second)
    assert str(refused.value) == (
        "This AsyncKolbo was first used on another event loop (an earlier asyncio.run() or "
        "trio.run(), or another thread); its connections and locks belong to that loop, so "
        "nothing was sent. Create one client per loop, inside it (`async with AsyncKolbo() "
        "as client:` in your main, or an async fixture), or use the blocking Kolbo client, "
        "which runs its own loop."
    )
    assert lifecycle.loop is first


def test_a_lifecycle_from_before_a_fork_refuses_in_the_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lifecycle = Lifecycle()
    forks_then = lifecycle.forks
    monkeypatch.setattr(pipeline_module, "forks", lambda: forks_then + 1)
    for loop in (None, object()):
        with pytest.raises(k.KolboError) as refused:
            lifecycle.bind(loop)
        assert str(refused.value) == (
            "This client was created before os.fork(); its connections belong to the parent "
            "process, so nothing was sent. Create the client in the child (e.g. in "
            "gunicorn's post_fork hook or a Celery worker_process_init handler)."
        )
    assert lifecycle.loop is None


async def test_a_client_from_before_a_fork_sends_nothing(
    router: respx.MockRouter, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = router.get("/api/v1/account/credits").respond(200, json=CREDITS)
    client = make_client()
    await client.account.credits()  # bound to this loop in this process
    forks_then = client._pipeline.lifecycle.forks
    monkeypatch.setattr(pipeline_module, "forks", lambda: forks_then + 1)
    with pytest.raises(k.KolboError, match=r"created before os\.fork\(\)"):
        await client.account.credits()
    assert route.call_count == 1


# -- a paid POST whose caller stopped waiting ---------------------------------------------------


class _Media:
    url = "https://cdn.kolbo.ai/media/m1.png"


class _Submission:
    generation_id = "gen_9"


def _retryable(failure: Failure, error: k.KolboError) -> Retryable:
    return Retryable(Attempt(failure), error)


def test_an_orphan_generation_is_logged_with_how_to_reattach_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    log_orphan(Call("POST", VIDEO, generation=True), _Submission(), None)
    assert warnings_of(caplog) == [
        f"POST {VIDEO} was answered after its caller stopped waiting: generation gen_9 was "
        "created and charged. Re-attach with client.generations.attach('gen_9')."
    ]


def test_an_orphan_upload_is_logged_with_its_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    log_orphan(Call("POST", "/api/v1/media/upload", generation=True), _Media(), None)
    assert warnings_of(caplog) == [
        "POST /api/v1/media/upload was answered after its caller stopped waiting: the file "
        "was stored in the media library as https://cdn.kolbo.ai/media/m1.png (an upload: no "
        "generation was created)."
    ]


@pytest.mark.parametrize(
    ("path", "what"),
    [
        (VIDEO, "created a charged generation"),
        ("/api/v1/media/upload", "stored the file in the media library"),
    ],
)
@pytest.mark.parametrize("retryable", [False, True])
def test_an_orphan_with_an_unknown_outcome_is_logged(
    caplog: pytest.LogCaptureFixture, path: str, what: str, retryable: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    error = k.SubmissionOutcomeUnknownError("ReadTimeout")
    failure: Exception = _retryable(Failure.LOST, error) if retryable else error
    log_orphan(Call("POST", path, generation=True), None, failure)
    assert warnings_of(caplog) == [
        f"POST {path} failed after its caller stopped waiting, and may have {what}; it was "
        "not resubmitted: ReadTimeout"
    ]


def test_an_orphan_connection_error_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    error = k.APIConnectionError("connection reset")
    log_orphan(Call("POST", VIDEO, generation=True), None, _retryable(Failure.LOST, error))
    [message] = warnings_of(caplog)
    assert message.endswith("it was not resubmitted: connection reset")


def test_an_orphan_that_never_reached_kolbo_or_was_refused_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    call = Call("POST", VIDEO, generation=True)
    log_orphan(call, None, _retryable(Failure.NOT_SENT, k.APIConnectionError("refused")))
    answer = httpx.Response(400, request=httpx.Request("POST", API + VIDEO))
    refused = k.BadRequestError("bad prompt", response=answer, body=None, code=None)
    log_orphan(call, None, refused)
    assert caplog.records == []


# -- copies of a client share its pipeline's parts -------------------------------------------------


async def test_a_copy_with_other_options_shares_hooks_clock_and_lifecycle(
    router: respx.MockRouter, make_client: MakeClient, clock: StepClock
) -> None:
    route = router.get("/api/v1/account/credits").mock(
        side_effect=[httpx.Response(503, text="busy"), httpx.Response(200, json=CREDITS)]
    )
    events: list[Event] = []
    client = make_client(hooks=[events.append], max_retries=0)
    copy = client.with_options(max_retries=1)
    assert copy._pipeline.settings.max_retries == 1
    assert client._pipeline.settings.max_retries == 0
    await copy.account.credits()  # retried on the client's clock, told to its hooks
    assert route.call_count == 2
    assert len(clock.sleeps) == 1
    assert [type(e).__name__ for e in events].count("RequestDone") == 2
    parts = ("http", "pacer", "limiter", "clock", "rng", "lifecycle", "hooks")
    for part in parts:
        assert getattr(copy._pipeline, part) is getattr(client._pipeline, part), part
    await client.aclose()
    with pytest.raises(k.KolboError, match="client is closed"):
        await copy.account.credits()


async def test_a_status_poll_of_the_shared_poller_is_one_attempt(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """The poller paces and plans polls itself: a poll is sent once, never retried here."""
    route = router.get("/api/v1/generate/gen1/status").mock(
        side_effect=[
            httpx.Response(503, text="busy"),
            httpx.Response(200, json={"success": True, "generation_id": "gen1",
                                      "state": "completed", "progress": 100,
                                      "result": {"urls": ["https://cdn.kolbo.ai/v.mp4"]}}),
        ]
    )  # fmt: skip
    events: list[Event] = []
    client = make_client(hooks=[events.append])
    status = await client.generations.attach("gen1").wait(timeout=600)
    assert status.state == "completed"
    assert route.call_count == 2
    done = [e for e in events if isinstance(e, RequestDone)]
    assert [(e.method, e.path, e.attempt, e.status_code) for e in done] == [
        ("GET", "/api/v1/generate/gen1/status", 1, 503),
        ("GET", "/api/v1/generate/gen1/status", 1, 200),
    ]
    assert not [e for e in events if isinstance(e, Retrying)]


async def test_a_closed_client_sends_no_status_poll(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    route = router.get("/api/v1/generate/gen1/status").respond(200, json={})
    client = make_client()
    handle = client.generations.attach("gen1")
    await client.aclose()
    with pytest.raises(k.KolboError, match="client is closed"):
        await handle.wait(timeout=600)
    assert route.call_count == 0


# -- a paid POST runs to its answer whatever its caller does -----------------------------------


class Gated(httpx.AsyncBaseTransport):
    """Holds each generation POST until `gate` is set, then answers it (or fails it)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.arrived = anyio.Event()
        self.gate = anyio.Event()
        self.fail = fail
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.posts += 1
        self.arrived.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return httpx.Response(200, json=SUBMITTED)


async def _leave_during_the_post(client: AsyncKolbo, gated: Gated) -> bool:
    """Cancel the caller while its POST is on the wire; True when the caller saw it."""
    caller = anyio.CancelScope()
    async with anyio.create_task_group() as tg:

        async def submit() -> None:
            with caller:
                await client.videos.generate("a cat")

        tg.start_soon(submit)
        await gated.arrived.wait()
        caller.cancel()
        await anyio.lowlevel.checkpoint()
        gated.gate.set()
    return caller.cancelled_caught


async def test_a_post_whose_caller_left_lands_and_its_id_is_logged(
    clock: StepClock, caplog: pytest.LogCaptureFixture
) -> None:
    gated = Gated()
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    async with AsyncKolbo(KEY, _clock=clock, _transport=gated, rate_limits=None) as client:
        assert await _leave_during_the_post(client, gated)
        assert client._pipeline.lifecycle.paid_in_flight == 0
    assert gated.posts == 1
    assert warnings_of(caplog) == [
        f"POST {VIDEO} was answered after its caller stopped waiting: generation gen1 was "
        "created and charged. Re-attach with client.generations.attach('gen1')."
    ]


async def test_a_post_whose_caller_left_and_that_failed_is_logged(
    clock: StepClock, caplog: pytest.LogCaptureFixture
) -> None:
    gated = Gated(fail=httpx.ReadTimeout("slow"))
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    async with AsyncKolbo(KEY, _clock=clock, _transport=gated, rate_limits=None) as client:
        assert await _leave_during_the_post(client, gated)
    assert gated.posts == 1  # not resubmitted
    [message] = warnings_of(caplog)
    assert message.startswith(
        f"POST {VIDEO} failed after its caller stopped waiting, and may have created a "
        "charged generation; it was not resubmitted: "
    )


async def test_closing_waits_for_a_post_on_the_wire(clock: StepClock) -> None:
    gated = Gated()
    client = AsyncKolbo(KEY, _clock=clock, _transport=gated, rate_limits=None)
    closed = anyio.Event()
    results: list[object] = []
    async with anyio.create_task_group() as tg:

        async def submit() -> None:
            results.append(await client.videos.generate("a cat"))

        async def close() -> None:
            await client.aclose()
            closed.set()

        tg.start_soon(submit)
        await gated.arrived.wait()
        assert client._pipeline.lifecycle.paid_in_flight == 1
        tg.start_soon(close)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert not closed.is_set()
        gated.gate.set()
    assert closed.is_set()
    assert [getattr(r, "id", None) for r in results] == ["gen1"]
    assert client._pipeline.lifecycle.paid_in_flight == 0


async def test_a_failed_post_is_raised_to_a_caller_that_waited(clock: StepClock) -> None:
    gated = Gated(fail=httpx.ReadTimeout("slow"))
    gated.gate.set()
    async with AsyncKolbo(KEY, _clock=clock, _transport=gated, rate_limits=None) as client:
        with pytest.raises(k.SubmissionOutcomeUnknownError):
            await client.videos.generate("a cat")
    assert gated.posts == 1


async def test_a_landed_post_is_reported_to_hooks_as_the_first_attempt(
    clock: StepClock,
) -> None:
    gated = Gated()
    events: list[Event] = []
    async with AsyncKolbo(
        KEY, _clock=clock, _transport=gated, rate_limits=None, hooks=[events.append]
    ) as client:
        assert await _leave_during_the_post(client, gated)
    done = [e for e in events if isinstance(e, RequestDone)]
    assert [(e.method, e.path, e.attempt, e.status_code) for e in done] == [("POST", VIDEO, 1, 200)]


class Turns(httpx.AsyncBaseTransport):
    """Holds the n-th generation POST until `gates[n]` is set."""

    def __init__(self, n: int) -> None:
        self.gates = [anyio.Event() for _ in range(n)]
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        turn = self.posts
        self.posts += 1
        await self.gates[turn].wait()
        return httpx.Response(200, json={**SUBMITTED, "generation_id": f"gen{turn}"})


async def test_closing_waits_for_every_post_on_the_wire(clock: StepClock) -> None:
    turns = Turns(2)
    client = AsyncKolbo(KEY, _clock=clock, _transport=turns, rate_limits=None)
    closed = anyio.Event()
    ids: list[str] = []
    async with anyio.create_task_group() as tg:

        async def submit() -> None:
            ids.append((await client.videos.generate("a cat")).id)

        async def close() -> None:
            await client.aclose()
            closed.set()

        tg.start_soon(submit)
        tg.start_soon(submit)
        while turns.posts < 2:
            await anyio.lowlevel.checkpoint()
        assert client._pipeline.lifecycle.paid_in_flight == 2
        tg.start_soon(close)
        turns.gates[0].set()
        for _ in range(30):
            await anyio.lowlevel.checkpoint()
        assert client._pipeline.lifecycle.paid_in_flight == 1
        assert not closed.is_set()  # the second POST is still on the wire
        turns.gates[1].set()
    assert closed.is_set()
    assert sorted(ids) == ["gen0", "gen1"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncios_own_cancellation_cannot_lose_the_post(
    clock: StepClock, caplog: pytest.LogCaptureFixture
) -> None:
    """`Task.cancel()` (what ``asyncio.wait_for`` and ``asyncio.timeout`` do) leaves the
    POST running to its answer, whose id is then logged."""
    import asyncio

    gated = Gated()
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    async with AsyncKolbo(KEY, _clock=clock, _transport=gated, rate_limits=None) as client:
        task = asyncio.ensure_future(client.videos.generate("a cat"))
        await gated.arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert warnings_of(caplog) == []  # not landed yet
        gated.gate.set()
    assert gated.posts == 1
    assert warnings_of(caplog) == [
        f"POST {VIDEO} was answered after its caller stopped waiting: generation gen1 was "
        "created and charged. Re-attach with client.generations.attach('gen1')."
    ]


# -- second pass: pacing of each attempt, loops, what a retry says ---------------------------------


async def test_every_get_is_counted_in_the_request_window_only(
    router: respx.MockRouter, make_client: MakeClient, clock: StepClock
) -> None:
    """One request a minute: the second GET waits for the window; a generation window of
    one does not hold GETs."""
    router.get("/api/v1/account/credits").respond(200, json=CREDITS)
    client = make_client(rate_limits=k.RateLimits(generations_per_minute=1,
                                                   requests_per_minute=1))  # fmt: skip
    await client.account.credits()
    assert clock.sleeps == []
    await client.account.credits()
    assert sum(clock.sleeps) == pytest.approx(61.0)

    other = make_client(rate_limits=k.RateLimits(generations_per_minute=1,
                                                  requests_per_minute=10))  # fmt: skip
    before = len(clock.sleeps)
    await other.account.credits()
    await other.account.credits()
    assert len(clock.sleeps) == before


async def test_an_admitted_first_attempt_is_not_counted_again_but_its_retry_is(
    router: respx.MockRouter, make_client: MakeClient, clock: StepClock
) -> None:
    """A batch counts its POST's first attempt itself (``admitted=True``); a retry of it
    waits for the window like any request."""
    router.get("/api/v1/account/credits").mock(
        side_effect=[httpx.Response(503, text="busy"), httpx.Response(200, json=CREDITS)]
    )
    client = make_client(rate_limits=k.RateLimits(generations_per_minute=5,
                                                   requests_per_minute=1))  # fmt: skip
    pipeline = client._pipeline
    await pipeline.pacer.admit("request")  # what the batch did: the window is now full
    call = Call("GET", "/api/v1/account/credits")
    await pipeline.call(call, lambda body: body, admitted=True)
    # The first attempt went at once; the retry waited for the window (61 s in all).
    assert sum(clock.sleeps) == pytest.approx(61.0)


def test_a_client_used_on_a_second_event_loop_refuses_before_sending() -> None:
    import asyncio

    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=CREDITS)

    client = AsyncKolbo(KEY, _transport=httpx.MockTransport(answer), rate_limits=None)
    asyncio.run(client.account.credits())
    with pytest.raises(k.KolboError, match="first used on another event loop"):
        asyncio.run(client.account.credits())
    assert len(sent) == 1


async def test_a_retry_says_what_failed_and_how_long_it_waits(
    router: respx.MockRouter,
    make_client: MakeClient,
    clock: StepClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    router.get("/api/v1/account/credits").mock(
        side_effect=[httpx.Response(503, text="busy"), httpx.Response(200, json=CREDITS)]
    )
    events: list[Event] = []
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    await make_client(hooks=[events.append]).account.credits()
    [retry] = [e for e in events if isinstance(e, Retrying)]
    assert retry.delay > 0
    assert clock.sleeps == [pytest.approx(retry.delay)]
    [record] = [r for r in caplog.records if r.getMessage().startswith("retrying")]
    error = record.args[-1] if isinstance(record.args, tuple) else None
    assert isinstance(error, k.APIStatusError) and error.status_code == 503
    assert record.getMessage() == (
        f"retrying GET /api/v1/account/credits in {retry.delay:.2f} s (retry 1) after: {error}"
    )


async def test_a_post_its_caller_waited_for_logs_no_warning(
    router: respx.MockRouter, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    router.post(VIDEO).respond(200, json=SUBMITTED)
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    handle = await make_client().videos.generate("a cat")
    assert handle.id == "gen1"
    assert warnings_of(caplog) == []
