"""Adversarial hunt for the API key on the routes that send local files (issue 14).

Every error a multipart POST, an upload-first route or an upload can end in is searched for
the key: its text, its traceback, its pickle, and the headers of every request reachable from
it or its causes. Logs at DEBUG, and what the ``kolbo`` commands print (each route, on
success and on a lost answer, plain and ``--json``), are searched too.
"""

from __future__ import annotations

import io
import logging
import pickle
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo, _cli
from kolbo_async._cli import main
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "9b" * 20

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    files = {"face": tmp_path / "face.png", "voice": tmp_path / "voice.mp3"}
    files["face"].write_bytes(b"\x89PNG\r\n\x1a\n-face")
    files["voice"].write_bytes(b"ID3-voice")
    return files


def _reachable(error: BaseException) -> Iterator[object]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        yield exc
        for name in ("request", "response"):
            try:
                value = getattr(exc, name, None)
            except Exception:  # httpx raises when an error has no request
                value = None
            if value is not None:
                yield value
        todo += [exc.__cause__, exc.__context__]


def _leaks(error: BaseException) -> list[str]:
    found = []
    for item in _reachable(error):
        if isinstance(item, BaseException):
            text = "".join(traceback.format_exception(item)) + repr(item)
            if KEY in text:
                found.append(f"text of {type(item).__name__}")
            try:
                if KEY.encode() in pickle.dumps(item):
                    found.append(f"pickle of {type(item).__name__}")
            except Exception:  # not every cause pickles; ours are checked elsewhere
                pass
        request = item.request if isinstance(item, httpx.Response) else item
        if isinstance(request, httpx.Request) and KEY in request.headers.get("x-api-key", ""):
            found.append(f"header of a request to {request.url.path}")
    return found


Call = Callable[[AsyncKolbo, dict[str, Path]], Awaitable[object]]
CALLS: dict[str, Call] = {
    "lipsync-multipart": lambda c, f: c.videos.lipsync(f["face"], f["voice"]),
    "from-image-upload-first": lambda c, f: c.videos.from_image(f["face"], prompt="zoom"),
    "image-edit-upload-first": lambda c, f: c.images.edit([f["face"]], "green"),
    "upload": lambda c, f: c.media.upload(f["voice"], description="v"),
}
FAULTS = [
    ("generate", "drop_after"),
    ("generate", "gateway_502"),
    ("generate", "gateway_garbled_200"),
    ("generate", "500"),
    ("generate", "insufficient_credits"),
    ("generate", "drop_before"),
    ("upload", "drop_after"),
    ("upload", "gateway_524"),
    ("upload", "invalid_json"),
    ("upload", "drop_before"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("route", "fault"), FAULTS, ids=["-".join(f) for f in FAULTS])
@pytest.mark.parametrize("name", sorted(CALLS))
async def test_no_error_of_a_file_route_carries_the_key(
    media: dict[str, Path],
    name: str,
    route: str,
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    sim.inject(route, fault, times=10)  # also every retry a refused connection gets
    error: BaseException | None = None
    with caplog.at_level(logging.DEBUG):
        async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
            with anyio.fail_after(30):
                try:
                    await CALLS[name](client, media)
                except k.KolboError as exc:
                    error = exc
    if error is not None:
        assert _leaks(error) == []
    assert KEY not in caplog.text
    assert all(r.headers.get("x-api-key") == KEY for r in sim.requests if r.host == "api")
    assert all("x-api-key" not in r.headers for r in sim.requests if r.host == "cdn")


@pytest.mark.anyio
async def test_a_file_shrunk_mid_send_says_so_without_the_key(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"v" * (3 * 1024 * 1024))
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    inner = sim.transport()

    class ShrinkMidway(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen = 0
            async for _ in request.stream:  # type: ignore[union-attr]
                seen += 1
                if seen == 2:
                    clip.write_bytes(b"v")
            return await inner.handle_async_request(request)

    async with AsyncKolbo(KEY, _transport=ShrinkMidway(), _clock=clock) as client:
        with anyio.fail_after(30), pytest.raises(k.InvalidRequestError) as info:
            await client.videos.from_video(clip)
    assert info.value.field == "video" and "shrank" in str(info.value)
    assert _leaks(info.value) == [] and not sim.generations


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old, sys.stderr = sys.stderr, err
    try:
        code = main(list(argv), stdout=out)
    finally:
        sys.stderr = old
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, media: dict[str, Path]) -> Simulator:
    sim = Simulator(clock=VirtualClock())
    monkeypatch.setenv("KOLBO_API_KEY", KEY)
    monkeypatch.setenv("KOLBO_SANDBOX_SPEED", "300")
    monkeypatch.setattr(_cli, "_client", lambda args: sim.client(KEY, rate_limits=None))
    monkeypatch.chdir(tmp_path)
    return sim


COMMANDS = [
    ["image", "a lighthouse", "--reference", "face.png", "--num-images", "2", "--download", "."],
    ["frames", "face.png", "face.png", "--prompt", "dusk", "--download", "out.mp4"],
    ["elements", "a scene", "--image", "face.png", "--audio", "voice.mp3",
     "--keyframe", "face.png@1.5"],
    ["restyle", "face.png", "--prompt", "watercolour"],
    ["lipsync", "face.png", "voice.mp3"],
    ["upload", "face.png", "voice.mp3"],
]  # fmt: skip


@pytest.mark.parametrize("fault", [None, "gateway_502", "drop_after"])
@pytest.mark.parametrize("json_lines", [False, True], ids=["plain", "json"])
@pytest.mark.parametrize("argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_no_kolbo_command_prints_the_key(
    world: Simulator,
    argv: list[str],
    json_lines: bool,
    fault: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if fault is not None:
        world.inject("upload" if argv[0] == "upload" else "generate", fault)
        world.inject("upload", fault)  # an upload-first route fails at its upload
    with caplog.at_level(logging.DEBUG):
        code, out, err = _run(*argv, *(["--json"] if json_lines else []))
    assert KEY not in out and KEY not in err and KEY not in caplog.text
    assert code == (0 if fault is None else 3), err
    assert "Traceback" not in err
