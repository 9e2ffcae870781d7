"""The simulated account's credits: buckets charged in order, refunds in kind, once."""

from __future__ import annotations

import pytest

from kolbo_async.testing import GenerationRecord, Simulator, VirtualClock
from kolbo_async.testing._billing import Balance

from . import sim_fixtures
from .conftest import sim_call, sim_submit

# This module's fixtures: a virtual clock at 0 (not conftest's StepClock) and a simulator on it.
clock = sim_fixtures.clock
sim = sim_fixtures.sim


class TestBalance:
    def test_charges_follow_the_documented_order(self) -> None:
        """Plan credits go first, then packs, then redemptions."""
        balance = Balance({"plan_credits": 20, "credit_pack": 10, "redemption": 100})
        assert balance.charge(35) == {"plan_credits": 20, "credit_pack": 10, "redemption": 5}
        assert balance.report() == {"total": 95, "plan_credits": 0, "credit_pack": 0,
                                    "redemption": 95}

    def test_refund_puts_credits_back_once(self) -> None:
        """A refund returns each bucket's share, and a second refund gives nothing."""
        balance = Balance({"plan_credits": 20, "credit_pack": 50})
        gen = GenerationRecord("a" * 24, "k", "text_to_video", {}, "auto", 5, "16:9", 35,
                               created_at=0, pending_seconds=3, processing_seconds=90)
        gen.charged = balance.charge(35)
        assert balance.refund(gen) == 35
        assert balance.refund(gen) == 0
        assert balance.buckets == {"plan_credits": 20, "credit_pack": 50, "redemption": 0}

    def test_unknown_bucket(self) -> None:
        """Only Kolbo's three buckets exist."""
        with pytest.raises(ValueError, match="credit buckets"):
            Balance({"gift": 5})


class TestThroughTheService:
    def test_balance_buckets_in_order(self, clock: VirtualClock) -> None:
        """Charges take plan credits, then packs, then redemptions; refunds put them back."""
        sim = Simulator(clock=clock, credits={"plan_credits": 20, "credit_pack": 10,
                                              "redemption": 100})
        gen = sim_submit(sim)  # 35
        balance = sim_call(sim, "GET", "/api/v1/account/credits")[1]["credits"]
        assert balance == {"total": 95, "plan_credits": 0, "credit_pack": 0, "redemption": 95}
        sim_call(sim, "POST", f"/api/v1/generate/{gen['generation_id']}/cancel", {})
        balance = sim_call(sim, "GET", "/api/v1/account/credits")[1]["credits"]
        assert balance == {"total": 130, "plan_credits": 20, "credit_pack": 10, "redemption": 100}

    def test_credits_endpoint(self, sim: Simulator) -> None:
        """The balance is reported in the documented shape."""
        sim_submit(sim)
        _, body, _ = sim_call(sim, "GET", "/api/v1/account/credits")
        assert set(body["credits"]) == {"total", "plan_credits", "credit_pack", "redemption"}
        assert body["credits"]["total"] == 10_000 - 35

    def test_insufficient_credits_is_400_with_code(self, clock: VirtualClock) -> None:
        """Not enough credits: 400 INSUFFICIENT_CREDITS, nothing created."""
        sim = Simulator(clock=clock, credits=20)
        status, body, _ = sim_call(sim, "POST", "/api/v1/generate/video", {"prompt": "a"})
        assert (status, body["code"]) == (400, "INSUFFICIENT_CREDITS")
        assert not sim.generations
