"""Adversarial local files given for media (issue 14): odd paths are refused naming the
argument before anything is sent; paths that look like URLs are files; a name with quotes or
line breaks cannot inject a header into a multipart body; a file that changes under the SDK
is either sent as checked or refused, never half-sent and paid for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async.testing import Simulator, VirtualClock
from kolbo_async.testing._forms import parse_form

KEY = "kolbo_live_" + "5d" * 20
URL = "https://example.com/b.png"

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Simulator:
    return Simulator(clock=clock)


def _odd_paths(tmp: Path) -> dict[str, Any]:
    os.mkfifo(tmp / "fifo.png")
    os.symlink(tmp, tmp / "dir-link.png")
    os.symlink(tmp / "nowhere.png", tmp / "dangling.png")
    with open(tmp / "sparse.mp4", "wb") as file:
        file.truncate(600 * 1024 * 1024)  # 600 MiB of holes: over every cap, costs no disk
    return {
        "fifo": tmp / "fifo.png",
        "dev-zero": "/dev/zero",
        "directory": str(tmp),
        "symlink-to-dir": tmp / "dir-link.png",
        "dangling-symlink": str(tmp / "dangling.png"),
        "huge-sparse": tmp / "sparse.mp4",
        "scheme-without-slashes": "http:foo.png",
        "slashes-without-colon": "https//example.com/a.png",
        "ftp-url": "ftp://example.com/a.png",
        "file-url": "file:///etc/passwd",
        "empty": "",
        "blank": "   ",
        "nul": "a\x00b.png",
        "bytes-pathlike-missing": _Fs(os.fsencode(tmp / "missing.png")),
    }


class _Fs:
    """An `os.PathLike` whose `__fspath__` returns what it was given."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __fspath__(self) -> Any:
        return self.value


ODD = ["fifo", "dev-zero", "directory", "symlink-to-dir", "dangling-symlink", "huge-sparse",
       "scheme-without-slashes", "slashes-without-colon", "ftp-url", "file-url", "empty",
       "blank", "nul", "bytes-pathlike-missing"]  # fmt: skip


@pytest.mark.parametrize("case", ODD)
async def test_an_odd_path_is_refused_naming_the_argument_before_anything_is_sent(
    sim: Simulator, clock: VirtualClock, tmp_path: Path, case: str
) -> None:
    value = _odd_paths(tmp_path)[case]
    calls = {
        "first_frame": lambda c: c.videos.from_frames(value, URL),
        "video": lambda c: c.videos.from_video(value),
        "audio": lambda c: c.videos.lipsync(URL, value),
        "file": lambda c: c.media.upload(value),
        "image_url": lambda c: c.videos.from_image(value),
    }
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        for field, call in calls.items():
            with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
                await call(client)
            assert info.value.field == field, (case, info.value)
            assert isinstance(info.value, ValueError)
    assert not sim.requests


async def test_a_path_that_looks_like_a_url_but_exists_is_sent_as_a_file(
    sim: Simulator, clock: VirtualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("http:foo.png").write_bytes(b"\x89PNG-looks-like-a-url")
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        media = await client.media.upload("http:foo.png")
    assert media.url.endswith("/http:foo.png") or media.url.endswith("/http%3Afoo.png")
    [upload] = sim.requests
    assert upload.path == "/api/v1/media/upload" and upload.status == 200


async def test_an_uppercase_or_padded_url_is_a_url(sim: Simulator, clock: VirtualClock) -> None:
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        await client.videos.from_frames("HTTPS://EXAMPLE.COM/A.PNG", f"  {URL} ")
    [post] = sim.requests
    assert post.json == {"first_frame_url": "HTTPS://EXAMPLE.COM/A.PNG", "last_frame_url": URL}


async def test_a_bytes_pathlike_to_an_existing_file_is_sent(
    sim: Simulator, clock: VirtualClock, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"mp4-bytes")
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        await client.videos.from_video(_Fs(os.fsencode(clip)))
    assert len(sim.generations) == 1


NASTY = ['a"b.png', "a\r\nContent-Type: evil\r\n\r\nX.png", 'x"; name="model.png',
         "naïve ✓ café.png", "back\\slash.png"]  # fmt: skip


@pytest.mark.parametrize("name", NASTY)
async def test_a_nasty_file_name_cannot_inject_into_the_multipart_body(
    clock: VirtualClock, tmp_path: Path, name: str
) -> None:
    face = tmp_path / name
    face.write_bytes(b"\x89PNG-face")
    voice = tmp_path / "voice.mp3"
    voice.write_bytes(b"ID3-voice")
    bodies: list[httpx.Request] = []
    sim = Simulator(clock=clock)
    inner = sim.transport()

    class Keep(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await request.aread()
            bodies.append(request)
            return await inner.handle_async_request(request)

    async with AsyncKolbo(KEY, _transport=Keep(), _clock=clock) as client:
        gen = await client.videos.lipsync(face, voice, prompt="speak")
    [request] = bodies
    fields, files = parse_form(request.headers["content-type"], request.content)
    assert fields == [("prompt", "speak")]
    assert [(part, kind, data) for part, _, kind, data in files] == [
        ("image", "image/png", b"\x89PNG-face"), ("audio", "audio/mpeg", b"ID3-voice")
    ]  # fmt: skip
    # The first part's head is its boundary, one Content-Disposition, one Content-Type.
    head = request.content.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert len(head) == 3 and head[1].startswith(b"Content-Disposition: form-data; name=")
    assert head[2] == b"Content-Type: image/png"
    assert sim.generations[gen.id].request["prompt"] == "speak"


class _Edit(httpx.AsyncBaseTransport):
    """Runs `edit` just before the first generation POST's body is read: the file changes
    between the check (at the call) and the send."""

    def __init__(self, inner: httpx.AsyncBaseTransport, edit: Any) -> None:
        self.inner = inner
        self.edit = edit
        self.sizes: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.edit is not None and "/generate/" in request.url.path:
            edit, self.edit = self.edit, None
            edit()
        self.sizes.append(len(await request.aread()))
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("how", ["shrunk", "deleted"])
async def test_a_file_shrunk_or_deleted_after_its_check_is_refused_unsent(
    clock: VirtualClock, tmp_path: Path, how: str
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(os.urandom(3 * 1024 * 1024))
    sim = Simulator(clock=clock)
    change = (lambda: os.truncate(clip, 10)) if how == "shrunk" else clip.unlink
    async with AsyncKolbo(KEY, _transport=_Edit(sim.transport(), change), _clock=clock) as c:
        with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
            await c.videos.from_video(clip)
    assert info.value.field == "video" and str(clip) in str(info.value)
    assert not sim.requests and not sim.generations


async def test_a_file_rewritten_with_the_same_size_sends_what_is_on_disk(
    clock: VirtualClock, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"A" * 5000)
    sim = Simulator(clock=clock)
    edit = _Edit(sim.transport(), lambda: clip.write_bytes(b"B" * 5000))
    async with AsyncKolbo(KEY, _transport=edit, _clock=clock) as client:
        gen = await client.videos.from_video(clip)
        url = sim.generations[gen.id].request["video_url"]
        async with httpx.AsyncClient(transport=sim.transport()) as http:
            assert (await http.get(url)).content == b"B" * 5000


async def test_a_file_deleted_while_it_is_being_sent_is_sent_whole(
    clock: VirtualClock, tmp_path: Path
) -> None:
    """An open file stays readable on POSIX once unlinked: the part is complete."""
    clip = tmp_path / "clip.mp4"
    data = os.urandom(3 * 1024 * 1024 + 5)
    clip.write_bytes(data)
    sim = Simulator(clock=clock)
    inner = sim.transport()
    got: list[bytes] = []

    class UnlinkMidway(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            chunks = []
            async for chunk in request.stream:  # type: ignore[union-attr]
                chunks.append(chunk)
                if len(chunks) == 2 and clip.exists():
                    clip.unlink()
            body = b"".join(chunks)
            got.append(body)
            again = httpx.Request(request.method, request.url, headers=request.headers,
                                  content=body)  # fmt: skip
            return await inner.handle_async_request(again)

    async with AsyncKolbo(KEY, _transport=UnlinkMidway(), _clock=clock) as client:
        await client.videos.from_video(clip)
    assert data in got[0] and len(sim.generations) == 1
