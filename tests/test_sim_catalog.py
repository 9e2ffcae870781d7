"""The simulator's model catalog: listing, pricing, snapping and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from kolbo_async.testing import Simulator, VirtualClock
from kolbo_async.testing._catalog import Refused, model_for, price, snap, snap_ratio

from . import sim_fixtures
from .conftest import sim_call, sim_submit

# This module's fixtures: a virtual clock at 0 (not conftest's StepClock) and a simulator on it.
clock = sim_fixtures.clock
sim = sim_fixtures.sim


class TestListing:
    @pytest.mark.parametrize(
        ("wanted", "raw"),
        [("video", "text_to_video"), ("video_from_image", "img_to_video"),
         ("text_to_video", "text_to_video"), ("img_to_video", "img_to_video")],
    )
    def test_type_filter(self, sim: Simulator, wanted: str, raw: str) -> None:
        """SDK aliases and raw types both filter the catalog."""
        _, body, _ = sim_call(sim, "GET", "/api/v1/models", query={"type": wanted})
        assert body["count"] == len(body["models"]) > 0
        assert all(raw in m["types"] for m in body["models"])

    def test_no_type_lists_everything(self, sim: Simulator) -> None:
        """Without a type, every model is listed."""
        _, every, _ = sim_call(sim, "GET", "/api/v1/models")
        _, video, _ = sim_call(sim, "GET", "/api/v1/models", query={"type": "video"})
        assert every["count"] > video["count"]
        assert sim_call(sim, "GET", "/api/v1/models", query={"type": "music"})[1]["count"] == 0


class TestPrice:
    def test_price_uses_the_catalog(self, sim: Simulator) -> None:
        """credit x duration x resolution multiplier, snapped to supported durations."""
        gen = sim_submit(sim, model="fal-ai/kling-video/v3/pro/text-to-video", duration=10,
                     resolution="1080p")
        assert gen["credits_charged"] == 18 * 10 * 1.25
        snapped = sim_submit(sim, model="veo3", duration=5)
        assert snapped["credits_charged"] in (40 * 4, 40 * 6)

    def test_sound_multiplier(self, sim: Simulator) -> None:
        """sound_enabled multiplies the price when the model has a sound multiplier."""
        gen = sim_submit(sim, model="veo3", duration=4, sound_enabled=True)
        assert gen["credits_charged"] == 40 * 4 * 1.5

    def test_smart_select_costs_seven_a_second(self) -> None:
        """No model named: 7 credits a second, so 5 s cost 35 as in Kolbo's docs."""
        assert price(None, {"duration": 5}) == 35


class TestSnap:
    def test_unsupported_values_snap(self, sim: Simulator, clock: VirtualClock) -> None:
        """Unsupported durations and aspect ratios snap to the closest supported value."""
        gen = sim_submit(sim, model="veo3", duration=7.5, aspect_ratio="21:9")
        sim.complete(gen["generation_id"])
        result = sim_call(sim, "GET", gen["poll_url"])[1]["result"]
        assert (result["duration"], result["aspect_ratio"], result["model"]) == (8, "16:9", "veo3")
        assert gen["credits_charged"] == 40 * 8

    @pytest.mark.parametrize(
        ("value", "allowed", "snapped"),
        [(7.5, [4, 6, 8], 8), ("x", [5, 10], 5), (-1, [], 5), (12, [], 12), (True, [5], 5)],
    )
    def test_durations(self, value: Any, allowed: list[Any], snapped: float) -> None:
        """A duration snaps to the closest allowed one; nonsense means 5 s."""
        assert snap(value, allowed) == snapped

    def test_ratios_by_shape(self) -> None:
        """An aspect ratio snaps by shape; an unreadable one takes the first allowed."""
        assert snap_ratio("21:9", ["16:9", "9:16"]) == "16:9"
        assert snap_ratio("4:5", ["16:9", "9:16", "1:1"]) == "1:1"
        assert snap_ratio("wide", ["9:16", "1:1"]) == "9:16"


class TestModelFor:
    def test_visual_dna_limit_follows_the_model(self, sim: Simulator) -> None:
        """Three Visual DNA ids at most, unless the model allows more."""
        four = ["a", "b", "c", "d"]
        status, _, _ = sim_call(sim, "POST", "/api/v1/generate/video",
                            {"prompt": "a", "visual_dna_ids": four})
        assert status == 400
        sim_submit(sim, model="minimax-h3", visual_dna_ids=four)

    def test_refusals_name_kolbos_codes(self) -> None:
        """An unknown model, a wrong kind, or too many Visual DNA ids are refused by code."""
        assert model_for({}, "text_to_video") is None
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"model": "nope"}, "text_to_video", "MODEL_NOT_FOUND"),
            ({"model": "veo3"}, "img_to_video", "WRONG_MODEL_TYPE"),
            ({"visual_dna_ids": ["a", "b", "c", "d"]}, "text_to_video", "TOO_MANY_VISUAL_DNA"),
        ]
        for body, kind, code in cases:
            with pytest.raises(Refused) as refused:
                model_for(body, kind)
            assert refused.value.code == code
