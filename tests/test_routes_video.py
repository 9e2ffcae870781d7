"""The video routes of kolbo-api.md §13 end to end: `videos.from_frames` (FramesToVideo),
`from_video` (VideoToVideo), `lipsync` (Lipsync) and `from_elements` (ElementsToVideo).

Through the simulator on a virtual clock (asyncio, trio and the blocking client), the exact
JSON sent (respx), validation that sends nothing, the catalog's caps as 400s, and a batch
mixing every route with TextToVideo whose journal rerun pays nothing twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import (
    AsyncKolbo,
    ElementsToVideo,
    FramesToVideo,
    Kolbo,
    Lipsync,
    TextToImage,
    TextToVideo,
    VideoToVideo,
)
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "f6" * 20
API = "https://api.kolbo.ai/api/v1/generate"
A = "https://example.com/a.png"
B = "https://example.com/b.png"
CLIP = "https://example.com/clip.mp4"
VOICE = "https://example.com/voice.mp3"

#: (call on client.videos, its args, its kwargs, the path, the JSON Kolbo receives)
ROUTES: list[tuple[str, tuple[Any, ...], dict[str, Any], str, dict[str, Any]]] = [
    ("from_frames", (A, B), {"prompt": "dawn to dusk", "duration": 5},
     "first-last-frame",
     {"first_frame_url": A, "last_frame_url": B, "prompt": "dawn to dusk", "duration": 5}),
    ("from_video", (CLIP,), {"prompt": "as a watercolour", "reference_images": [A]},
     "video-from-video",
     {"video_url": CLIP, "prompt": "as a watercolour", "reference_images": [A]}),
    ("lipsync", (A, VOICE), {"bounding_box_target": [0, 0, 64, 64]},
     "lipsync",
     {"source_url": A, "audio_url": VOICE, "bounding_box_target": [0, 0, 64, 64]}),
    ("from_elements", ("a bottle turns",), {"images": [A, B], "audio": [VOICE],
                                            "keyframes": [(A, 0), {"image_url": B,
                                                                   "timestamp_seconds": 4.5}]},
     "elements",
     {"prompt": "a bottle turns", "reference_images": [A, B], "reference_audio_urls": [VOICE],
      "keyframes": [{"image_url": A, "timestamp_seconds": 0},
                    {"image_url": B, "timestamp_seconds": 4.5}]}),
]  # fmt: skip
IDS = [route[0] for route in ROUTES]


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(vclock: VirtualClock) -> Simulator:
    return Simulator(clock=vclock)


@pytest.fixture
async def client(sim: Simulator, vclock: VirtualClock) -> AsyncIterator[AsyncKolbo]:
    async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=vclock) as client:
        yield client


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def posts(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.method == "POST" and "/cancel" not in r.path]


@pytest.mark.anyio
class TestRoundTrip:
    @pytest.mark.parametrize(("call", "args", "kwargs", "path", "sent"), ROUTES, ids=IDS)
    async def test_submit_wait_download(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path,
        call: str, args: tuple[Any, ...], kwargs: dict[str, Any], path: str,
        sent: dict[str, Any],
    ) -> None:  # fmt: skip
        """Each route: the JSON Kolbo receives, a VideoResult, the MP4 on disk."""
        gen = await getattr(client.videos, call)(*args, **kwargs)
        result = await gen.result()
        assert type(result) is k.VideoResult and result.url
        target = await gen.download(tmp_path / f"{call}.mp4")
        assert target.read_bytes()[4:8] == b"ftyp"
        [post] = posts(sim)
        assert post.path == f"/api/v1/generate/{path}"
        assert post.json == sent

    async def test_lipsync_of_a_video_face(self, sim: Simulator, client: AsyncKolbo) -> None:
        """A face given as a video is a lipsync-video generation."""
        gen = await client.videos.lipsync(CLIP, VOICE, model="sync-lipsync-2")
        await gen.wait()
        assert sim.generations[gen.id].kind == "lipsync-video"

    @pytest.mark.parametrize(
        ("call", "args", "kwargs", "code"),
        [
            ("from_elements", ("x",), {"model": "kling-o3-elements", "images": [A] * 5},
             "TOO_MANY_REFERENCE_IMAGES"),
            ("from_elements", ("x",), {"model": "kling-o3-elements", "videos": [CLIP] * 2},
             "TOO_MANY_REFERENCE_VIDEOS"),
            ("from_elements", ("x",), {"model": "kling-o3-elements",
                                       "keyframes": [(A, t) for t in range(4)]},
             "TOO_MANY_KEYFRAMES"),
            ("from_video", (CLIP,), {"model": "runway-aleph", "reference_videos": [CLIP] * 2},
             "TOO_MANY_REFERENCE_VIDEOS"),
            ("from_video", (CLIP,), {"model": "runway-aleph", "duration": 12},
             "INVALID_DURATION"),
            ("from_frames", (A, B), {"model": "seedance-2"}, "WRONG_MODEL_TYPE"),
            ("lipsync", (A, VOICE), {"model": "flux-2-pro"}, "WRONG_MODEL_TYPE"),
        ],
    )  # fmt: skip
    async def test_a_cap_exceeded_is_a_400_and_charges_nothing(
        self, sim: Simulator, client: AsyncKolbo,
        call: str, args: tuple[Any, ...], kwargs: dict[str, Any], code: str,
    ) -> None:  # fmt: skip
        before = sim.credits()
        with pytest.raises(k.BadRequestError) as info:
            await getattr(client.videos, call)(*args, **kwargs)
        assert info.value.code == code
        assert sim.credits() == before and not sim.generations

    async def test_frames_are_priced_per_second(self, client: AsyncKolbo) -> None:
        gen = await client.videos.from_frames(A, B, model="kling-o1-first-last-frame",
                                              duration=10)  # fmt: skip
        assert gen.submission is not None and gen.submission.credits_charged == 20 * 10


@pytest.mark.parametrize(("call", "args", "kwargs", "path", "sent"), ROUTES, ids=IDS)
def test_blocking_client_round_trip(
    tmp_path: Path, call: str, args: tuple[Any, ...], kwargs: dict[str, Any], path: str,
    sent: dict[str, Any],
) -> None:  # fmt: skip
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    with Kolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        gen = getattr(client.videos, call)(*args, **kwargs)
        assert gen.result().url
        assert gen.download(tmp_path / "v.mp4").stat().st_size > 0
    assert [p.json for p in posts(sim)] == [sent]


@pytest.mark.anyio
class TestWire:
    @pytest.mark.parametrize(("call", "args", "kwargs", "path", "sent"), ROUTES, ids=IDS)
    async def test_exact_json(
        self, router: respx.MockRouter, call: str, args: tuple[Any, ...],
        kwargs: dict[str, Any], path: str, sent: dict[str, Any],
    ) -> None:  # fmt: skip
        route = router.post(f"{API}/{path}").mock(return_value=httpx.Response(
            200, json={"success": True, "generation_id": "g1", "type": "video"}))  # fmt: skip
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            gen = await getattr(client.videos, call)(*args, **kwargs, extra_body={"x_y": 1})
        assert gen.id == "g1"
        assert json.loads(route.calls.last.request.content) == {**sent, "x_y": 1}

    async def test_every_elements_field(self, router: respx.MockRouter) -> None:
        route = router.post(f"{API}/elements").mock(return_value=httpx.Response(
            200, json={"success": True, "generation_id": "g1"}))  # fmt: skip
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            await client.videos.from_elements(
                "p", videos=[CLIP], motion="orbit", preset_id="pr", multi_shots=True,
                multi_shot_count=3, session_name="s", model="m", aspect_ratio="9:16",
                duration=10, enhance_prompt=False, visual_dna_ids=["d"], resolution="1080p",
                sound_enabled=True, project_id="pj", session_id="si",
            )  # fmt: skip
        assert json.loads(route.calls.last.request.content) == {
            "prompt": "p", "reference_videos": [CLIP], "motion": "orbit", "preset_id": "pr",
            "multi_shots": True, "multi_shot_count": 3, "session_name": "s", "model": "m",
            "aspect_ratio": "9:16", "duration": 10, "enhance_prompt": False,
            "visual_dna_ids": ["d"], "resolution": "1080p", "sound_enabled": True,
            "project_id": "pj", "session_id": "si",
        }  # fmt: skip


@pytest.mark.anyio
class TestValidation:
    @pytest.mark.parametrize(
        ("call", "args", "kwargs", "field"),
        [
            ("from_frames", (A, None), {}, "last_frame"),
            ("from_frames", (None, B), {}, "first_frame"),
            ("from_frames", (A, "b.png"), {}, "last_frame"),
            ("from_frames", (A, B), {"duration": 0}, "duration"),
            ("from_video", ("  ",), {}, "video"),
            ("from_video", (CLIP,), {"reference_videos": ["x"]}, "reference_videos[0]"),
            ("lipsync", (A, None), {}, "audio"),
            ("lipsync", (A, VOICE), {"bounding_box_target": [0, 0, 10]}, "bounding_box_target"),
            ("lipsync", (A, VOICE), {"bounding_box_target": [0, 0, 0, 5]},
             "bounding_box_target[2]"),
            ("from_elements", ("",), {}, "prompt"),
            ("from_elements", ("p",), {"images": ["not a url"]}, "images[0]"),
            ("from_elements", ("p",), {"audio": VOICE}, "audio"),
            ("from_elements", ("p",), {"keyframes": [(A, -1)]},
             "keyframes[0].timestamp_seconds"),
            ("from_elements", ("p",), {"keyframes": [(A, math.nan)]},
             "keyframes[0].timestamp_seconds"),
            ("from_elements", ("p",), {"keyframes": [(A, math.inf)]},
             "keyframes[0].timestamp_seconds"),
            ("from_elements", ("p",), {"keyframes": [{"image_url": A}]},
             "keyframes[0].timestamp_seconds"),
            ("from_elements", ("p",), {"keyframes": [("x", 1)]}, "keyframes[0].image_url"),
            ("from_elements", ("p",), {"keyframes": [A]}, "keyframes[0]"),
            ("from_elements", ("p",), {"keyframes": [{"url": A, "t": 1}]}, "keyframes[0]"),
            ("from_elements", ("p",), {"multi_shot_count": 0}, "multi_shot_count"),
        ],
    )  # fmt: skip
    async def test_refused_before_sending(
        self, router: respx.MockRouter, call: str, args: tuple[Any, ...],
        kwargs: dict[str, Any], field: str,
    ) -> None:  # fmt: skip
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            with pytest.raises(k.InvalidRequestError) as info:
                await getattr(client.videos, call)(*args, **kwargs)
        assert info.value.field == field
        assert not router.calls

    async def test_a_missing_frame_is_a_type_error(self) -> None:
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            with pytest.raises(TypeError, match="last_frame"):
                await client.videos.from_frames(A)  # type: ignore[call-arg]


@pytest.mark.anyio
class TestBatch:
    async def test_every_route_in_one_batch_and_a_rerun_pays_nothing_twice(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        journal = tmp_path / "routes.db"
        requests = [
            TextToVideo("a bottle turns"),
            FramesToVideo(A, B),
            VideoToVideo(CLIP, prompt="a bottle turns"),
            Lipsync(A, VOICE),
            ElementsToVideo("a bottle turns", images=[A], keyframes=[(B, 1.5)]),
            TextToImage("a bottle turns"),
            FramesToVideo(A, B),  # the same request twice: two items
        ]
        first = [o async for o in client.videos.generate_many(requests, journal=journal)]
        assert all(o.error is None for o in first)
        assert len(posts(sim)) == len(requests) == len(sim.generations)
        assert {o.index: o.request for o in first} == dict(enumerate(requests))
        paid, sent = sim.credits(), len(sim.requests)
        again = [o async for o in client.videos.generate_many(requests, journal=journal)]
        assert len(sim.requests) == sent and sim.credits() == paid
        assert {o.index: o.generation.id for o in again if o.generation} == {
            o.index: o.generation.id for o in first if o.generation
        }

    async def test_a_bad_item_names_its_field_and_sends_nothing(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        with pytest.raises(k.InvalidRequestError) as info:
            client.videos.generate_many(
                [TextToVideo("a"), ElementsToVideo("b", keyframes=[(A, -2)])]
            )
        assert info.value.field == "requests[1].keyframes[0].timestamp_seconds"
        assert not sim.requests


def test_requests_are_hashable_and_print_what_was_set() -> None:
    one = ElementsToVideo("p", images=[A], keyframes=[{"image_url": A, "timestamp_seconds": 1}])
    two = ElementsToVideo("p", images=(A,), keyframes=[(A, 1)])
    assert one == two and hash(one) == hash(two)
    assert repr(ElementsToVideo("p", images=[A])) == f"ElementsToVideo(prompt='p', images=('{A}',))"
    assert repr(Lipsync(A, VOICE)) == f"Lipsync(face='{A}', audio='{VOICE}')"
