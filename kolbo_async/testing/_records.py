"""The simulator's plain records: requests and answers, generations, fault settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

__all__ = [
    "Faults",
    "GenerationRecord",
    "Plan",
    "RecordedRequest",
    "SimGeneration",
    "SimRequest",
    "SimResponse",
]


@attrs.define
class SimRequest:
    """A request as the service sees it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    host: str = "api"  # "api" or "cdn"
    client: str = "127.0.0.1"


@attrs.define
class SimResponse:
    """What the service answers. `fault` tells the adapter to misbehave instead."""

    status: int = 200
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    #: None, "drop_before", "drop_after" or "slow" (then answer after `delay` real seconds).
    fault: str | None = None
    delay: float = 0.0
    #: For large CDN bodies: produce the bytes in chunks instead of holding them.
    chunks: Iterator[bytes] | None = None


@attrs.define
class RecordedRequest:
    """One request the simulator saw, as sent (the X-API-Key header included)."""

    time: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    host: str
    status: int
    fault: str | None


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

    def state_at(self, now: float) -> tuple[str, int]:
        """(state, progress) at simulated time `now`: a pure function of the timeline.

        Example:
            >>> g = GenerationRecord("a" * 24, "k", "text_to_video", {}, "auto", 5, "16:9",
            ...                      35, created_at=0, pending_seconds=3, processing_seconds=90)
            >>> g.state_at(1), g.state_at(48), g.state_at(93)
            (('pending', 0), ('processing', 49), ('completed', 100))
        """
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return "cancelled", self._progress(self.cancelled_at)
        elapsed = now - self.created_at
        if elapsed < self.pending_seconds:
            return "pending", 0
        if now < self.ends_at:
            return "processing", self._progress(now)
        return ("failed", self._progress(now)) if self.outcome == "failed" else ("completed", 100)

    def _progress(self, now: float) -> int:
        done = now - self.created_at - self.pending_seconds
        if done <= 0 or self.processing_seconds <= 0:
            return 0
        return min(99, int(99 * done / self.processing_seconds))


#: The public name for a generation record (`Simulator.generations` values).
SimGeneration = GenerationRecord


@attrs.define
class Faults:
    """Random fault rates (each 0..1), drawn from the simulator's seeded generator.

    Mutable: change them between requests. Scripted, one-off faults go through
    `Simulator.inject` instead, and take precedence.

    Example:
        >>> sim.faults.status_error_rate = 0.2     # doctest: +SKIP
        >>> sim.faults.insufficient_credits = True  # doctest: +SKIP
    """

    #: Status GETs answered 500, 502, 503 (JSON) or a proxy's HTML 502.
    status_error_rate: float = 0.0
    #: Status GETs whose connection drops with no answer.
    status_drop_rate: float = 0.0
    #: Status GETs answered only after `slow_seconds`.
    status_slow_rate: float = 0.0
    #: How long a "slow" answer takes, in real seconds.
    slow_seconds: float = 5.0
    #: Generation POSTs rejected with a 429 (and Retry-After) before any work.
    generate_429_rate: float = 0.0
    #: Generation POSTs refused before the request is read: no generation, no charge.
    generate_refuse_rate: float = 0.0
    #: Generation POSTs that create (and charge for) a generation, then drop the connection.
    generate_drop_after_create_rate: float = 0.0
    #: Every generation POST answers 400 INSUFFICIENT_CREDITS.
    insufficient_credits: bool = False


@attrs.frozen
class Plan:
    """Settings queued by `Simulator.plan` for the next generation created."""

    outcome: str = "completed"
    processing_seconds: float | None = None
    failure: dict[str, Any] | None = None
