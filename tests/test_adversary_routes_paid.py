"""Adversarial checks of never-pay-twice on the routes that send local files (issue 14).

A multipart POST is a paid POST: a gateway page or a dropped connection after the body went
out is `SubmissionOutcomeUnknownError` with exactly one POST on the server; a 429 or a refused
connection sends the *whole* body again, byte for byte; an upload-first route never uploads
twice because its POST failed. Counted from what the simulator received, through a transport
that keeps the raw bytes of every request.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, Kolbo
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "7c" * 20
UPLOAD = "/api/v1/media/upload"

pytestmark = pytest.mark.timeout(60)


class Recording(httpx.AsyncBaseTransport):
    """Keeps (method, path, raw body) of each request, then hands it to the simulator."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.sent.append((request.method, request.url.path, body))
        return await self.inner.handle_async_request(request)

    def posts(self, path_part: str = "/generate/") -> list[bytes]:
        return [body for method, path, body in self.sent if method == "POST" and path_part in path]


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    files = {
        "day": tmp_path / "day.png",
        "night": tmp_path / "night.png",
        "clip": tmp_path / "clip.mp4",
        "voice": tmp_path / "voice.mp3",
    }
    files["day"].write_bytes(b"\x89PNG-day" + os.urandom(4000))
    files["night"].write_bytes(b"\x89PNG-night" + os.urandom(4000))
    # Over one read chunk (1 MiB): the large-file path reads it in a worker thread.
    files["clip"].write_bytes(os.urandom(2 * 1024 * 1024 + 333))
    files["voice"].write_bytes(b"ID3" + os.urandom(3000))
    return files


Route = Callable[[AsyncKolbo, dict[str, Path]], Awaitable[Any]]

#: Every route that sends local files as multipart parts, and the file it must carry whole.
MULTIPART: dict[str, tuple[Route, str]] = {
    "frames": (lambda c, f: c.videos.from_frames(f["day"], f["night"], prompt="dusk"), "night"),
    "elements": (
        lambda c, f: c.videos.from_elements(
            "a scene", images=[f["day"]], videos=[f["clip"]], audio=[f["voice"]]
        ),
        "clip",
    ),
    "from_video": (lambda c, f: c.videos.from_video(f["clip"], prompt="watercolour"), "clip"),
    "lipsync": (lambda c, f: c.videos.lipsync(f["day"], f["voice"]), "voice"),
}

LOST = ["gateway_502", "gateway_504", "gateway_524", "gateway_garbled_200", "drop_after"]


async def _run(
    route: Route, media: dict[str, Path], faults: list[tuple[str, str]]
) -> tuple[Simulator, Recording, BaseException | None]:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    for where, fault in faults:
        sim.inject(where, fault)
    transport = Recording(sim.transport())
    error: BaseException | None = None
    async with AsyncKolbo(KEY, _transport=transport, _clock=clock) as client:
        with anyio.fail_after(30):
            try:
                await route(client, media)
            except k.KolboError as exc:
                error = exc
    return sim, transport, error


@pytest.mark.anyio
@pytest.mark.parametrize("fault", LOST)
@pytest.mark.parametrize("name", sorted(MULTIPART))
async def test_a_lost_answer_to_a_multipart_post_is_never_sent_again(
    media: dict[str, Path], name: str, fault: str
) -> None:
    sim, transport, error = await _run(MULTIPART[name][0], media, [("generate", fault)])
    assert isinstance(error, k.SubmissionOutcomeUnknownError), error
    assert len(transport.posts()) == 1
    assert len(sim.generations) == 1  # the work was done and charged: one of it
    assert not transport.posts(UPLOAD)  # a multipart route uploads nothing first


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["429", "drop_before"])
@pytest.mark.parametrize("name", sorted(MULTIPART))
async def test_a_refused_multipart_post_is_sent_again_whole(
    media: dict[str, Path], name: str, fault: str
) -> None:
    route, carried = MULTIPART[name]
    sim, transport, error = await _run(route, media, [("generate", fault)])
    assert error is None
    first, second = transport.posts()
    assert len(first) == len(second) > media[carried].stat().st_size
    assert media[carried].read_bytes() in second
    # The same parts and bytes; only the boundary may differ (it does not: one form).
    assert first == second
    assert len(sim.generations) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("fault", LOST)
async def test_upload_first_then_a_lost_post_uploads_once_posts_once(
    media: dict[str, Path], fault: str
) -> None:
    route: Route = lambda c, f: c.videos.from_image(f["day"], prompt="slow zoom")  # noqa: E731
    sim, transport, error = await _run(route, media, [("generate", fault)])
    assert isinstance(error, k.SubmissionOutcomeUnknownError)
    assert len(transport.posts(UPLOAD)) == 1 and len(transport.posts()) == 1
    assert len(sim.generations) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["429", "drop_before"])
async def test_upload_first_then_a_refused_post_resends_the_post_not_the_upload(
    media: dict[str, Path], fault: str
) -> None:
    route: Route = lambda c, f: c.videos.from_image(f["day"], prompt="slow zoom")  # noqa: E731
    sim, transport, error = await _run(route, media, [("generate", fault)])
    assert error is None
    assert len(transport.posts(UPLOAD)) == 1
    first, second = transport.posts()
    assert first == second and b"/uploads/" in first  # the uploaded URL, both times
    assert len(sim.generations) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["gateway_502", "drop_after", "invalid_json"])
async def test_a_lost_upload_before_a_generation_stops_there(
    media: dict[str, Path], fault: str
) -> None:
    """The upload's answer is lost: nothing is generated (no URL to send), nothing resent."""
    route: Route = lambda c, f: c.videos.from_image(f["day"], prompt="slow zoom")  # noqa: E731
    sim, transport, error = await _run(route, media, [("upload", fault)])
    assert isinstance(error, k.SubmissionOutcomeUnknownError)
    assert len(transport.posts(UPLOAD)) == 1 and not transport.posts()
    assert not sim.generations


@pytest.mark.anyio
async def test_an_upload_429_sends_the_whole_large_file_again(media: dict[str, Path]) -> None:
    route: Route = lambda c, f: c.media.upload(f["clip"])  # noqa: E731
    _, transport, error = await _run(route, media, [("upload", "429")])
    assert error is None
    first, second = transport.posts(UPLOAD)
    assert first == second and media["clip"].read_bytes() in second


@pytest.mark.anyio
async def test_a_file_deleted_between_a_429_and_its_retry_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    """The retry re-reads the file from disk; gone, it is the caller's error, and nothing
    was charged (the 429 came before any work)."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(os.urandom(5000))
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.inject("generate", "429")
    inner = sim.transport()

    class DeleteAfterFirst(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            if response.status_code == 429:
                clip.unlink()
            return response

    async with AsyncKolbo(KEY, _transport=DeleteAfterFirst(), _clock=clock) as client:
        with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
            await client.videos.from_video(clip)
    assert info.value.field == "video" and "clip.mp4" in str(info.value)
    assert [r.status for r in sim.requests] == [429]
    assert not sim.generations


def test_blocking_client_a_lost_multipart_answer_is_not_resent(media: dict[str, Path]) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.inject("generate", "gateway_504")
    transport = Recording(sim.transport())
    with Kolbo(KEY, _transport=transport, _clock=clock) as client:
        with pytest.raises(k.SubmissionOutcomeUnknownError):
            client.videos.lipsync(media["day"], media["voice"])
        sim.inject("generate", "429")
        gen = client.videos.from_frames(media["day"], media["night"])
    lipsync, first, second = transport.posts()
    assert b'name="audio"' in lipsync and first == second
    assert len(sim.generations) == 2 and gen.id in sim.generations
