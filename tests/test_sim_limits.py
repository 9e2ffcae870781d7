"""Kolbo's rate limits, simulated: fixed one-minute windows per address and per key."""

from __future__ import annotations

from kolbo_async.testing import Simulator, VirtualClock
from kolbo_async.testing._limits import RateWindows, retry_after

from . import sim_fixtures
from .conftest import sim_call, sim_submit

# This module's fixtures: a virtual clock at 0 (not conftest's StepClock) and a simulator on it.
clock = sim_fixtures.clock
sim = sim_fixtures.sim


class TestRateWindows:
    def test_counts_per_window(self) -> None:
        """The limit holds within a window and resets at the next one."""
        windows = RateWindows(enabled=True, generations_per_minute=1, requests_per_minute=9,
                              hint_scale=1)
        assert windows.check("1.2.3.4", "k", 0.0, generation=True) is None
        limited = windows.check("1.2.3.4", "k", 20.0, generation=True)
        assert limited is not None
        assert (limited.status, limited.headers["retry-after"]) == (429, "40")
        assert windows.check("1.2.3.4", "k", 60.0, generation=True) is None

    def test_disabled_counts_nothing_unless_forced(self) -> None:
        """Off, nothing is limited, except a forced (injected) 429."""
        windows = RateWindows(enabled=False, generations_per_minute=0, requests_per_minute=0,
                              hint_scale=1)
        assert windows.check("a", "k", 0.0, generation=True) is None
        forced = windows.check("a", "k", 0.0, generation=False, forced=True)
        assert forced is not None and forced.status == 429

    def test_retry_after_format(self) -> None:
        """Whole seconds at real speed, a short decimal on a fast clock."""
        assert (retry_after(41.2, 1), retry_after(0.2061, 200)) == ("42", "0.206")


class TestThroughTheService:
    def test_fixed_windows(self, clock: VirtualClock) -> None:
        """10 generation POSTs per minute window; the 11th is 429 with the documented body."""
        sim = Simulator(clock=clock, rate_limits=True)
        for _ in range(10):
            sim_submit(sim)
        status, body, headers = sim_call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})
        assert status == 429
        assert body == {"status": False, "message": "Too many requests, please try again later"}
        assert 0 < float(headers["retry-after"]) <= 60
        assert len(sim.generations) == 10  # rejected before any charge
        clock.advance(60)
        sim_submit(sim)

    def test_retry_after_scales_with_speed(self) -> None:
        """With a fast clock Retry-After is in real seconds."""
        sim = Simulator(speed=60.0, rate_limits=True, generations_per_minute=1)
        sim_submit(sim)
        status, _, headers = sim_call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})
        assert status == 429
        assert float(headers["retry-after"]) <= 1.0

    def test_off_by_default_in_process(self, sim: Simulator) -> None:
        """transport()/mock() users get no rate limits unless asked."""
        sim.transport()
        for _ in range(15):
            sim_submit(sim)

    def test_ip_limit_counts_every_request(self, clock: VirtualClock) -> None:
        """The per-address limit counts all requests, generation POSTs included."""
        sim = Simulator(clock=clock, rate_limits=True, requests_per_minute=5)
        sim_submit(sim)
        for _ in range(4):
            assert sim_call(sim, "GET", "/api/v1/models")[0] == 200
        status, _, headers = sim_call(sim, "GET", "/api/v1/models")
        assert (status, headers["retry-after"]) == (429, "60")

    def test_retry_after_is_a_decimal_on_a_fast_clock(self) -> None:
        """Retry-After is seconds until the window ends, divided by the speed."""
        sim = Simulator(clock=VirtualClock(start=30), rate_limits=True, generations_per_minute=0)
        assert sim_call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})[2][
            "retry-after"] == "30"
        fast = Simulator(speed=1e9, rate_limits=True, generations_per_minute=0)
        header = sim_call(fast, "POST", "/api/v1/generate/video", {"prompt": "a"})[2]["retry-after"]
        assert 0 < float(header) < 1e-6 or header == "0"
