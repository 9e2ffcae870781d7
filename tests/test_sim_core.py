"""The simulated service with no HTTP at all: plain requests in, plain answers out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kolbo_async.testing import SimRequest, Simulator, VirtualClock

from . import sim_fixtures
from .conftest import SIM_KEY, sim_call, sim_submit

# This module's fixtures: a virtual clock at 0 (not conftest's StepClock) and a simulator on it.
clock = sim_fixtures.clock
sim = sim_fixtures.sim


class TestLifecycle:
    def test_pending_processing_completed(self, sim: Simulator, clock: VirtualClock) -> None:
        """A generation goes pending -> processing (rising progress) -> completed."""
        gen = sim_submit(sim)
        assert gen["poll_url"] == f"/api/v1/generate/{gen['generation_id']}/status"
        assert gen["poll_interval_hint"] == 8
        path = gen["poll_url"]
        seen = []
        for _ in range(20):
            _, body, _ = sim_call(sim, "GET", path)
            seen.append((body["state"], body["progress"]))
            clock.advance(8)
        assert seen[0] == ("pending", 0)
        states = [s for s, _ in seen]
        assert "processing" in states
        assert states[-1] == "completed"
        progress = [p for _, p in seen]
        assert progress == sorted(progress)
        _, final, _ = sim_call(sim, "GET", path)
        assert final["progress"] == 100
        assert final["result"]["urls"][0].startswith(sim.cdn_url)
        assert final["credits_used"] == 35

    def test_ids_look_like_object_ids(self, sim: Simulator) -> None:
        """Generation ids are 24 lowercase hex characters."""
        gen_id = sim_submit(sim)["generation_id"]
        assert len(gen_id) == 24
        int(gen_id, 16)

    def test_failure_refunds(self, sim: Simulator, clock: VirtualClock) -> None:
        """A failed generation carries error + failure and gives the credits back."""
        sim.plan(outcome="failed")
        before = sim.credits()
        gen = sim_submit(sim)
        assert sim.credits() == before - 35
        clock.advance(1000)
        _, body, _ = sim_call(sim, "GET", gen["poll_url"])
        assert body["state"] == "failed"
        assert body["failure"]["category"] == "content_policy"
        assert isinstance(body["error"], str)
        assert sim.credits() == before

    def test_prompt_markers(self, sim: Simulator, clock: VirtualClock) -> None:
        """[fail] and [filtered] in a prompt script the outcome (for the sandbox)."""
        failed = sim_submit(sim, prompt="x [fail]")
        filtered = sim_submit(sim, prompt="x [filtered]")
        clock.advance(1000)
        assert sim_call(sim, "GET", failed["poll_url"])[1]["state"] == "failed"
        body = sim_call(sim, "GET", filtered["poll_url"])[1]
        assert (body["state"], body["result"]["urls"]) == ("completed", [])

    def test_cancel_then_409(self, sim: Simulator, clock: VirtualClock) -> None:
        """Cancel refunds a running generation; cancelling a finished one is 409."""
        before = sim.credits()
        gen = sim_submit(sim)
        cancel = f"/api/v1/generate/{gen['generation_id']}/cancel"
        status, body, _ = sim_call(sim, "POST", cancel, {})
        assert (status, body["state"], body["credits_refunded"]) == (200, "cancelled", 35)
        assert sim.credits() == before
        status, body, _ = sim_call(sim, "POST", cancel, {})
        assert status == 409
        assert body["state"] == "cancelled"
        other = sim_submit(sim)
        clock.advance(1000)
        assert sim_call(sim, "POST", f"/api/v1/generate/{other['generation_id']}/cancel", {})[0] == 409

    def test_unknown_or_foreign_id_is_404(self, sim: Simulator) -> None:
        """An id that does not exist, or belongs to another key, is not found."""
        gen = sim_submit(sim)
        assert sim_call(sim, "GET", "/api/v1/generate/" + "0" * 24 + "/status")[0] == 404
        other = "kolbo_live_" + "b" * 40
        assert sim_call(sim, "GET", gen["poll_url"], key=other)[0] == 404

    def test_failure_refunds_without_a_poll(self, sim: Simulator, clock: VirtualClock) -> None:
        """The balance reflects a failure as soon as it happens, polled or not."""
        sim.plan("failed")
        sim_submit(sim)
        clock.advance(1000)
        assert sim_call(sim, "GET", "/api/v1/account/credits")[1]["credits"]["total"] == 10_000


class TestValidation:
    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({}, "MISSING_FIELDS"),
            ({"prompt": "  "}, "MISSING_FIELDS"),
            ({"prompt": "a", "model": "nope"}, "MODEL_NOT_FOUND"),
            ({"prompt": "a", "model": "fal-ai/kling-video/v3/pro/image-to-video"}, "WRONG_MODEL_TYPE"),
        ],
    )
    def test_rejections(self, sim: Simulator, body: dict[str, Any], code: str) -> None:
        """Bad submissions are 400 with the documented envelope and code."""
        status, data, _ = sim_call(sim, "POST", "/api/v1/generate/video", body)
        assert status == 400
        assert data["success"] is False
        assert data["code"] == code
        assert not sim.generations

    def test_auth(self, clock: VirtualClock) -> None:
        """Any kolbo_live_ key by default; exactly the configured one when required."""
        sim = Simulator(clock=clock)
        assert sim_call(sim, "GET", "/api/v1/models", key=None)[0] == 401
        assert sim_call(sim, "GET", "/api/v1/models", key="sk-123")[0] == 401
        assert sim_call(sim, "GET", "/api/v1/models", key="kolbo_live_YOUR_API_KEY")[0] == 200
        strict = Simulator(clock=clock, api_key=SIM_KEY)
        status, body, _ = sim_call(strict, "GET", "/api/v1/models", key="kolbo_live_other")
        assert (status, body["code"]) == (401, "INVALID_API_KEY")

    def test_from_image_needs_image_url(self, sim: Simulator) -> None:
        """Image to video requires image_url; prompt is optional."""
        path = "/api/v1/generate/video/from-image"
        assert sim_call(sim, "POST", path, {"prompt": "zoom"})[1]["code"] == "MISSING_FIELDS"
        status, body, _ = sim_call(sim, "POST", path, {"image_url": "https://x.test/a.jpg"})
        assert (status, body["type"], body["model"]) == (200, "video", "auto")

    def test_invalid_json_is_missing_fields(self, sim: Simulator) -> None:
        """A body that is not a JSON object is a 400 MISSING_FIELDS."""
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": SIM_KEY}, body=b"{nope"))
        assert answer.status == 400
        assert json.loads(answer.body)["code"] == "MISSING_FIELDS"

    def test_unknown_fields_are_ignored(self, sim: Simulator) -> None:
        """Fields the simulator does not know are accepted, as the real API does."""
        sim_submit(sim, skip_color_palette=True, project_id="p1")


class TestRecords:
    def test_requests_are_recorded(self, sim: Simulator) -> None:
        """Every request is recorded with its headers, body and answer status."""
        sim_submit(sim, duration=5)
        record = sim.requests[-1]
        assert (record.method, record.status, record.json["duration"]) == ("POST", 200, 5)
        assert record.headers["x-api-key"] == SIM_KEY
