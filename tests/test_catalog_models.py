"""The model catalog across every route (kolbo-api.md §5, §13): `models.list(type=...)` with
each of Kolbo's catalog types and aliases, the per-model caps on `Model`, and `Model.cost()`
for per-image prices, checked against what the simulator charges."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kolbo_async import AsyncKolbo, Kolbo, Model
from kolbo_async._convert import structure
from kolbo_async.testing import Simulator, VirtualClock

KEY = "kolbo_live_" + "c7" * 20

#: Every catalog type of kolbo-api.md §13 (and the two video types of §2).
RAW_TYPES = [
    "text_to_video",
    "img_to_video",
    "text_to_img",
    "image_editing",
    "elements",
    "firstlastgenerations",
    "video_to_video",
    "lipsync-image",
    "lipsync-video",
]
#: Kolbo's documented aliases (§5) and the raw types each lists.
ALIASES = {
    "video": {"text_to_video"},
    "video_from_image": {"img_to_video"},
    "image": {"text_to_img"},
    "image_edit": {"image_editing"},
    "video_from_video": {"video_to_video"},
    "first_last_frame": {"firstlastgenerations"},
    "lipsync": {"lipsync-image", "lipsync-video"},
}


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


@pytest.mark.anyio
class TestListByType:
    @pytest.mark.parametrize("kind", RAW_TYPES)
    async def test_every_catalog_type_lists_its_models(
        self, sim: Simulator, client: AsyncKolbo, kind: str
    ) -> None:
        models = await client.models.list(type=kind)
        assert models, f"no model of type {kind}"
        assert all(kind in m.types for m in models)
        assert sim.requests[-1].query == {"type": kind}

    @pytest.mark.parametrize(("alias", "kinds"), ALIASES.items(), ids=list(ALIASES))
    async def test_aliases_list_the_raw_types(
        self, client: AsyncKolbo, alias: str, kinds: set[str]
    ) -> None:
        models = await client.models.list(type=alias)
        assert models
        assert all(kinds & set(m.types) for m in models)
        listed = {t for m in models for t in m.types if t in kinds}
        assert listed == kinds

    async def test_no_type_lists_every_route(self, client: AsyncKolbo) -> None:
        models = await client.models.list(type=None)
        assert {t for m in models for t in m.types} >= set(RAW_TYPES)


@pytest.mark.anyio
class TestCaps:
    async def test_elements_caps_are_attributes(self, client: AsyncKolbo) -> None:
        (model,) = await client.models.list(type="elements")
        assert (model.elements_max_images, model.elements_max_videos) == (4, 1)
        assert (model.elements_max_audio, model.max_keyframes) == (1, 3)
        assert model.raw["supports_keyframes"] is True

    async def test_other_caps_are_in_raw(self, client: AsyncKolbo) -> None:
        (restyle,) = await client.models.list(type="video_to_video")
        assert (restyle.raw["max_images"], restyle.raw["max_elements"]) == (1, 2)
        assert restyle.raw["max_output_duration"] == 10
        images = await client.models.list(type="text_to_img")
        assert all(m.max_reference_images for m in images)
        assert {m.raw["images_per_request"] for m in images} == {4, 2}


def test_caps_tolerate_camel_case_odd_values_and_absence() -> None:
    model = structure(
        {"identifier": "x", "elementsMaxImages": 5, "max_keyframes": "two", "maxKeyframes": 2},
        Model,
    )
    # An explicit snake_case key wins over its camelCase twin; one that cannot be read is
    # dropped (still in raw), never a failure of the whole catalog.
    assert model.elements_max_images == 5
    assert model.max_keyframes is None and model.raw["max_keyframes"] == "two"
    bare = structure({"identifier": "y"}, Model)
    assert (bare.elements_max_videos, bare.elements_max_audio, bare.max_keyframes) == (
        None,
        None,
        None,
    )


class TestCost:
    def test_image_models_are_priced_per_image(self) -> None:
        flux = Model(
            identifier="flux",
            types=("text_to_img", "image_editing"),
            credit=4,
            resolution_multipliers={"2K": 1.5},
        )
        assert flux.per_image
        assert flux.cost() == 4.0  # one image when not said
        assert flux.cost(num_images=3) == 12.0
        assert flux.cost(num_images=3, resolution="2K") == 18.0
        assert flux.cost(5) == 4.0  # an image has no duration: still one image
        for bad in (0, -1, True, 2.5):
            assert flux.cost(num_images=bad) is None  # type: ignore[arg-type]

    def test_video_models_stay_per_second(self) -> None:
        video = Model(identifier="v", types=("text_to_video",), credit=10)
        assert not video.per_image
        assert video.cost(5) == 50.0
        assert video.cost() is None  # a video's price needs its duration
        assert video.cost(5, num_images=3) == 50.0
        # A model of no stated type is priced as Kolbo documents for video (per second).
        assert Model(identifier="old", credit=2).cost(5) == 10.0
        assert (
            Model(identifier="mixed", types=("text_to_img", "text_to_video"), credit=2).cost(5)
            == 10.0
        )

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("call", "kwargs"),
        [
            ("generate", {"num_images": 3, "resolution": "2K"}),
            ("generate", {"num_images": 1}),
            ("generate", {}),
            ("edit", {"num_images": 2, "resolution": "4K"}),
        ],
    )
    async def test_cost_is_what_the_simulator_charges(
        self, client: AsyncKolbo, call: str, kwargs: dict[str, object]
    ) -> None:
        catalog = {m.identifier: m for m in await client.models.list(type=None)}
        model = catalog["flux-2-pro"]
        args: tuple[object, ...] = ("a lighthouse",)
        if call == "edit":
            args = (["https://example.com/room.png"], "paint it green")
        gen = await getattr(client.images, call)(*args, model=model.identifier, **kwargs)
        assert gen.submission is not None
        expected = model.cost(
            num_images=kwargs.get("num_images"),  # type: ignore[arg-type]
            resolution=kwargs.get("resolution"),  # type: ignore[arg-type]
        )
        assert gen.submission.credits_charged == expected


def test_blocking_client_lists_every_type() -> None:
    sim = Simulator()
    with Kolbo(KEY, _transport=sim.transport()) as client:
        for kind in RAW_TYPES:
            assert client.models.list(type=kind), kind
