"""Adversarial cancellation of the routes that send local files (issue 14).

A caller that leaves while a file is on the wire must not lose a paid generation without a
trace, nor cause one it no longer waits for: a multipart POST cancelled mid-flight lands and
its generation id is logged; an upload-first route cancelled during its upload never sends
the generation POST. The transport holds each request until the test has cancelled its caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import pytest

from kolbo_async import AsyncKolbo
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "d2" * 20

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class Held(httpx.AsyncBaseTransport):
    """Holds the first request whose path holds `part` until `release` is set."""

    def __init__(self, inner: httpx.AsyncBaseTransport, part: str) -> None:
        self.inner = inner
        self.part = part
        self.arrived = anyio.Event()
        self.release = anyio.Event()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.part in request.url.path and not self.arrived.is_set():
            self.arrived.set()
            await self.release.wait()
        return await self.inner.handle_async_request(request)


Call = Callable[[AsyncKolbo, Path], Awaitable[object]]


async def _cancel_while_held(part: str, call: Call, file: Path) -> tuple[Simulator, Held]:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    held = Held(sim.transport(), part)
    async with AsyncKolbo(KEY, _transport=held, _clock=clock) as client:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                scope = anyio.CancelScope()

                async def caller() -> None:
                    with scope:
                        await call(client, file)

                group.start_soon(caller)
                await held.arrived.wait()
                scope.cancel()
                await anyio.lowlevel.checkpoint()
                held.release.set()
    return sim, held


UPLOAD_FIRST: dict[str, Call] = {
    "from-image": lambda c, f: c.videos.from_image(f, prompt="zoom"),
    "elements-keyframe": lambda c, f: c.videos.from_elements("p", keyframes=[(f, 1.0)]),
    "image-edit": lambda c, f: c.images.edit([f], "green"),
}


@pytest.mark.parametrize("name", sorted(UPLOAD_FIRST))
async def test_cancelled_during_its_upload_no_generation_is_posted(
    tmp_path: Path, name: str
) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG-a")
    sim, held = await _cancel_while_held("/media/upload", UPLOAD_FIRST[name], png)
    assert held.paths == ["/api/v1/media/upload"]  # the upload landed; nothing followed
    assert not sim.generations
    assert [r.status for r in sim.requests] == [200]


async def test_a_multipart_post_cancelled_mid_flight_lands_and_names_its_generation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG-a")
    with caplog.at_level(logging.WARNING, logger="kolbo_async"):
        sim, held = await _cancel_while_held(
            "/generate/lipsync", lambda c, f: c.videos.lipsync(f, f), png
        )
    [generation_id] = sim.generations
    assert held.paths == ["/api/v1/generate/lipsync"]
    assert generation_id in caplog.text and KEY not in caplog.text
