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
    outcome: str = "completed"
    cancelled_at: float | None = None
    refunded: bool = False
    #: The state at the last time anyone asked (kept current by `ServiceState`).
    state: str = "pending"

    def state_at(self, now: float) -> tuple[str, int]:
        """(state, progress) at `now`."""
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return "cancelled", self._progress(self.cancelled_at)
        elapsed = now - self.created_at
        if elapsed < self.pending_seconds:
            return "pending", 0
        if elapsed < self.pending_seconds + self.processing_seconds:
            return "processing", self._progress(now)
        return ("failed", self._progress(now)) if self.outcome == "failed" else ("completed", 100)

    def _progress(self, now: float) -> int:
        done = now - self.created_at - self.pending_seconds
        if done <= 0:
            return 0
        return min(99, int(99 * done / self.processing_seconds))


@attrs.define
class Faults:
    """Random fault rates (0..1), drawn from the simulator's seeded generator."""

    status_error_rate: float = 0.0
    status_drop_rate: float = 0.0
    status_slow_rate: float = 0.0
    #: How long a "slow" answer takes, in real seconds.
    slow_seconds: float = 5.0
    generate_429_rate: float = 0.0
    generate_refuse_rate: float = 0.0
    generate_drop_after_create_rate: float = 0.0
    insufficient_credits: bool = False


@attrs.define
class Plan:
    outcome: str = "completed"
    processing_seconds: float | None = None
