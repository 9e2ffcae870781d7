"""The image routes end to end: `images.generate` (TextToImage) and `images.edit` (ImageEdit).

Through the simulator on a virtual clock (asyncio, trio and the blocking client), the exact
JSON sent (respx), validation that sends nothing, and a batch mixing them with TextToVideo
whose journal rerun pays nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import kolbo_async as k
from kolbo_async import AsyncKolbo, ImageEdit, ImageResult, Kolbo, TextToImage, TextToVideo
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "e5" * 20
API = "https://api.kolbo.ai/api/v1/generate"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOM = "https://example.com/room.png"


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


def submitted(generation_id: str = "img1") -> httpx.Response:
    return httpx.Response(200, json={
        "success": True, "generation_id": generation_id, "type": "image",
        "poll_url": f"/api/v1/generate/{generation_id}/status", "poll_interval_hint": 3,
    })  # fmt: skip


@pytest.mark.anyio
class TestRoundTrip:
    async def test_generate_several_images_and_download_each(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """num_images=2: an ImageResult with two URLs, each downloaded as a real PNG."""
        gen = await client.images.generate(
            "A lighthouse at dawn", model="flux-2-pro", num_images=2, resolution="2K"
        )
        assert gen.submission is not None and gen.submission.type == "image"
        assert gen.submission.credits_charged == 4 * 2 * 1.5  # per image x images x tier
        result = await gen.result()
        assert isinstance(result, ImageResult)
        assert len(result.urls) == 2 and result.url == result.urls[0]
        assert result.model == "flux-2-pro" and result.raw["prompt_used"] == "A lighthouse at dawn"
        for i in range(2):
            path = await gen.download(tmp_path / f"light-{i}.png", index=i)
            assert path.read_bytes().startswith(PNG_MAGIC)
        with pytest.raises(k.InvalidRequestError) as info:
            await gen.download(tmp_path / "light-2.png", index=2)
        assert info.value.field == "index"
        [post] = posts(sim)
        assert post.path == "/api/v1/generate/image"

    async def test_edit_sends_source_images(self, sim: Simulator, client: AsyncKolbo) -> None:
        """images.edit: the pictures go as source_images; the result is an ImageResult."""
        gen = await client.images.edit([ROOM], "Paint the walls green", model="nano-banana")
        result = await gen.result()
        assert isinstance(result, ImageResult) and len(result.urls) == 1
        [post] = posts(sim)
        assert post.path == "/api/v1/generate/image-edit"
        assert post.json == {
            "source_images": [ROOM], "prompt": "Paint the walls green", "model": "nano-banana"
        }

    async def test_attached_image_handle_reads_an_image_result(self, client: AsyncKolbo) -> None:
        """A handle from the id alone knows it is an image from the status's type."""
        gen = await client.images.generate("a cat")
        again = client.generations.attach(gen.id)
        assert isinstance(await again.result(), ImageResult)

    async def test_a_video_result_stays_a_video_result(self, client: AsyncKolbo) -> None:
        gen = await client.videos.generate("a cat")
        result = await gen.result()
        assert type(result) is k.VideoResult

    @pytest.mark.parametrize(
        ("call", "code"),
        [
            ({"num_images": 5, "model": "flux-2-pro"}, "TOO_MANY_IMAGES"),
            ({"num_images": 3, "model": "nano-banana"}, "TOO_MANY_IMAGES"),
            ({"reference_images": [ROOM] * 5, "model": "flux-2-pro"},
             "TOO_MANY_REFERENCE_IMAGES"),
            ({"model": "seedance-2"}, "WRONG_MODEL_TYPE"),
        ],
    )
    async def test_a_cap_exceeded_is_a_400_and_charges_nothing(
        self, sim: Simulator, client: AsyncKolbo, call: dict[str, Any], code: str
    ) -> None:
        """The model's caps from its catalog entry: a deterministic 400, no charge."""
        before = sim.credits()
        with pytest.raises(k.BadRequestError) as info:
            await client.images.generate("a cat", **call)
        assert info.value.code == code
        assert sim.credits() == before and not sim.generations

    async def test_cancel_and_filtered(self, sim: Simulator, client: AsyncKolbo) -> None:
        """Cancel works on an image; a filtered one completes without URLs and raises."""
        gen = await client.images.generate("a cat")
        assert (await gen.cancel()).state == "cancelled"
        sim.plan(outcome="filtered")
        gen = await client.images.generate("a dog")
        with pytest.raises(k.GenerationFailedError):
            await gen.result()


def test_blocking_client_round_trip(tmp_path: Path) -> None:
    """Kolbo().images: the same calls, blocking, with Generation handles."""
    clock = VirtualClock()
    sim = Simulator(clock=clock)
    with Kolbo(KEY, _transport=sim.transport(), _clock=clock) as client:
        gen = client.images.generate("A lighthouse", num_images=2)
        result = gen.result()
        assert isinstance(result, ImageResult) and len(result.urls) == 2
        assert gen.download(tmp_path / "b.png", index=1).read_bytes().startswith(PNG_MAGIC)
        edit = client.images.edit([ROOM], "green")
        assert isinstance(edit.result(), ImageResult)


@pytest.mark.anyio
class TestWire:
    async def test_every_field_is_sent_as_declared(self, router: respx.MockRouter) -> None:
        """The exact JSON of a TextToImage with every documented field (kolbo-api.md §13)."""
        route = router.post(f"{API}/image").mock(return_value=submitted())
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            await client.images.generate(
                "A lighthouse", model="flux-2-pro", aspect_ratio="16:9", num_images=2,
                resolution="4K", quality="high", enhance_prompt=False,
                reference_images=[ROOM], visual_dna_ids=["dna1"], moodboard_id="mb1",
                enable_web_search=True, preset_id="p1", skip_color_palette=True,
                project_id="proj1", session_id="s1", extra_body={"seed": 7},
            )  # fmt: skip
        assert json.loads(route.calls.last.request.content) == {
            "prompt": "A lighthouse", "model": "flux-2-pro", "aspect_ratio": "16:9",
            "num_images": 2, "resolution": "4K", "quality": "high", "enhance_prompt": False,
            "reference_images": [ROOM], "visual_dna_ids": ["dna1"], "moodboard_id": "mb1",
            "enable_web_search": True, "preset_id": "p1", "skip_color_palette": True,
            "project_id": "proj1", "session_id": "s1", "seed": 7,
        }  # fmt: skip

    async def test_edit_minimal_json(self, router: respx.MockRouter) -> None:
        route = router.post(f"{API}/image-edit").mock(return_value=submitted())
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            await client.images.edit((ROOM, ROOM), "green")
        assert json.loads(route.calls.last.request.content) == {
            "source_images": [ROOM, ROOM], "prompt": "green"
        }


@pytest.mark.anyio
class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"num_images": 0}, "num_images"),
            ({"num_images": True}, "num_images"),
            ({"num_images": 2.0}, "num_images"),
            ({"num_images": -1}, "num_images"),
            ({"reference_images": ["file.png"]}, "reference_images[0]"),
            ({"aspect_ratio": "wide"}, "aspect_ratio"),
            ({"visual_dna_ids": ["a", "b", "c", "d"]}, "visual_dna_ids"),
            ({"enable_web_search": "yes"}, "enable_web_search"),
        ],
    )
    async def test_generate_refuses_before_sending(
        self, router: respx.MockRouter, kwargs: dict[str, Any], field: str
    ) -> None:
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            with pytest.raises(k.InvalidRequestError) as info:
                await client.images.generate("a cat", **kwargs)
        assert info.value.field == field
        assert not router.calls

    @pytest.mark.parametrize(
        ("images", "prompt", "field"),
        [
            ([], "green", "images"),
            (ROOM, "green", "images"),  # a single string is not a list of URLs
            (["ftp://x.example/a.png"], "green", "images[0]"),
            ([ROOM], "  ", "prompt"),
            (None, "green", "images"),
        ],
    )
    async def test_edit_refuses_before_sending(
        self, router: respx.MockRouter, images: Any, prompt: str, field: str
    ) -> None:
        async with AsyncKolbo(KEY, rate_limits=None) as client:
            with pytest.raises(k.InvalidRequestError) as info:
                await client.images.edit(images, prompt)
        assert info.value.field == field
        assert not router.calls


@pytest.mark.anyio
class TestBatch:
    async def test_mixed_batch_and_journal_rerun_pays_nothing_twice(
        self, sim: Simulator, client: AsyncKolbo, tmp_path: Path
    ) -> None:
        """TextToImage and ImageEdit beside TextToVideo in one batch; a rerun with the
        journal sends nothing and returns the same generations."""
        journal = tmp_path / "mixed.db"
        requests = [
            TextToVideo("a drone"),
            TextToImage("a drone", num_images=2),
            ImageEdit([ROOM], "a drone"),
            TextToImage("a drone", num_images=2),  # a duplicate stays its own item
        ]
        first = [o async for o in client.videos.generate_many(requests, journal=journal)]
        assert all(o.error is None for o in first)
        assert sorted(r.path for r in posts(sim)) == sorted([
            "/api/v1/generate/video", "/api/v1/generate/image",
            "/api/v1/generate/image-edit", "/api/v1/generate/image",
        ])  # fmt: skip
        by_index = {o.index: o for o in first}
        assert by_index[1].request == requests[1]
        assert by_index[1].generation is not None
        assert isinstance(await by_index[1].generation.result(), ImageResult)
        paid = sim.credits()
        sent = len(sim.requests)
        again = [o async for o in client.videos.generate_many(requests, journal=journal)]
        assert len(sim.requests) == sent and sim.credits() == paid
        assert {o.index: o.generation.id for o in again if o.generation} == {
            o.index: o.generation.id for o in first if o.generation
        }

    async def test_a_bad_image_item_sends_nothing(
        self, sim: Simulator, client: AsyncKolbo
    ) -> None:
        with pytest.raises(k.InvalidRequestError) as info:
            client.videos.generate_many([TextToVideo("a"), TextToImage("b", num_images=0)])
        assert info.value.field == "requests[1].num_images"
        assert not sim.requests


def test_request_classes_are_frozen_and_hashable() -> None:
    """Lists become tuples, so a request can key a dict (as the journal's items do)."""
    edit = ImageEdit([ROOM], "green", reference_images=[ROOM])
    assert edit == ImageEdit((ROOM,), "green", reference_images=(ROOM,))
    assert hash(edit) == hash(ImageEdit((ROOM,), "green", reference_images=(ROOM,)))
    assert repr(TextToImage("a", num_images=2)) == "TextToImage(prompt='a', num_images=2)"
