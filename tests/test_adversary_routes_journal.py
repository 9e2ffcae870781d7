"""Adversarial reruns of a journaled batch holding local files (issue 14).

A local file counts by its content: rerun unchanged, nothing is sent (no POST, no upload);
the same file moved and renamed is the same item; a file edited in between (even to the same
size) makes a new item of every request holding it and leaves the others alone. Checked for
every request class that takes a file, on asyncio, trio and the blocking client.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from kolbo_async import (
    AsyncKolbo,
    ElementsToVideo,
    FramesToVideo,
    ImageEdit,
    ImageToVideo,
    Kolbo,
    Lipsync,
    TextToImage,
    VideoToVideo,
)
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "c4" * 20

pytestmark = pytest.mark.timeout(60)


def _requests(a: Path, b: Path, voice: Path) -> list[Any]:
    return [
        FramesToVideo(a, b, prompt="dusk"),
        ImageToVideo(a, prompt="zoom"),
        Lipsync(b, voice),
        ImageEdit([a], "green"),
        TextToImage("a still", reference_images=[b]),
        VideoToVideo(voice, prompt="restyle"),  # the server takes any file; only bytes count
        ElementsToVideo("scene", images=[a], audio=[voice], keyframes=[(b, 1.0)]),
        FramesToVideo(b, b),  # only b: unaffected by editing a
    ]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    a, b, voice = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "voice.mp3"
    a.write_bytes(b"\x89PNG-aaaa")
    b.write_bytes(b"\x89PNG-bbbb")
    voice.write_bytes(b"ID3-voice")
    return a, b, voice


def _posts(sim: Simulator, start: int) -> tuple[int, int]:
    """(generation POSTs, uploads) the simulator received since request number `start`."""
    sent = [r for r in sim.requests[start:] if r.method == "POST" and "/cancel" not in r.path]
    uploads = sum(r.path == "/api/v1/media/upload" for r in sent)
    return len(sent) - uploads, uploads


@pytest.mark.anyio
async def test_unchanged_moved_and_edited_files_across_reruns(
    tmp_path: Path, files: tuple[Path, Path, Path]
) -> None:
    a, b, voice = files
    journal = tmp_path / "batch.db"
    clock = VirtualClock()
    sim = Simulator(clock=clock)

    async def run(make: Callable[[], list[Any]]) -> tuple[int, int]:
        start = len(sim.requests)
        async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
            with anyio.fail_after(50):
                async for outcome in client.videos.generate_many(make(), journal=journal):
                    assert outcome.error is None, outcome.error
        return _posts(sim, start)

    assert (await run(lambda: _requests(a, b, voice)))[0] == 8
    assert await run(lambda: _requests(a, b, voice)) == (0, 0)  # unchanged: nothing sent

    moved = tmp_path / "elsewhere" / "renamed.png"
    moved.parent.mkdir()
    shutil.move(a, moved)
    assert await run(lambda: _requests(moved, b, voice)) == (0, 0)  # moved: same items

    moved.write_bytes(b"\x89PNG-AAAA")  # same size, new content
    # Every request holding `a` is new (frames, from-image, edit, elements); the rest not.
    assert (await run(lambda: _requests(moved, b, voice)))[0] == 4
    assert await run(lambda: _requests(moved, b, voice)) == (0, 0)
    assert len(sim.generations) == 12


def test_blocking_client_knows_a_file_by_its_content(
    tmp_path: Path, files: tuple[Path, Path, Path]
) -> None:
    a, b, voice = files
    journal = tmp_path / "batch.db"
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    with Kolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        for _ in range(2):
            for outcome in client.videos.generate_many(_requests(a, b, voice), journal=journal):
                assert outcome.error is None, outcome.error
        copy = tmp_path / "copy-of-b.png"
        shutil.copy(b, copy)
        start = len(sim.requests)
        for outcome in client.videos.generate_many(_requests(a, copy, voice), journal=journal):
            assert outcome.error is None
        assert _posts(sim, start) == (0, 0)  # a copy is the same content: the same items
    assert len(sim.generations) == 8
