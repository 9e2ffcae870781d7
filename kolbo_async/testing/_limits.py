"""Kolbo's rate limits, simulated: fixed one-minute windows per client address and per key."""

from __future__ import annotations

import math

from ._records import SimResponse, json_answer

__all__ = ["WINDOW", "RateWindows", "retry_after"]

#: The length of a window in simulated seconds; windows start at multiples of it.
WINDOW = 60.0


class RateWindows:
    """Counts requests in fixed one-minute windows and answers 429 past a limit.

    Every request counts against its client address (`requests_per_minute`); a generation POST
    counts against its key too (`generations_per_minute`). A 429 is answered before any work,
    with Kolbo's ``{"status": false, "message": ...}`` and a ``Retry-After`` until the window
    ends.

    Args:
        enabled: count at all (`Simulator` turns this on for `serve` only, by default).
        hint_scale: what the client is told to wait is divided by this (see `ServiceState`).
    """

    def __init__(
        self,
        *,
        enabled: bool,
        generations_per_minute: int,
        requests_per_minute: int,
        hint_scale: float,
    ) -> None:
        self.enabled = enabled
        self.generations_per_minute = generations_per_minute
        self.requests_per_minute = requests_per_minute
        self.hint_scale = hint_scale
        self._windows: dict[str, tuple[int, int]] = {}

    def check(
        self, client: str, key: str, now: float, *, generation: bool, forced: bool = False
    ) -> SimResponse | None:
        """Count one request; the 429 to answer when it is over a limit (or `forced`)."""
        buckets = [("ip:" + client, self.requests_per_minute)]
        if generation:
            buckets.append(("gen:" + key, self.generations_per_minute))
        window = int(now // WINDOW)
        over = forced
        if self.enabled and not forced:
            for bucket, limit in buckets:
                seen_window, count = self._windows.get(bucket, (window, 0))
                if seen_window == window and count >= limit:
                    over = True
        if over:
            # Seconds until the window ends, in the client's (real) seconds.
            wait = max((window + 1) * WINDOW - now, 1.0) / self.hint_scale
            response = json_answer(429, {"status": False,
                                         "message": "Too many requests, please try again later"})
            response.headers["retry-after"] = retry_after(wait, self.hint_scale)
            return response
        if self.enabled:
            for bucket, _ in buckets:
                seen_window, count = self._windows.get(bucket, (window, 0))
                self._windows[bucket] = (window, 1 if seen_window != window else count + 1)
        return None


def retry_after(seconds: float, speed: float) -> str:
    """A ``Retry-After`` value for `seconds` on a clock running at `speed`.

    Whole seconds at real speed (what servers send); a decimal on a fast clock, where a
    whole second would be a long simulated wait.

    Example:
        >>> retry_after(41.2, 1), retry_after(0.2061, 200)
        ('42', '0.206')
    """
    if speed == 1:
        return str(math.ceil(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".") or "0"
