"""`Window`: a sliding window of events with a 429 cooldown; pure, timed by the caller's `now`."""

from __future__ import annotations

from collections import deque

__all__ = ["PERIOD", "Window"]

#: Kolbo's limits are per minute.
PERIOD = 60.0


class Window:
    """A sliding window of at most `limit` events per `period` seconds, plus a cooldown."""

    __slots__ = ("_events", "cooldown_until", "limit", "period")

    def __init__(self, limit: int | None, period: float = PERIOD) -> None:
        self.limit = limit
        self.period = period
        self._events: deque[float] = deque()
        self.cooldown_until = float("-inf")

    def delay(self, now: float) -> float:
        """Seconds until one more event may happen (0 when it may happen now)."""
        events = self._prune(now)
        wait = self.cooldown_until - now
        if self.limit is not None and len(events) >= self.limit:
            wait = max(wait, events[len(events) - self.limit] + self.period - now)
        return max(0.0, wait)

    def record(self, now: float) -> None:
        """Count one event at `now` (nothing to count when the window has no limit)."""
        if self.limit is not None:
            self._events.append(now)

    def cool_down(self, now: float, retry_after: float | None) -> float:
        """Hold the bucket after a 429; returns the cooldown in seconds.

        `Retry-After` when the server gave one; else until the oldest event in the window
        leaves it (the server counts what we count), and at least one second.
        """
        if retry_after is not None:
            seconds = retry_after
        elif self._prune(now):
            seconds = max(1.0, self._events[0] + self.period - now)
        else:
            seconds = 1.0
        self.cooldown_until = max(self.cooldown_until, now + seconds)
        return seconds

    def _prune(self, now: float) -> deque[float]:
        """The events still in the window at `now` (older ones dropped)."""
        events = self._events
        horizon = now - self.period
        while events and events[0] <= horizon:
            events.popleft()
        return events
