"""`client.media.upload` and the elements trust gate (kolbo-api.md §13), through the simulator
on a virtual clock (asyncio, trio and the blocking client) and on the wire (respx).

An upload is one ``file`` part, counted in the generation bucket (by the client's pacing and
the server's limits), a 429 absorbed with the file sent whole again, a lost answer reported,
never resent. ``UNTRUSTED_REFERENCE_MEDIA_URL`` on elements re-hosts each remote reference
through an upload and sends once more; a journal knows a local file by its content.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo, FramesToVideo, Kolbo, RateLimits
from kolbo_async.testing import Simulator, VirtualClock
from kolbo_async.testing._forms import parse_form

KEY = "kolbo_live_" + "f6" * 20
OTHER = "kolbo_live_" + "0a" * 20
API = "https://api.kolbo.ai/api/v1"
UPLOAD = "/api/v1/media/upload"
ELEMENTS = "/api/v1/generate/elements"


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
def png(tmp_path: Path) -> Path:
    path = tmp_path / "front.png"
    path.write_bytes(b"\x89PNG-front" * 1000)
    return path


async def fetch(sim: Simulator, url: str) -> bytes:
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        return (await http.get(url)).content


def calls(sim: Simulator) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in sim.requests]


@pytest.mark.anyio
class TestUpload:
    async def test_a_local_file_is_served_from_the_cdn(
        self, sim: Simulator, client: AsyncKolbo, png: Path
    ) -> None:
        media = await client.media.upload(png, description="front", project_id="p1")
        assert isinstance(media, k.Media) and media.url.startswith(sim.cdn_url + "/uploads/")
        assert media.raw["description"] == "front" and media.raw["project_id"] == "p1"
        assert await fetch(sim, media.url) == png.read_bytes()
        assert calls(sim)[0] == ("POST", UPLOAD, 200)

    async def test_the_exact_parts(self, png: Path) -> None:
        with respx.mock() as router:
            route = router.post(f"{API}/media/upload").mock(return_value=httpx.Response(
                200, json={"success": True, "url": "https://cdn.kolbo.ai/m/1.png"}))  # fmt: skip
            async with AsyncKolbo(KEY, rate_limits=None) as client:
                media = await client.media.upload(str(png), description="d")
        assert media.url == "https://cdn.kolbo.ai/m/1.png"  # a top-level url is read too
        request = route.calls.last.request
        fields, files = parse_form(request.headers["content-type"], request.content)
        assert files == [("file", "front.png", "image/png", png.read_bytes())]
        assert fields == [("description", "d")]

    async def test_an_answer_without_a_url(self, png: Path) -> None:
        with respx.mock() as router:
            router.post(f"{API}/media/upload").mock(
                return_value=httpx.Response(200, json={"success": True, "media": {}})
            )
            async with AsyncKolbo(KEY, rate_limits=None) as client:
                with pytest.raises(k.SubmissionOutcomeUnknownError, match="media library"):
                    await client.media.upload(png)

    async def test_a_url_is_downloaded_then_uploaded(
        self, sim: Simulator, client: AsyncKolbo, vclock: VirtualClock, png: Path
    ) -> None:
        async with AsyncKolbo(OTHER, _transport=sim.transport(), _clock=vclock) as other:
            theirs = await other.media.upload(png)
        mine = await client.media.upload(theirs.url)
        assert mine.url != theirs.url and await fetch(sim, mine.url) == png.read_bytes()
        assert [c[:2] for c in calls(sim)[1:]] == [
            ("GET", theirs.url.split(".test")[1]), ("POST", UPLOAD), ("GET", mine.url.split(".test")[1])
        ]  # fmt: skip

    async def test_a_429_is_absorbed_and_the_file_sent_whole(
        self, sim: Simulator, client: AsyncKolbo, png: Path
    ) -> None:
        sim.inject("upload", "429")
        media = await client.media.upload(png)
        posts = [r for r in sim.requests if r.path == UPLOAD]
        assert [p.status for p in posts] == [429, 200]
        assert len(posts[0].json) == len(posts[1].json)
        assert await fetch(sim, media.url) == png.read_bytes()

    async def test_a_lost_answer_is_not_resent(
        self, sim: Simulator, client: AsyncKolbo, png: Path
    ) -> None:
        sim.inject("upload", "drop_after")
        with pytest.raises(k.SubmissionOutcomeUnknownError, match="stored in your media"):
            await client.media.upload(png)
        assert len([r for r in sim.requests if r.path == UPLOAD]) == 1

    async def test_counts_in_the_servers_generation_bucket(
        self, vclock: VirtualClock, png: Path
    ) -> None:
        """With one generation a minute, the generation after an upload gets the 429 (and
        the client waits out its Retry-After)."""
        sim = Simulator(clock=vclock, rate_limits=True, generations_per_minute=1)
        async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=vclock,
                              rate_limits=None) as client:  # fmt: skip
            await client.media.upload(png)
            await client.videos.generate("p")
        assert [c[2] for c in calls(sim)] == [200, 429, 200]

    async def test_paced_in_the_clients_generation_bucket(
        self, sim: Simulator, vclock: VirtualClock, png: Path
    ) -> None:
        async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=vclock,
                              rate_limits=RateLimits(generations_per_minute=1)) as client:
            await client.media.upload(png)
            await client.videos.generate("p")
        upload, generate = sim.requests[:2]
        assert upload.path == UPLOAD and generate.time - upload.time >= 59

    async def test_an_open_file_sent_whole_twice_after_a_429(
        self, sim: Simulator, client: AsyncKolbo, png: Path
    ) -> None:
        """An open binary file is sent from where it stands, and from there again on a retry."""
        sim.inject("upload", "429")
        with png.open("rb") as file:
            file.seek(4)
            media = await client.media.upload(file)
        assert media.url.endswith("/front.png")
        assert await fetch(sim, media.url) == png.read_bytes()[4:]
        assert [r.status for r in sim.requests if r.path == UPLOAD] == [429, 200]

    async def test_bytes_in_memory(self, sim: Simulator, client: AsyncKolbo) -> None:
        media = await client.media.upload(io.BytesIO(b"abc"))
        assert media.url.endswith("/upload") and await fetch(sim, media.url) == b"abc"

    async def test_not_a_file_object(self, sim: Simulator, client: AsyncKolbo) -> None:
        with pytest.raises(k.InvalidRequestError, match="seekable binary file") as info:
            await client.media.upload(42)  # type: ignore[arg-type]
        assert info.value.field == "file" and not sim.requests

    async def test_a_missing_file_sends_nothing(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        with pytest.raises(k.InvalidRequestError) as info:
            await client.media.upload(tmp_path / "gone.png")
        assert info.value.field == "file" and not sim.requests


def test_blocking_upload(png: Path) -> None:
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    with Kolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        media = client.media.upload(png)
    assert media.url.startswith(sim.cdn_url)


@pytest.mark.anyio
class TestTrustGate:
    async def test_foreign_references_are_rehosted_and_sent_once_more(
        self, vclock: VirtualClock, png: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        sim = Simulator(clock=vclock, trust_gate=True)
        async with AsyncKolbo(OTHER, _transport=sim.transport(), _clock=vclock) as other:
            theirs = (await other.media.upload(png)).url
        before = sim.credits()
        async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=vclock) as client:
            with caplog.at_level(logging.WARNING, logger="kolbo_async"):
                gen = await client.videos.from_elements("p", images=[theirs, png])
        assert [c for c in calls(sim)[1:] if c[1] != UPLOAD or c[2] != 200] == [
            ("POST", ELEMENTS, 400), ("GET", theirs.split(".test")[1], 200),
            ("POST", ELEMENTS, 200),
        ]  # fmt: skip
        assert len(sim.generations) == 1 and sim.credits() < before
        request = sim.generations[gen.id].request
        assert theirs not in request["reference_images"]
        assert len(request["reference_images"]) == 2  # the re-hosted URL, the part
        [record] = [r for r in caplog.records if "UNTRUSTED_REFERENCE_MEDIA_URL" in r.message]
        assert record.levelno == logging.WARNING and "cdn.kolbo.test" in record.message
        assert KEY not in caplog.text

    async def test_refused_again_is_the_error(self, tmp_path: Path) -> None:
        """Sent once more only: a second refusal is the caller's BadRequestError."""
        untrusted = httpx.Response(400, json={"success": False, "error": "untrusted",
                                              "code": "UNTRUSTED_REFERENCE_MEDIA_URL"})  # fmt: skip
        with respx.mock() as router:
            gate = router.post(f"{API}/generate/elements").mock(return_value=untrusted)
            router.get("https://example.com/ref.png").mock(
                return_value=httpx.Response(200, content=b"PNG", headers={
                    "content-type": "image/png"}))  # fmt: skip
            upload = router.post(f"{API}/media/upload").mock(return_value=httpx.Response(
                200, json={"success": True, "media": {"url": "https://cdn.kolbo.ai/r.png"}}))
            async with AsyncKolbo(KEY, rate_limits=None) as client:
                with pytest.raises(k.BadRequestError) as info:
                    await client.videos.from_elements(
                        "p", images=["https://example.com/ref.png"]
                    )
        assert info.value.code == "UNTRUSTED_REFERENCE_MEDIA_URL"
        assert gate.call_count == 2 and upload.call_count == 1
        assert b"https://cdn.kolbo.ai/r.png" in gate.calls.last.request.content

    async def test_the_callers_own_results_and_uploads_pass(
        self, vclock: VirtualClock, png: Path
    ) -> None:
        sim = Simulator(clock=vclock, trust_gate=True)
        async with AsyncKolbo(KEY, _transport=sim.transport(), _clock=vclock) as client:
            image = await (await client.images.generate("a still")).result()
            upload = await client.media.upload(png)
            await client.videos.from_elements("p", images=[image.urls[0], upload.url])
        assert [c[2] for c in calls(sim) if c[1] == ELEMENTS] == [200]

    async def test_off_by_default(self, sim: Simulator, client: AsyncKolbo) -> None:
        await client.videos.from_elements("p", images=["https://example.com/a.png"])
        assert [c[2] for c in calls(sim)] == [200]


@pytest.mark.anyio
class TestSimulatorForms:
    async def post(self, sim: Simulator, path: str, **kwargs: object) -> httpx.Response:
        async with httpx.AsyncClient(transport=sim.transport()) as http:
            return await http.post(f"https://api.kolbo.ai{path}", headers={"X-API-Key": KEY},
                                   **kwargs)  # type: ignore[arg-type]  # fmt: skip

    @pytest.mark.parametrize(
        ("path", "part"),
        [(ELEMENTS, "image"), ("/api/v1/generate/lipsync", "files"), (UPLOAD, "files"),
         ("/api/v1/generate/image", "files")],
    )  # fmt: skip
    async def test_a_part_the_route_does_not_take(
        self, sim: Simulator, path: str, part: str
    ) -> None:
        answer = await self.post(sim, path, data={"prompt": "p"},
                                 files={part: ("a.png", b"x", "image/png")})  # fmt: skip
        assert answer.status_code == 400
        assert answer.json()["code"] == "LIMIT_UNEXPECTED_FILE"
        assert not sim.generations

    async def test_an_upload_without_a_file(self, sim: Simulator) -> None:
        answer = await self.post(sim, UPLOAD, json={"url": "x"})
        assert (answer.status_code, answer.json()["code"]) == (400, "MISSING_FIELDS")

    async def test_one_frame_part_is_not_both(self, sim: Simulator) -> None:
        answer = await self.post(sim, "/api/v1/generate/first-last-frame",
                                 files={"files": ("a.png", b"x", "image/png")})  # fmt: skip
        assert (answer.status_code, answer.json()["code"]) == (400, "MISSING_FIELDS")


@pytest.mark.anyio
async def test_a_journal_knows_a_file_by_its_content(
    sim: Simulator, client: AsyncKolbo, tmp_path: Path
) -> None:
    """Rerun with the journal: nothing sent again; after editing a frame, that item is new."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    journal = tmp_path / "batch.db"

    async def run() -> int:
        requests = [FramesToVideo(a, b), FramesToVideo(b, a)]
        async for outcome in client.videos.generate_many(requests, journal=journal):
            assert outcome.error is None
        return len([r for r in sim.requests if r.path.endswith("first-last-frame")])

    assert await run() == 2
    assert await run() == 2  # rerun: no POST
    a.write_bytes(b"edited")
    assert await run() == 4  # both items hold the edited file: both new


@pytest.mark.slow
def test_served_over_a_real_socket(tmp_path: Path) -> None:
    """Crosses a real loopback socket (uvicorn): the blocking client uploads a file and
    sends two local frames as parts; the served CDN gives the upload back."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"A" * 70_000)
    b.write_bytes(b"B" * 10)
    sim = Simulator(speed=200.0, processing_seconds=30.0)
    with sim.serve() as base_url, Kolbo(KEY, base_url=base_url) as client:
        media = client.media.upload(a)
        gen = client.videos.from_frames(a, b, prompt="p")
        assert gen.result().url
        assert httpx.get(media.url).content == a.read_bytes()
    request = sim.generations[gen.id].request
    assert request["first_frame_url"] != request["last_frame_url"]


@pytest.mark.anyio
async def test_raw_response_of_a_local_image(
    sim: Simulator, client: AsyncKolbo, png: Path
) -> None:
    """with_raw_response: the upload goes first, the raw answer is the generation POST's."""
    raw = await client.with_raw_response.videos.from_image(png, prompt="zoom")
    assert raw.status_code == 200 and raw.parse().id
    assert [c[1] for c in calls(sim)] == [UPLOAD, "/api/v1/generate/video/from-image"]
