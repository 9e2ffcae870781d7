"""A batch of every route, killed with SIGKILL mid-flight and run again with its journal.

The child process submits a mix of all eight request classes through `generate_many` with a
journal, against a simulator served over HTTP; it is killed while its POSTs are going out, and
the same batch is run again with the same journal against the same server. Counted at the
server: every item is created at most once (nothing is paid twice), and every item ends with an
outcome, the ones whose answer the dead run never recorded flagged
`SubmissionOutcomeUnknownError`. Uses the served-simulator helpers of the journal process tests.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import textwrap
import time
import typing
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import pytest

import kolbo_async as k
from kolbo_async import (
    ElementsToVideo,
    FramesToVideo,
    ImageEdit,
    ImageToVideo,
    Lipsync,
    TextToImage,
    TextToVideo,
    VideoToVideo,
    _batch_types,
)
from kolbo_async.testing import Simulator
from tests.test_journal_processes import KEY, LIMITS, SPEED, created, start

pytest.importorskip("uvicorn")

ROUTES = (
    TextToVideo,
    ImageToVideo,
    FramesToVideo,
    ElementsToVideo,
    VideoToVideo,
    Lipsync,
    TextToImage,
    ImageEdit,
)

#: The batch, as source shared by the child (which runs it) and the test (which reruns it):
#: every route with URLs, then two items with a local file; item i's prompt is "item i",
#: which names it at the server.
REQUESTS = textwrap.dedent(
    """
    import os

    from kolbo_async import (
        ElementsToVideo, FramesToVideo, ImageEdit, ImageToVideo, Lipsync, TextToImage,
        TextToVideo, VideoToVideo,
    )

    A, B = "https://example.com/a.png", "https://example.com/b.png"
    CLIP, VOICE = "https://example.com/clip.mp4", "https://example.com/voice.mp3"

    def make_requests(items):
        # A local file, as a multipart part (elements) and uploaded first (image references).
        local = os.environ["ROUTES_BATCH_LOCAL_FILE"]
        makers = [
            lambda p: TextToVideo(p, duration=5),
            lambda p: ImageToVideo(A, prompt=p),
            lambda p: FramesToVideo(A, B, prompt=p),
            lambda p: ElementsToVideo(p, images=[A], audio=[VOICE], keyframes=[(B, 1.5)]),
            lambda p: VideoToVideo(CLIP, prompt=p),
            lambda p: Lipsync(A, VOICE, prompt=p),
            lambda p: TextToImage(p, num_images=2),
            lambda p: ImageEdit([A], p),
            lambda p: ElementsToVideo(p, images=[local]),
            lambda p: TextToImage(p, reference_images=[local]),
        ]
        return [makers[i % len(makers)](f"item {i}") for i in range(items)]
    """
)

CHILD = REQUESTS + textwrap.dedent(
    """
    import sys, anyio
    from kolbo_async import AsyncKolbo, RateLimits

    async def main(url, journal, items):
        limits = RateLimits(generations_per_minute={gpm}, requests_per_minute={rpm})
        async with AsyncKolbo({key!r}, base_url=url, rate_limits=limits) as client:
            batch = client.videos.generate_many(
                make_requests(int(items)), journal=journal, concurrency=10
            )
            async for outcome in batch:
                print("outcome", outcome.index, flush=True)

    anyio.run(main, *sys.argv[1:4])
    """
).format(gpm=LIMITS.generations_per_minute, rpm=LIMITS.requests_per_minute, key=KEY)

ITEMS = 30  # three of each route, and of each local-file item
KILL_AFTER = 12  # generations created before the SIGKILL


def make_requests(items: int) -> list[Any]:
    """The child's batch, built from the same source."""
    scope: dict[str, Any] = {}
    exec(REQUESTS, scope)
    requests: list[Any] = scope["make_requests"](items)
    return requests


def test_batch_outcome_request_names_every_route() -> None:
    """`BatchOutcome.request` is typed as any route, not only the two video classes."""
    annotation = attrs.fields(k.BatchOutcome).request.type
    hint = eval(annotation, vars(_batch_types)) if isinstance(annotation, str) else annotation
    allowed = tuple(arg for arg in typing.get_args(hint) if arg is not type(None))
    assert all(issubclass(route, allowed) for route in ROUTES), hint


@pytest.fixture
def local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The batch's local file (the child inherits its name through the environment)."""
    path = tmp_path / "shot.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 256)
    monkeypatch.setenv("ROUTES_BATCH_LOCAL_FILE", str(path))
    return path


def test_the_batch_mixes_every_route(local_file: Path) -> None:
    requests = make_requests(ITEMS)
    assert {type(r) for r in requests} == set(ROUTES)
    assert sum(str(local_file) in repr(r) for r in requests) == 2 * ITEMS // 10


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_batch_of_every_route_then_rerun_pays_nothing_twice(
    tmp_path: Path, local_file: Path
) -> None:
    """Kill the batch at an instant of its POSTs; the rerun re-attaches what was submitted,
    flags what it cannot know, sends every other item once, and every item has an outcome."""
    journal = tmp_path / "routes.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    sim = Simulator(speed=SPEED, processing_seconds=120, seed=11)
    with sim.serve() as url:
        child = start(script, url, journal, ITEMS)
        try:
            deadline = time.monotonic() + 30
            while sum(created(sim).values()) < KILL_AFTER:
                assert child.poll() is None, child.communicate()
                assert time.monotonic() < deadline, "the child never got going"
                time.sleep(0.002)
        finally:
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        before = created(sim)
        assert KILL_AFTER <= sum(before.values()) < ITEMS
        paid_before = sum(g.credits for g in sim.generations.values())

        with closing(sqlite3.connect(journal)) as db:
            rows = dict(db.execute("SELECT idx, state FROM items").fetchall())
        # Every POST that reached Kolbo has a journal row: the intent is written first.
        assert {int(prompt.split()[1]) for prompt in before} <= set(rows)

        requests = make_requests(ITEMS)
        with k.Kolbo(KEY, base_url=url, rate_limits=LIMITS) as client:
            outcomes = list(client.videos.generate_many(requests, journal=journal))

        after = created(sim)
        generations = sim.generations
        seen = sim.requests
    # Every item ends with exactly one outcome, carrying its own request.
    assert sorted(o.index for o in outcomes) == list(range(ITEMS))
    assert all(o.request == requests[o.index] for o in outcomes)
    # Counted at the server: no item was created twice, so none was paid twice.
    assert max(after.values()) == 1
    assert after.keys() >= before.keys()
    # The rerun paid only for items the dead run had not sent: what was charged before the
    # kill is still all that its items cost.
    rerun_paid = sum(g.credits for g in generations.values() if g.request["prompt"] not in before)
    assert sum(g.credits for g in generations.values()) == paid_before + rerun_paid
    # Lost answers are flagged, never paid for again; everything else succeeded.
    unknown = {o.index for o in outcomes if isinstance(o.error, k.SubmissionOutcomeUnknownError)}
    assert unknown == {i for i, state in rows.items() if state == "intent"}
    assert all(o.error is None for o in outcomes if o.index not in unknown), [
        (o.index, o.error) for o in outcomes if o.error is not None and o.index not in unknown
    ]
    # Every generation Kolbo created is reported by the rerun, or is one of the flagged items.
    reported = {o.generation.id for o in outcomes if o.generation is not None}
    assert len(generations) - len(reported) <= len(unknown)
    # Every route was exercised, on both sides of the kill.
    kinds = {g.kind for g in generations.values()}
    assert kinds >= {"text_to_video", "img_to_video", "firstlastgenerations", "elements"}
    assert kinds >= {"video_to_video", "text_to_img", "image_editing"}
    assert kinds & {"lipsync-image", "lipsync-video"}
    # The local file went as Kolbo's client sends it: a multipart part, and an upload first.
    parts = [r for r in seen if r.headers.get("content-type", "").startswith("multipart/")]
    assert any(r.path == "/api/v1/generate/elements" for r in parts)
    assert any(r.path == "/api/v1/media/upload" for r in parts)
