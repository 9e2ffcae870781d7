"""A simulated generation's lifecycle: the transition table, and the record it is read from."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "OUTCOME_EVENT",
    "REFUNDING",
    "TERMINAL",
    "TRANSITIONS",
    "GenerationRecord",
    "SimGeneration",
    "check_outcome",
]

# The lifecycle of a generation. Its rules:
#
# - Nothing ticks in the background. A generation's record is a timeline: when each event
#   happens. `GenerationRecord.state_at(now)` replays the events due by `now` through this
#   table, starting from "pending"; so the state is a function of the time asked, and this
#   table is the only place that says which state an event leads to.
# - "start" happens pending_seconds after submit (documented as "queued"), and the outcome
#   ("complete", "filter" = completed with no URLs, a documented quirk, or "fail")
#   processing_seconds later. Progress rises 0..99 while processing, stays where it was when
#   the generation left processing, and is 100 once completed.
# - "cancel" is a request (POST .../cancel), accepted only in a state that has the move; the
#   terminal states (no moves) answer 409 with the current state. An event with no move
#   from the current state changes nothing.
# - Entering a state in REFUNDING gives the credits charged at submit back, exactly once.
TRANSITIONS: dict[str, dict[str, str]] = {
    "pending": {"start": "processing", "cancel": "cancelled"},
    "processing": {
        "complete": "completed",
        "filter": "completed",
        "fail": "failed",
        "cancel": "cancelled",
    },
    "completed": {},
    "failed": {},
    "cancelled": {},
}
REFUNDING = frozenset({"failed", "cancelled"})
TERMINAL = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
#: The event that ends processing, for each way a generation can be planned to end.
OUTCOME_EVENT = {"completed": "complete", "filtered": "filter", "failed": "fail"}


def check_outcome(outcome: str) -> None:
    """Refuse an outcome the lifecycle has no event for.

    Raises:
        ValueError: not ``completed``, ``failed`` or ``filtered``.
    """
    if outcome not in OUTCOME_EVENT:
        raise ValueError(f"outcome must be completed, failed or filtered, not {outcome!r}")


@attrs.define
class GenerationRecord:
    """One simulated generation and its timeline."""

    id: str
    key: str
    kind: str
    request: dict[str, Any]
    model: str
    duration: float
    aspect_ratio: str
    credits: float
    created_at: float
    pending_seconds: float
    processing_seconds: float
    #: "completed", "failed" or "filtered" (completed with no URLs).
    outcome: str = "completed"
    #: The structured ``failure`` a failed generation reports (None: a content-policy one).
    failure: dict[str, Any] | None = None
    cancelled_at: float | None = None
    #: Credits taken from each balance bucket at submit (refunds put them back there).
    charged: dict[str, float] = attrs.field(factory=dict)
    refunded: bool = False
    #: The state at the last time anyone asked (kept current by `ServiceState`).
    state: str = "pending"

    @property
    def ends_at(self) -> float:
        """When the generation leaves ``processing`` (unless cancelled first)."""
        return self.created_at + self.pending_seconds + self.processing_seconds

    def events(self) -> list[tuple[float, str]]:
        """The timeline: (time, event) in the order they happen.

        At equal times "start" comes first: a generation with no processing time starts and
        ends at once, and one cancelled the moment it started was processing.
        """
        timeline = [(self.created_at + self.pending_seconds, "start")]
        if self.cancelled_at is not None:
            timeline.append((self.cancelled_at, "cancel"))
        timeline.append((self.ends_at, OUTCOME_EVENT[self.outcome]))
        return sorted(timeline, key=lambda event: event[0])  # stable: ties keep this order

    def state_at(self, now: float) -> tuple[str, int]:
        """(state, progress) at simulated time `now`, read through `TRANSITIONS`.

        Example:
            >>> g = GenerationRecord("a" * 24, "k", "text_to_video", {}, "auto", 5, "16:9",
            ...                      35, created_at=0, pending_seconds=3, processing_seconds=90)
            >>> g.state_at(1), g.state_at(48), g.state_at(93)
            (('pending', 0), ('processing', 49), ('completed', 100))
        """
        state, ended = "pending", None
        for at, event in self.events():
            if at > now:
                break
            state = TRANSITIONS[state].get(event, state)
            if ended is None and state in TERMINAL:
                ended = at
        if state == "completed":
            return state, 100
        return state, self._progress(now if ended is None else ended)

    def _progress(self, now: float) -> int:
        done = now - self.created_at - self.pending_seconds
        if done <= 0 or self.processing_seconds <= 0:
            return 0
        return min(99, int(99 * done / self.processing_seconds))


#: The public name for a generation record (`Simulator.generations` values).
SimGeneration = GenerationRecord
