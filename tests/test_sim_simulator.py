"""`Simulator`: scripting the service, reading its state, and its settings."""

from __future__ import annotations

import pytest

from kolbo_async.testing import Simulator, VirtualClock

from . import sim_fixtures
from .conftest import SIM_KEY, sim_call, sim_submit

# This module's fixtures: a virtual clock at 0 (not conftest's StepClock) and a simulator on it.
clock = sim_fixtures.clock
sim = sim_fixtures.sim


class TestScripting:
    def test_complete_and_fail_helpers(self, sim: Simulator) -> None:
        """complete() and fail() end a running generation now; fail() refunds it."""
        before = sim.credits()
        done, bad = sim_submit(sim), sim_submit(sim)
        sim.complete(done["generation_id"])
        sim.fail(bad["generation_id"], {"code": "PROVIDER_DOWN", "retryable": True})
        assert sim_call(sim, "GET", done["poll_url"])[1]["progress"] == 100
        body = sim_call(sim, "GET", bad["poll_url"])[1]
        assert body["state"] == "failed"
        assert (body["failure"]["code"], body["failure"]["retryable"]) == ("PROVIDER_DOWN", True)
        assert sim.credits() == before - 35
        with pytest.raises(ValueError, match="already completed"):
            sim.fail(done["generation_id"])

    def test_plan_sets_failure_and_time(self, sim: Simulator, clock: VirtualClock) -> None:
        """plan() scripts the next generation's outcome, failure and processing time."""
        sim.plan("failed", processing_seconds=10, failure={"category": "provider"})
        gen = sim_submit(sim)
        clock.advance(3 + 10)
        body = sim_call(sim, "GET", gen["poll_url"])[1]
        assert (body["state"], body["failure"]["category"]) == ("failed", "provider")
        assert sim.generations[gen["generation_id"]].request["prompt"] == "a cat"
        with pytest.raises(ValueError, match="outcome"):
            sim.plan("exploded")

    def test_create_generation_without_http(self, sim: Simulator, clock: VirtualClock) -> None:
        """Pre-created generations cost nothing and are visible to their key only."""
        gen_id = sim.create_generation(key=SIM_KEY, processing_seconds=1, outcome="filtered")
        record = sim.generations[gen_id]
        assert (record.key, record.credits, record.state) == (SIM_KEY, 0, "pending")
        clock.advance(5)
        body = sim_call(sim, "GET", f"/api/v1/generate/{gen_id}/status")[1]
        assert (body["state"], body["result"]["urls"]) == ("completed", [])
        assert not sim.requests[:-1]


class TestSettings:
    def test_refuses_a_speed_with_a_virtual_clock(self) -> None:
        """A virtual clock runs at speed 1; asking for another speed is an error."""
        with pytest.raises(ValueError, match="speed"):
            Simulator(clock=VirtualClock(), speed=10)

    def test_cdn_url_moves_result_urls(self, sim: Simulator) -> None:
        """Setting cdn_url (as serve() does) is where result URLs point from then on."""
        sim.cdn_url = "http://127.0.0.1:9/"
        gen = sim_submit(sim)
        sim.complete(gen["generation_id"])
        url = sim_call(sim, "GET", gen["poll_url"])[1]["result"]["urls"][0]
        assert url == f"http://127.0.0.1:9/videos/{gen['generation_id']}.mp4"

    def test_generations_are_brought_up_to_date(
        self, sim: Simulator, clock: VirtualClock
    ) -> None:
        """generations reports each state as of now, without a poll."""
        gen_id = sim_submit(sim)["generation_id"]
        clock.advance(1000)
        assert sim.generations[gen_id].state == "completed"
