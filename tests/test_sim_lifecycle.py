"""A generation's lifecycle: the transition table, and the timeline read through it."""

from __future__ import annotations

from typing import Any

import pytest

from kolbo_async.testing import GenerationRecord, Simulator, VirtualClock
from kolbo_async.testing._lifecycle import REFUNDING, TERMINAL, TRANSITIONS, check_outcome

from . import sim_fixtures
from .conftest import sim_call, sim_submit

# This module's fixtures: a virtual clock at 0 (not conftest's StepClock) and a simulator on it.
clock = sim_fixtures.clock
sim = sim_fixtures.sim


def record(**timeline: Any) -> GenerationRecord:
    """A generation submitted at 0: 3 s pending, 90 s processing, unless `timeline` says."""
    fields: dict[str, Any] = {"created_at": 0.0, "pending_seconds": 3.0,
                              "processing_seconds": 90.0, **timeline}
    return GenerationRecord("a" * 24, "k", "text_to_video", {}, "auto", 5, "16:9", 35, **fields)


class TestTable:
    def test_terminal_states_have_no_moves(self) -> None:
        """completed, failed and cancelled are the states with no way out."""
        assert {"completed", "failed", "cancelled"} == TERMINAL
        assert REFUNDING <= TERMINAL

    def test_every_state_is_reachable_from_pending(self) -> None:
        """No state in the table is dead weight."""
        seen, todo = {"pending"}, ["pending"]
        while todo:
            for target in TRANSITIONS[todo.pop()].values():
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        assert seen == set(TRANSITIONS)

    def test_only_known_outcomes(self) -> None:
        """An outcome the table has no event for is refused."""
        check_outcome("filtered")
        with pytest.raises(ValueError, match="outcome"):
            check_outcome("exploded")


class TestStateAt:
    def test_pending_processing_completed(self) -> None:
        """Progress is 0 while pending, rises while processing, and is 100 when completed."""
        gen = record()
        assert gen.state_at(0) == ("pending", 0)
        assert gen.state_at(2.9) == ("pending", 0)
        assert gen.state_at(3) == ("processing", 0)
        assert gen.state_at(48) == ("processing", 49)
        assert gen.state_at(92.9)[1] == 98
        assert gen.state_at(93) == ("completed", 100)

    def test_failed_and_filtered(self) -> None:
        """A failure keeps the progress it reached; a filtered one completes (with no URLs)."""
        assert record(outcome="failed").state_at(1000) == ("failed", 99)
        assert record(outcome="filtered").state_at(1000) == ("completed", 100)

    def test_cancelled_keeps_the_progress_of_its_moment(self) -> None:
        """A cancel freezes progress where it was: 0 while pending, partway while processing."""
        assert record(cancelled_at=1.0).state_at(1000) == ("cancelled", 0)
        assert record(cancelled_at=48.0).state_at(1000) == ("cancelled", 49)
        assert record(cancelled_at=48.0).state_at(47) == ("processing", 48)

    def test_no_processing_time_starts_and_ends_at_once(self) -> None:
        """With zero seconds of processing, "start" and the outcome happen together."""
        assert record(pending_seconds=0, processing_seconds=0).state_at(0) == ("completed", 100)
        failed = record(processing_seconds=0, outcome="failed")
        assert failed.state_at(3) == ("failed", 0)

    def test_events_in_timeline_order(self) -> None:
        """The timeline lists start, cancel and outcome in the order they happen."""
        assert record(cancelled_at=10.0).events() == [
            (3.0, "start"), (10.0, "cancel"), (93.0, "complete")
        ]

    def test_the_table_decides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """state_at reads TRANSITIONS: without a "cancel" move, a cancel changes nothing."""
        monkeypatch.setitem(TRANSITIONS, "processing", {"complete": "completed"})
        assert record(cancelled_at=48.0).state_at(1000) == ("completed", 100)


class TestThroughTheService:
    def test_cancel_follows_the_table(
        self, sim: Simulator, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Cancelling is allowed where the table has a "cancel" move, and only there."""
        monkeypatch.setitem(TRANSITIONS, "pending", {"start": "processing"})
        gen = sim_submit(sim)
        cancel = f"/api/v1/generate/{gen['generation_id']}/cancel"
        status, body, _ = sim_call(sim, "POST", cancel, {})
        assert (status, body["state"]) == (409, "pending")
        clock.advance(3)
        status, body, _ = sim_call(sim, "POST", cancel, {})
        assert (status, body["state"]) == (200, "cancelled")

    def test_complete_refuses_an_ended_generation(self, sim: Simulator) -> None:
        """complete() and fail() need a state with moves left."""
        gen_id = sim_submit(sim)["generation_id"]
        sim_call(sim, "POST", f"/api/v1/generate/{gen_id}/cancel", {})
        with pytest.raises(ValueError, match="already cancelled"):
            sim.complete(gen_id)
