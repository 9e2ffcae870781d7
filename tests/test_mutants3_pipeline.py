"""Tests for what the full `_pipeline` mutation run found unguarded: which bucket a generation
POST's 429 cools, the body an unreadable success keeps, the time a debug line gives, and a
Ctrl-C on trio that ends the caller's wait in the same turn as its POST lands."""

from __future__ import annotations

import logging
import re
import signal
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async._hooks import CooldownStarted, Event, PacingWait
from kolbo_async.testing import Simulator, VirtualClock

from .test_pipeline import KEY, MakeClient
from .test_pipeline import make_client as make_client  # noqa: PLC0414
from .test_pipeline import router as router  # noqa: PLC0414


@pytest.mark.anyio
async def test_a_429_on_a_generation_post_cools_the_generation_bucket() -> None:
    """Kolbo's 429 on a generation POST holds back generations, not every request: the
    cooldown is the generation bucket's, and the retry waits it out there."""
    sim = Simulator(clock=VirtualClock())
    events: list[Event] = []
    sim.inject("generate", "429")
    async with sim.client(KEY, hooks=[events.append]) as client:
        await client.videos.generate("a cat")
    assert [(e.bucket, e.host) for e in events if isinstance(e, CooldownStarted)] == [
        ("generate", None)
    ]
    assert {e.bucket for e in events if isinstance(e, PacingWait)} == {"generate"}


@pytest.mark.anyio
async def test_an_unreadable_success_keeps_its_body(
    make_client: MakeClient, router: respx.MockRouter
) -> None:
    """A 200 whose object the SDK cannot read: the error carries the body and shows it."""
    body = {"success": True, "models": "not a list"}
    router.get("/api/v1/models").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(k.APIResponseValidationError) as raised:
        await make_client().models.list()
    assert raised.value.body == body
    assert "not a list" in str(raised.value)


@pytest.mark.anyio
async def test_the_debug_line_gives_the_answer_time(
    make_client: MakeClient, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    router.get("/api/v1/account/credits").mock(return_value=httpx.Response(200, json={}))
    caplog.set_level(logging.DEBUG, logger="kolbo_async")
    with pytest.raises(k.APIResponseValidationError):  # logged as it came, before reading
        await make_client().account.credits()
    [line] = [
        r.getMessage() for r in caplog.records if "/api/v1/account/credits -> 200" in r.getMessage()
    ]
    seconds = float(re.findall(r"\((\d+\.\d+) s\)", line)[0])
    assert 0 <= seconds < 5  # in-process: milliseconds (a sum with the start gives thousands)


class _CtrlCAfterAnswer(httpx.AsyncBaseTransport):
    """The simulator's transport; once the first POST is answered, a Ctrl-C, then one more
    trip round trio's scheduler before the answer goes back (so that, at random, the
    caller's wait is interrupted before or in the same turn as the POST lands)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.fired = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and not self.fired:
            self.fired = True
            signal.raise_signal(signal.SIGINT)
            await anyio.lowlevel.checkpoint()
        return response


def test_trio_ctrl_c_in_the_turn_the_post_lands_logs_the_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Either way trio orders that turn, the caller raises KeyboardInterrupt and the id of
    the generation just charged for is logged once (20 runs: both orders, all but surely)."""
    pytest.importorskip("trio")
    for _ in range(20):
        caplog.clear()
        sim = Simulator(clock=VirtualClock())
        transport = _CtrlCAfterAnswer(sim.transport())

        async def main(transport: Any = transport, clock: Any = sim.clock) -> None:
            async with AsyncKolbo(KEY, _transport=transport, _clock=clock) as client:
                await client.videos.generate("a cat")

        with pytest.raises(KeyboardInterrupt):
            anyio.run(main, backend="trio")
        (generation,) = sim.generations.values()
        logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert [m for m in logged if f"generation {generation.id} was created" in m], logged
        assert len(logged) == 1, logged
