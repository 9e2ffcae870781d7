"""Faults on demand: scripted and random, and what each does to an answer."""

from __future__ import annotations

import json

import pytest

from kolbo_async.testing import FAULTS, SimRequest, Simulator, VirtualClock
from kolbo_async.testing._faults import FaultSource, gateway_page

from . import sim_fixtures
from .conftest import SIM_KEY, sim_call, sim_submit

# This module's fixtures: a virtual clock at 0 (not conftest's StepClock) and a simulator on it.
clock = sim_fixtures.clock
sim = sim_fixtures.sim


class TestFaultSource:
    def test_scripted_first_then_random(self) -> None:
        """Injected faults come in order before any random roll."""
        source = FaultSource(seed=1)
        source.faults.status_drop_rate = 1.0
        source.inject("status", "503", times=2)
        assert [source.next("status") for _ in range(3)][:2] == ["503", "503"]
        assert source.next("status") in ("drop_before", "drop_after")

    def test_no_roll_when_rates_are_off(self) -> None:
        """With every rate at 0 the generator does not move, so ids stay put."""
        source = FaultSource(seed=1)
        before = source.rng.getstate()
        assert source.next("status") is None and source.next("generate") is None
        assert not source.drops_after_create()
        assert source.rng.getstate() == before

    def test_gateway_pages(self) -> None:
        """Each gateway fault has its page; garbled_200 is a cut-off JSON body."""
        for fault in sorted(f for f in FAULTS if f.startswith("gateway_")):
            page = gateway_page(fault)
            assert page.status == int(fault.rpartition("_")[2])
        assert gateway_page("gateway_524").headers["content-type"] == "text/html"


class TestScripted:
    def test_injected_faults_are_consumed_in_order(self, sim: Simulator) -> None:
        """inject() scripts the next answers of a route, then it behaves again."""
        sim.inject("models", "503")
        sim.inject("models", "html_502")
        assert sim_call(sim, "GET", "/api/v1/models")[0] == 503
        status, body, _ = sim_call(sim, "GET", "/api/v1/models")
        assert status == 502
        assert b"<html>" in body
        assert sim_call(sim, "GET", "/api/v1/models")[0] == 200

    def test_drop_after_creates_drop_before_does_not(self, sim: Simulator) -> None:
        """drop_after processes the POST; drop_before never does."""
        sim.inject("generate", "drop_before")
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": SIM_KEY}, body=b'{"prompt":"a"}'))
        assert answer.fault == "drop_before"
        assert not sim.generations
        sim.inject("generate", "drop_after")
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": SIM_KEY}, body=b'{"prompt":"a"}'))
        assert answer.fault == "drop_after"
        assert len(sim.generations) == 1

    def test_injected_kinds(self, sim: Simulator) -> None:
        """invalid_json, slow, insufficient_credits and 429 each do what they say."""
        sim.inject("credits", "invalid_json")
        broken = sim.handle(SimRequest("GET", "/api/v1/account/credits",
                                       headers={"x-api-key": SIM_KEY}))
        assert broken.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken.body)
        sim.inject("models", "slow")
        sim.faults.slow_seconds = 2.5
        slow = sim.handle(SimRequest("GET", "/api/v1/models", headers={"x-api-key": SIM_KEY}))
        assert (slow.status, slow.fault, slow.delay) == (200, "slow", 2.5)
        sim.inject("generate", "insufficient_credits")
        assert sim_call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})[1]["code"] == (
            "INSUFFICIENT_CREDITS")
        sim.faults.insufficient_credits = True
        assert sim_call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})[0] == 400
        with pytest.raises(ValueError, match="fault"):
            sim.inject("status", "explode")
        with pytest.raises(ValueError, match="route"):
            sim.inject("nowhere", "500")


class TestRandom:
    def test_random_rates_are_seeded(self, clock: VirtualClock) -> None:
        """The same seed gives the same faults."""
        def run() -> list[int]:
            sim = Simulator(clock=clock, seed=7)
            sim.faults.status_error_rate = 0.5
            gen = sim_submit(sim)
            return [sim_call(sim, "GET", gen["poll_url"])[0] for _ in range(20)]

        first = run()
        assert first == run()
        assert 200 in first
        assert any(code >= 500 for code in first)

    def test_refused_posts_create_nothing(self, sim: Simulator) -> None:
        """generate_refuse_rate refuses before reading: no generation, no charge."""
        sim.faults.generate_refuse_rate = 1.0
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": SIM_KEY}, body=b'{"prompt":"a"}'))
        assert answer.fault == "drop_before"
        assert not sim.generations
        assert sim.credits() == 10_000

    def test_drop_after_create_charges(self, sim: Simulator) -> None:
        """generate_drop_after_create_rate creates and charges, then drops the answer."""
        sim.faults.generate_drop_after_create_rate = 1.0
        answer = sim.handle(SimRequest("POST", "/api/v1/generate/video",
                                       headers={"x-api-key": SIM_KEY}, body=b'{"prompt":"a"}'))
        assert answer.fault == "drop_after"
        assert len(sim.generations) == 1
        assert sim.credits() == 10_000 - 35

    def test_generate_429_rate(self, sim: Simulator) -> None:
        """generate_429_rate answers 429 with Retry-After and charges nothing."""
        sim.faults.generate_429_rate = 1.0
        status, body, headers = sim_call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})
        assert (status, body["status"], "retry-after" in headers) == (429, False, True)
        assert not sim.generations
