"""Never pay twice, never hang, never raise a foreign error: the send path's share of it.

Each test counts what the simulator (or the respx router) received, never the SDK's word.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import multiprocessing
import sys
import time
from typing import Any

import anyio
import httpx
import pytest
import respx
import trio

import kolbo_async as k
from kolbo_async import AsyncKolbo, Kolbo
from kolbo_async.testing import Simulator, VirtualClock

from . import test_pipeline
from .conftest import StepClock
from .test_pipeline import KEY, SUBMITTED, MakeClient

# respx-level fixtures shared with test_pipeline: a respx router on the API and clients
# that use the test's StepClock.
make_client = test_pipeline.make_client
router = test_pipeline.router


def posts(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.method == "POST" and r.path.endswith("/video"))


@pytest.mark.anyio
class TestGatewayAfterTheWork:
    """A gateway's page (or an unreadable 200) after Kolbo created the generation."""

    @pytest.mark.parametrize(
        "fault", ["gateway_502", "gateway_504", "gateway_524", "gateway_garbled_200"]
    )
    async def test_is_outcome_unknown_and_never_resent(self, fault: str) -> None:
        sim = Simulator(clock=VirtualClock())
        sim.inject("generate", fault)
        async with sim.client() as client:
            with pytest.raises(k.SubmissionOutcomeUnknownError) as info:
                await client.videos.generate("a lighthouse at dusk")
        assert posts(sim) == 1
        assert len(sim.generations) == 1  # Kolbo did create (and charge for) it
        assert info.value.response is not None
        assert "NOT resubmitted" in str(info.value)
        assert "kolbo_live_" not in str(info.value)

    async def test_kolbo_own_5xx_envelope_is_a_refusal(self) -> None:
        """Kolbo's own JSON error envelope on a 500 is Kolbo speaking: not unknown."""
        sim = Simulator(clock=VirtualClock())
        sim.inject("generate", "500")
        async with sim.client() as client:
            with pytest.raises(k.InternalServerError):
                await client.videos.generate("a lighthouse at dusk")
        assert posts(sim) == 1
        assert len(sim.generations) == 0

    async def test_gateway_json_without_envelope_is_unknown(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """An API gateway's own JSON (``{"message": ...}``) is not Kolbo's envelope."""
        route = router.post("/api/v1/generate/video").respond(
            504, json={"message": "Endpoint request timed out"}
        )
        with pytest.raises(k.SubmissionOutcomeUnknownError):
            await make_client(max_retries=5).videos.generate("a cat")
        assert route.call_count == 1

    async def test_status_poll_through_a_gateway_page_is_retried(self) -> None:
        """GETs are safe: a gateway page there is retried, and the wait goes on."""
        sim = Simulator(clock=VirtualClock())
        async with sim.client() as client:
            gen = await client.videos.generate("a cat")
            sim.inject("status", "gateway_504", times=2)
            assert (await gen.wait()).state == "completed"


def test_gateway_page_blocking_client_is_outcome_unknown() -> None:
    sim = Simulator(clock=VirtualClock())
    sim.inject("generate", "gateway_504")
    with (
        sim.serve() as base,
        Kolbo("kolbo_live_simulator", base_url=base) as client,
        pytest.raises(k.SubmissionOutcomeUnknownError),
    ):
        client.videos.generate("a cat")
    assert posts(sim) == 1


@pytest.mark.anyio
class TestAnswersWithAnIdYieldAHandle:
    @pytest.mark.parametrize(
        ("field", "value"),
        [("credits_charged", "35 credits"), ("model", {"id": "veo"}),
         ("poll_interval_hint", "soon"), ("type", ["video"])],
    )
    async def test_odd_optional_field_is_kept_in_raw(
        self, router: respx.MockRouter, make_client: MakeClient, field: str, value: object
    ) -> None:
        router.post("/api/v1/generate/video").respond(200, json={**SUBMITTED, field: value})
        gen = await make_client().videos.generate("a cat")
        assert gen.id == "gen1"
        assert gen.submission is not None
        assert gen.submission.raw[field] == value
        assert getattr(gen.submission, field) is None

    async def test_odd_status_fields_keep_the_video_reachable(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        router.get("/api/v1/generate/gen1/status").respond(200, json={
            "success": True, "generation_id": "gen1", "state": "completed", "progress": 100,
            "credits_used": "12 credits", "error": {"message": "none"},
            "result": {"urls": ["https://cdn.kolbo.ai/v/gen1.mp4"], "duration": "5s"},
        })
        result = await make_client().generations.attach("gen1").result()
        assert result.url == "https://cdn.kolbo.ai/v/gen1.mp4"
        assert result.duration is None

    async def test_deeply_nested_body_is_a_kolbo_error(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        nested = b"[" * 100_000 + b"]" * 100_000
        router.get("/api/v1/account/credits").respond(
            200, content=nested, headers={"content-type": "application/json"}
        )
        route = router.post("/api/v1/generate/video").respond(
            200, content=nested, headers={"content-type": "application/json"}
        )
        client = make_client()
        with pytest.raises(k.APIResponseValidationError):
            await client.account.credits()
        with pytest.raises(k.SubmissionOutcomeUnknownError):
            await client.videos.generate("a cat")
        assert route.call_count == 1


class TestOneLoopPerClient:
    def test_second_asyncio_run_refuses_before_sending(self) -> None:
        sim = Simulator(clock=VirtualClock())
        client = sim.client()  # in-process: no socket is left behind on the dead loop

        async def submit() -> str:
            return (await client.videos.generate("a cat")).id

        asyncio.run(submit())
        with pytest.raises(k.KolboError, match="another event loop") as info:
            asyncio.run(submit())
        assert not isinstance(info.value, k.SubmissionOutcomeUnknownError)
        assert posts(sim) == 1

    def test_second_trio_run_refuses_before_sending(self) -> None:
        sim = Simulator(clock=VirtualClock())
        client = sim.client()

        async def submit() -> str:
            return (await client.videos.generate("a cat")).id

        trio.run(submit)
        with pytest.raises(k.KolboError, match="another event loop"):
            trio.run(submit)
        assert posts(sim) == 1

    def test_a_client_made_outside_any_loop_binds_on_first_use(self) -> None:
        """Creating the client at import time and using it in one asyncio.run() is fine."""
        sim = Simulator(clock=VirtualClock())
        client = sim.client()

        async def main() -> str:
            async with client:
                gen = await client.videos.generate("a cat")
                await gen.wait()
                return gen.id

        assert asyncio.run(main())
        assert posts(sim) == 1


class _GatedTransport(httpx.AsyncBaseTransport):
    """Holds generation POSTs until the test opens the gate: a POST 'on the wire'."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.arrived = anyio.Event()
        self.gate = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/video"):
            self.arrived.set()
            await self.gate.wait()
        return await self.inner.handle_async_request(request)


@pytest.mark.anyio
class TestCancelledWhileThePostIsOnTheWire:
    async def test_post_runs_to_its_answer_and_the_id_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        sim = Simulator(clock=VirtualClock())
        gated = _GatedTransport(sim.transport())
        client = AsyncKolbo("kolbo_live_simulator", base_url=sim.base_url, _transport=gated,
                            _clock=sim.clock, rate_limits=None)
        returned: list[object] = []
        caller = anyio.CancelScope()
        async with client:
            with caplog.at_level(logging.WARNING, logger="kolbo_async"):
                async with anyio.create_task_group() as tg:

                    async def submit() -> None:
                        with caller:
                            returned.append(await client.videos.generate("a cat"))

                    tg.start_soon(submit)
                    await gated.arrived.wait()
                    caller.cancel()  # the caller leaves: a timeout, Ctrl-C, ...
                    await anyio.lowlevel.checkpoint()
                    gated.gate.set()  # ... and Kolbo answers afterwards
        assert caller.cancelled_caught
        assert returned == []
        assert posts(sim) == 1
        [generation_id] = sim.generations
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(generation_id in message for message in warnings), warnings

    async def test_closing_the_client_waits_for_the_answer(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The caller left and the client is being closed: the POST still lands, and its
        id is logged (a Ctrl-C'd script closing its client on the way out)."""
        sim = Simulator(clock=VirtualClock())
        gated = _GatedTransport(sim.transport())
        client = AsyncKolbo("kolbo_live_simulator", base_url=sim.base_url, _transport=gated,
                            _clock=sim.clock, rate_limits=None)
        caller = anyio.CancelScope()
        closed = anyio.Event()
        with caplog.at_level(logging.WARNING, logger="kolbo_async"):
            async with anyio.create_task_group() as tg:

                async def submit() -> None:
                    with caller:
                        await client.videos.generate("a cat")

                async def close() -> None:
                    await client.aclose()
                    closed.set()

                tg.start_soon(submit)
                await gated.arrived.wait()
                caller.cancel()
                tg.start_soon(close)
                for _ in range(20):
                    await anyio.lowlevel.checkpoint()
                assert not closed.is_set()  # held open by the POST on the wire
                gated.gate.set()
        assert closed.is_set()
        [generation_id] = sim.generations
        assert any(generation_id in r.getMessage() for r in caplog.records)

    async def test_an_unknown_outcome_after_the_caller_left_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        sim = Simulator(clock=VirtualClock())
        sim.inject("generate", "gateway_504")
        gated = _GatedTransport(sim.transport())
        caller = anyio.CancelScope()
        async with AsyncKolbo("kolbo_live_simulator", base_url=sim.base_url, _transport=gated,
                              _clock=sim.clock, rate_limits=None) as client:
            with caplog.at_level(logging.WARNING, logger="kolbo_async"):
                async with anyio.create_task_group() as tg:

                    async def submit() -> None:
                        with caller:
                            await client.videos.generate("a cat")

                    tg.start_soon(submit)
                    await gated.arrived.wait()
                    caller.cancel()
                    await anyio.lowlevel.checkpoint()
                    gated.gate.set()
        assert posts(sim) == 1
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("may have created a charged generation" in m for m in messages), messages
        assert all("kolbo_live_" not in m for m in messages)

    async def test_cancel_before_the_post_leaves_sends_nothing(self) -> None:
        """Waiting for the pacing window is not shielded: leaving then costs nothing."""
        sim = Simulator(clock=VirtualClock())
        waiting = anyio.CancelScope()

        def hook(event: object) -> None:
            if isinstance(event, k.PacingWait) and event.bucket == "generate":
                waiting.cancel()  # the second POST is waiting for its minute: leave now

        async with sim.client(rate_limits=k.RateLimits(generations_per_minute=1),
                              hooks=[hook]) as client:  # fmt: skip
            await client.videos.generate("first")
            with waiting:
                await client.videos.generate("second")
        assert waiting.cancelled_caught
        assert posts(sim) == 1


@pytest.mark.anyio
class TestRetryAfter:
    async def test_a_day_is_raised_at_once_not_slept(
        self, router: respx.MockRouter, make_client: MakeClient, clock: StepClock
    ) -> None:
        route = router.get("/api/v1/account/credits").respond(
            429, json={"status": False, "message": "slow down"}, headers={"Retry-After": "86400"}
        )
        with pytest.raises(k.RateLimitError) as info:
            await make_client(max_retries=5).account.credits()
        assert info.value.retry_after == 86400
        assert route.call_count == 1
        assert clock.sleeps == []

    @pytest.mark.parametrize("header", ["1e308", "DATE+86400"])
    async def test_absurd_values_are_raised_at_once(
        self, router: respx.MockRouter, make_client: MakeClient, clock: StepClock, header: str
    ) -> None:
        if header.startswith("DATE"):
            header = email.utils.formatdate(time.time() + 86400, usegmt=True)
        router.get("/api/v1/models").respond(503, text="busy", headers={"Retry-After": header})
        with pytest.raises(k.RateLimitError) as info:
            await make_client().models.list()
        assert info.value.status_code == 503
        assert info.value.retry_after is not None
        assert info.value.retry_after > 60
        assert clock.sleeps == []

    async def test_the_cooldown_a_day_long_answer_starts_is_capped(
        self, router: respx.MockRouter, make_client: MakeClient, clock: StepClock
    ) -> None:
        """The bucket is not frozen for a day: the next call waits at most a minute."""
        route = router.get("/api/v1/account/credits")
        route.side_effect = [
            httpx.Response(429, json={"status": False, "message": "x"},
                           headers={"Retry-After": "86400"}),
            httpx.Response(200, json={"success": True, "credits": {"total": 5}}),
        ]
        client = make_client()
        with pytest.raises(k.RateLimitError):
            await client.account.credits()
        assert (await client.account.credits()).total == 5
        assert sum(clock.sleeps) <= 60.0

    async def test_a_503_asking_for_30_s_gets_30_s(
        self, router: respx.MockRouter, make_client: MakeClient, clock: StepClock
    ) -> None:
        route = router.get("/api/v1/account/credits")
        route.side_effect = [
            httpx.Response(503, text="busy", headers={"Retry-After": "30"}),
            httpx.Response(200, json={"success": True, "credits": {"total": 5}}),
        ]
        assert (await make_client().account.credits()).total == 5
        assert route.call_count == 2
        assert clock.sleeps == [30.0]

    async def test_a_429_with_an_http_date_waits_until_that_date(
        self, router: respx.MockRouter, make_client: MakeClient, clock: StepClock
    ) -> None:
        route = router.get("/api/v1/account/credits")
        when = email.utils.formatdate(time.time() + 20, usegmt=True)
        route.side_effect = [
            httpx.Response(429, json={"status": False, "message": "x"},
                           headers={"Retry-After": when}),
            httpx.Response(200, json={"success": True, "credits": {"total": 5}}),
        ]
        assert (await make_client().account.credits()).total == 5
        # The date has a resolution of one second, and a little real time passes.
        assert 17.5 <= sum(clock.sleeps) <= 20.5

    async def test_polling_without_a_deadline_is_told_at_once(
        self, router: respx.MockRouter, make_client: MakeClient, clock: StepClock
    ) -> None:
        route = router.get("/api/v1/generate/gen1/status").respond(
            429, json={"status": False, "message": "x"}, headers={"Retry-After": "86400"}
        )
        gen = make_client().generations.attach("gen1")
        with pytest.raises(k.RateLimitError) as info:
            await gen.wait(timeout=None)
        assert info.value.retry_after == 86400
        assert route.call_count == 1
        assert sum(clock.sleeps) < 60


class TestKeys:
    @pytest.mark.parametrize("bad", ["\u200b", "\u00a0", " ", "\t", "é", "\x7f"])
    def test_non_printable_ascii_key_is_refused_without_echo(self, bad: str) -> None:
        key = "kolbo_live_" + "secretpart" + bad + "tail"
        with pytest.raises(k.InvalidRequestError) as info:
            AsyncKolbo(key)
        assert info.value.field == "api_key"
        for text in (str(info.value), repr(info.value), repr(info.value.args)):
            assert "secretpart" not in text

    def test_blocking_client_refuses_it_too(self) -> None:
        with pytest.raises(k.InvalidRequestError):
            Kolbo("kolbo_live_abc\u200bdef")


def _use_after_fork(client: Kolbo, queue: Any) -> None:
    try:
        client.account.credits()
        queue.put("no error")
    except k.KolboError as error:
        queue.put(f"{type(error).__name__}: {error}")
    # A normal exit runs the client's finalizer in the child: it must not hang either.
    sys.exit(0)


@pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX")
def test_blocking_client_in_a_forked_child_raises_at_once() -> None:
    """gunicorn --preload, multiprocessing with fork, Celery prefork: a clear error, no hang.

    A real fork, crossing a real process: the timeout guards against the old hang.
    """
    sim = Simulator()
    with sim.serve() as base, Kolbo("kolbo_live_simulator", base_url=base) as client:
        client.account.credits()  # the loop thread is up and holds a connection
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_use_after_fork, args=(client, queue))
        child.start()
        child.join(timeout=20)
        assert child.exitcode == 0, "the child hung or crashed"
        message = queue.get(timeout=5)
        assert message.startswith("KolboError") and "fork" in message
        assert client.account.credits().total > 0  # the parent's client is unharmed


_CTRL_C_SCRIPT = """
import logging, sys
from kolbo_async import Kolbo
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
client = Kolbo("kolbo_live_simulator", base_url=sys.argv[1])
print("submitting", flush=True)
try:
    client.videos.generate("a cat")
except KeyboardInterrupt:
    print("interrupted", flush=True)
    client.close()
    print("closed", flush=True)
    sys.exit(130)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_ctrl_c_during_a_blocking_generate_keeps_the_generation() -> None:
    """Ctrl-C while the POST is on the wire: the script is interrupted at once, closing
    waits for Kolbo's answer, and the id of the charged generation is printed (a real
    process and a real signal: the timing crosses a process)."""
    import signal
    import subprocess

    sim = Simulator()
    sim.faults.slow_seconds = 1.5
    sim.inject("generate", "slow")
    with sim.serve() as base:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CTRL_C_SCRIPT, base],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "submitting"
        deadline = time.monotonic() + 10
        while posts(sim) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out.split() == ["interrupted", "closed"]
    [generation_id] = sim.generations
    assert generation_id in err
    assert posts(sim) == 1


def test_asyncio_wait_for_cannot_lose_the_generation(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio's own cancellation (`wait_for`, `Task.cancel`) does not respect an anyio
    shield: the POST must still land, its id logged, and closing waits for it."""
    sim = Simulator(clock=VirtualClock())
    gated = _GatedTransport(sim.transport())

    async def main() -> None:
        async with AsyncKolbo("kolbo_live_simulator", base_url=sim.base_url,
                              _transport=gated, _clock=sim.clock, rate_limits=None) as client:

            # What `wait_for` does when its time is up, without waiting for real time.
            task = asyncio.ensure_future(client.videos.generate("a cat"))
            await gated.arrived.wait()  # the POST is on the wire, held there
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gated.gate.set()  # Kolbo answers after the caller gave up

    with caplog.at_level(logging.WARNING, logger="kolbo_async"):
        asyncio.run(main())
    assert posts(sim) == 1
    [generation_id] = sim.generations
    assert any(generation_id in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
class TestOddPostAnswers:
    async def test_success_false_with_an_id_still_yields_the_handle(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        router.post("/api/v1/generate/video").respond(
            200, json={**SUBMITTED, "success": False, "error": "queued with a warning"}
        )
        gen = await make_client().videos.generate("a cat")
        assert gen.id == "gen1"

    async def test_a_numeric_id_is_still_an_id(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        router.post("/api/v1/generate/video").respond(200, json={**SUBMITTED, "generation_id": 42})
        assert (await make_client().videos.generate("a cat")).id == "42"

    async def test_success_false_without_an_id_is_kolbo_refusing(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        router.post("/api/v1/generate/video").respond(
            200, json={"success": False, "error": "nope", "code": "MODEL_NOT_FOUND"}
        )
        with pytest.raises(k.BadRequestError):
            await make_client().videos.generate("a cat")

    @pytest.mark.parametrize("field", ["credits_charged", "poll_interval_hint"])
    async def test_numbers_too_big_for_a_float_are_dropped(
        self, router: respx.MockRouter, make_client: MakeClient, field: str
    ) -> None:
        body = json.dumps({**SUBMITTED, field: 0}).replace(
            f'"{field}": 0', f'"{field}": 1{"0" * 400}'
        )
        router.post("/api/v1/generate/video").respond(
            200, content=body.encode(), headers={"content-type": "application/json"}
        )
        gen = await make_client().videos.generate("a cat")
        assert gen.id == "gen1"
        assert gen.submission is not None and getattr(gen.submission, field) is None

    async def test_overflowing_status_and_catalog_values_are_read(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        huge = "1" + "0" * 400
        router.get("/api/v1/generate/gen1/status").respond(
            200,
            content=(
                '{"success": true, "generation_id": "gen1", "state": "completed", '
                f'"progress": 1e400, "credits_used": {huge}, '
                '"result": {"urls": ["https://cdn.kolbo.ai/a.mp4"]}}'
            ).encode(),
            headers={"content-type": "application/json"},
        )
        router.get("/api/v1/models").respond(
            200,
            content=(
                '{"success": true, "models": [{"identifier": "m", "credit": ' + huge + "}]}"
            ).encode(),
            headers={"content-type": "application/json"},
        )
        client = make_client()
        assert (await client.generations.attach("gen1").result()).url
        [model] = await client.models.list()
        assert model.identifier == "m"


@pytest.mark.anyio
class TestKeyNeverInMessages:
    async def test_a_page_echoing_the_headers(
        self, router: respx.MockRouter, make_client: MakeClient
    ) -> None:
        echo = f"<html>debug: X-API-Key: {KEY}</html>"
        router.get("/api/v1/account/credits").respond(200, text=echo)
        with pytest.raises(k.APIResponseValidationError) as info:
            await make_client().account.credits()
        for text in (str(info.value), repr(info.value), repr(info.value.args)):
            assert KEY not in text and KEY[11:30] not in text

    @pytest.mark.parametrize("pad", [60, 100, 110, 115])
    async def test_a_key_straddling_the_preview_cut(
        self, router: respx.MockRouter, make_client: MakeClient, pad: int
    ) -> None:
        page = "x" * pad + KEY + "y" * 300
        router.post("/api/v1/generate/video").respond(504, text=page)
        router.get("/api/v1/models").respond(503, text=page)
        client = make_client(max_retries=0)
        with pytest.raises(k.SubmissionOutcomeUnknownError) as unknown:
            await client.videos.generate("a cat")
        with pytest.raises(k.InternalServerError) as status:
            await client.models.list()
        for error in (unknown.value, status.value):
            assert KEY[11:25] not in str(error)


_FOOD_KEY = "kolbo_live_" + "f00d" * 10


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["gateway_504", "drop_after", "500"])
async def test_no_frame_of_a_traceback_holds_the_key(fault: str) -> None:
    """Sentry, `pytest -l` and rich show a traceback's locals: none may hold the key."""
    import traceback

    sim = Simulator(clock=VirtualClock())
    sim.inject("generate", fault)
    # A module constant, so that this test's own frame holds no local with the key.
    async with sim.client(api_key=_FOOD_KEY, max_retries=0) as client:
        with pytest.raises(k.KolboError) as info:
            await client.videos.generate("a cat")
    shown = "".join(
        traceback.TracebackException.from_exception(info.value, capture_locals=True).format()
    )
    assert "f00df00d" not in shown
