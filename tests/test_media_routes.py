"""Local files on every route (kolbo-api.md §13), through the simulator and on the wire.

Each route with local files: a round trip through the simulator on a virtual clock (asyncio,
trio and the blocking client) whose server stores the files and serves them back from its
CDN; the exact multipart parts (or, where a route takes no files, the upload first and the
JSON) on the wire (respx). Counted at the server: a lost answer to a multipart POST is
`SubmissionOutcomeUnknownError`, never a second POST; a 429 re-sends the whole file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo, FramesToVideo, ImageEdit, Kolbo, Lipsync
from kolbo_async.testing import Simulator, VirtualClock
from kolbo_async.testing._forms import parse_form

KEY = "kolbo_live_" + "f6" * 20
API = "https://api.kolbo.ai/api/v1"
CDN = "https://cdn.kolbo.test/uploads/"
URL = "https://example.com/b.png"
VOICE = "https://example.com/voice.mp3"
UPLOADED = "https://cdn.kolbo.ai/media/up.png"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {"a.png": b"\x89PNG-a", "b.png": b"\x89PNG-b", "clip.mp4": b"....ftyp-clip",
            "face.mp4": b"....ftyp-face", "voice.mp3": b"ID3-voice"}  # fmt: skip
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in made}


#: (namespace, call, args, kwargs) with file names for local files; the file parts
#: (name, file) and the text fields sent; or, for a route that takes no files, None and the
#: JSON sent after uploading its files (each upload's URL is UPLOADED).
Case = tuple[str, str, tuple[Any, ...], dict[str, Any], Any, Any]
CASES: list[Case] = [
    ("videos", "from_frames", ("a.png", "b.png"), {"prompt": "p", "duration": 5},
     [("files", "a.png"), ("files", "b.png")], [("prompt", "p"), ("duration", "5")]),
    ("videos", "from_frames", ("a.png", URL), {},
     None, {"first_frame_url": UPLOADED, "last_frame_url": URL}),
    ("videos", "from_video", ("clip.mp4",), {"reference_images": [URL], "enhance_prompt": True},
     [("files", "clip.mp4")], [("reference_images", f'["{URL}"]'), ("enhance_prompt", "true")]),
    ("videos", "lipsync", ("a.png", "voice.mp3"), {"bounding_box_target": [0, 0, 8, 8]},
     [("image", "a.png"), ("audio", "voice.mp3")], [("bounding_box_target", "[0,0,8,8]")]),
    ("videos", "lipsync", ("face.mp4", VOICE), {},
     [("video", "face.mp4")], [("audio_url", VOICE)]),
    ("videos", "from_elements", ("p",),
     {"images": ["a.png", URL], "videos": ["clip.mp4"], "audio": ["voice.mp3"]},
     [("files", "a.png"), ("files", "clip.mp4"), ("files", "voice.mp3")],
     [("prompt", "p"), ("reference_images", URL)]),
    ("videos", "from_elements", ("p",), {"keyframes": [("a.png", 0)]},
     None, {"prompt": "p", "keyframes": [{"image_url": UPLOADED, "timestamp_seconds": 0}]}),
    ("videos", "from_image", ("a.png",), {"prompt": "zoom"},
     None, {"image_url": UPLOADED, "prompt": "zoom"}),
    ("videos", "generate", ("p",), {"reference_images": ["a.png"]},
     None, {"prompt": "p", "reference_images": [UPLOADED]}),
    ("images", "generate", ("p",), {"reference_images": ["a.png", URL]},
     None, {"prompt": "p", "reference_images": [UPLOADED, URL]}),
    ("images", "edit", (["a.png", "b.png"], "green walls"), {},
     None, {"source_images": [UPLOADED, UPLOADED], "prompt": "green walls"}),
]  # fmt: skip
IDS = [f"{c[1]}-{'parts' if c[4] else 'upload'}-{i}" for i, c in enumerate(CASES)]


def localise(value: Any, files: dict[str, Path]) -> Any:
    """A case's arguments with file names as paths (both `Path` and `str` are taken)."""
    if isinstance(value, str) and value in files:
        return files[value] if value.endswith(".png") else str(files[value])
    if isinstance(value, dict):
        return {key: localise(item, files) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(localise(item, files) for item in value)
    return value


def submitted(client: Any, case: Case, files: dict[str, Path]) -> Any:
    namespace, call, args, kwargs, *_ = case
    method: Callable[..., Any] = getattr(getattr(client, namespace), call)
    return method(*localise(args, files), **localise(kwargs, files))


def generation_posts(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.method == "POST" and "/generate/" in r.path]


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


async def cdn_bytes(sim: Simulator, url: str) -> bytes:
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        answer = await http.get(url)
    assert answer.status_code == 200
    return answer.content


def stored_urls(request: dict[str, Any]) -> list[str]:
    text = json.dumps(request)
    return [part.split('"')[0] for part in text.split('"' + CDN)[1:]]


@pytest.mark.anyio
class TestRoundTrip:
    @pytest.mark.parametrize("case", CASES, ids=IDS)
    async def test_files_reach_the_server_and_its_cdn(
        self, sim: Simulator, client: AsyncKolbo, files: dict[str, Path], case: Case
    ) -> None:
        """The server stores every local file (as a part or an upload) and the generation
        names them by its CDN URLs, which serve the files' bytes back; URLs stay URLs."""
        gen = await submitted(client, case, files)
        result = await gen.result()
        assert result.url
        [post] = generation_posts(sim)
        request = sim.generations[gen.id].request
        uploads = [r for r in sim.requests if r.path == "/api/v1/media/upload"]
        if case[4] is None:  # uploaded first, then JSON
            assert uploads and post.headers["content-type"] == "application/json"
        else:
            assert not uploads and post.headers["content-type"].startswith("multipart/")
        served = sorted([await cdn_bytes(sim, CDN + path) for path in stored_urls(request)])
        named = [arg for arg in json.dumps(case[2:4]).split('"') if arg in files]
        assert served == sorted(files[name].read_bytes() for name in named)
        assert (URL in json.dumps(request)) == (URL in json.dumps(case[2:4]))

    async def test_a_face_video_part_is_a_video_lipsync(
        self, sim: Simulator, client: AsyncKolbo, files: dict[str, Path]
    ) -> None:
        gen = await client.videos.lipsync(files["face.mp4"], files["voice.mp3"])
        assert sim.generations[gen.id].kind == "lipsync-video"

    async def test_a_lost_answer_is_unknown_not_a_second_post(
        self, sim: Simulator, client: AsyncKolbo, files: dict[str, Path]
    ) -> None:
        sim.inject("generate", "drop_after")
        with pytest.raises(k.SubmissionOutcomeUnknownError):
            await client.videos.from_frames(files["a.png"], files["b.png"])
        assert len(generation_posts(sim)) == 1 and len(sim.generations) == 1

    @pytest.mark.parametrize("fault", ["429", "drop_before"])
    async def test_a_refused_post_resends_the_whole_file(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path, fault: str
    ) -> None:
        """A 429 (or a connection never made) is sent again, the file re-read from disk:
        both POSTs carry it whole (3 MiB, streamed in chunks)."""
        big = tmp_path / "big.mp4"
        big.write_bytes(b"\x00\x01" * (3 * 1024 * 1024 // 2))
        sim.inject("generate", fault)
        gen = await client.videos.from_video(big, prompt="p")
        posts = generation_posts(sim)
        assert [p.status for p in posts] == [429 if fault == "429" else 0, 200]
        assert len(sim.generations) == 1
        stored = stored_urls(sim.generations[gen.id].request)
        assert await cdn_bytes(sim, CDN + stored[0]) == big.read_bytes()
        assert len(posts[0].json) == len(posts[1].json)  # the whole body, twice


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_blocking_client_round_trip(files: dict[str, Path], case: Case) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    with Kolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        gen = submitted(client, case, files)
        assert gen.result().url
    assert len(generation_posts(sim)) == 1
    assert stored_urls(sim.generations[gen.id].request)


@pytest.mark.anyio
class TestWire:
    @pytest.mark.parametrize("case", CASES, ids=IDS)
    async def test_exact_parts_or_upload_then_json(
        self, files: dict[str, Path], case: Case
    ) -> None:
        *_, parts, sent = case
        with respx.mock(assert_all_called=False) as router:
            upload = router.post(f"{API}/media/upload").mock(return_value=httpx.Response(
                200, json={"success": True, "media": {"url": UPLOADED, "id": "m1"}}))
            route = router.post(url__regex=rf"{API}/generate/.*").mock(return_value=httpx.Response(
                200, json={"success": True, "generation_id": "g1"}))  # fmt: skip
            async with AsyncKolbo(KEY, rate_limits=None) as client:
                await submitted(client, case, files)
        request = route.calls.last.request
        assert upload.called == (parts is None)
        if parts is None:
            assert json.loads(request.content) == sent
            return
        fields, got = parse_form(request.headers["content-type"], request.content)
        expected = [
            (name, files[file].name, k._local_files.content_type_of(file),
             files[file].read_bytes())
            for name, file in parts
        ]  # fmt: skip
        assert got == expected
        assert fields == sent


def test_request_classes_take_files_too(files: dict[str, Path]) -> None:
    """Batch items hold local files as their calls do (checked when the body is made)."""
    for request in (FramesToVideo(files["a.png"], files["b.png"]),
                    Lipsync(files["face.mp4"], VOICE), ImageEdit([files["a.png"]], "p")):
        _, body = request.body()
        assert str(files["a.png"]) in json.dumps(body) or "face.mp4" in json.dumps(body)
