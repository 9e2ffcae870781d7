"""The poll plan: which generation to poll when, decided with plain numbers.

Nothing here awaits or sleeps; the shared poller (`_poller.py`) asks `PollPlan.due(now)` what
to send, sends it, and reports back with `on_status` / `on_failure` / `on_error` (h11 keeps
its state machine apart from its I/O the same way). So every rule is tested with a clock that
is a number and no event loop.

The rules, per client: each generation is polled at its own `poll_interval_hint` while the
total fits the status budget (`POLL_BUDGET_SHARE` of `requests_per_minute`); past it every
interval is stretched by the same factor (`shared_poll_interval`), and each interval is drawn
from [1.0, `JITTER`] of its planned length so handles drift apart instead of polling in
lock-step (upwards: never faster than a hint asks). Launches are spread at the budget's rate
(a `BURST` allowed) rather than let through in the rate window's bursts. A generation nobody
waits on is dropped from the plan when its turn comes, and costs nothing until someone waits
again. A transient failure backs off up to `POLL_BACKOFF_CAP`; a `Retry-After` longer than
the SDK sleeps ends the watch with `RateLimitError`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._exceptions import KolboError, RateLimitError, rate_limited
from ._retries import (
    POLL_BACKOFF_CAP,
    Attempt,
    poll_delay,
    retry_delay,
    shared_poll_interval,
    waits_too_long,
)

if TYPE_CHECKING:
    from ._models import GenerationStatus

__all__ = ["BURST", "JITTER", "PollPlan", "Track"]

#: Polls that may be sent back to back before they are spaced at the budget's rate.
BURST = 4
#: Jitter of each planned interval: drawn from [1, JITTER] of it.
JITTER = 1.1


class Track:
    """What is known of one generation id, and its place in the plan.

    `version` grows with every status, so a reader can tell news from what it has seen.
    `watchers` are the poller's listeners (the plan only asks whether there are any).
    """

    __slots__ = (
        "__weakref__",
        "counted",
        "due",
        "error",
        "failures",
        "fallback_hint",
        "id",
        "in_flight",
        "last_error",
        "seq",
        "status",
        "version",
        "via",
        "watchers",
        "weight",
    )

    def __init__(self, generation_id: str, fallback_hint: float | None) -> None:
        self.id = generation_id
        self.fallback_hint = fallback_hint  # the submission's hint, until a status has one
        self.status: GenerationStatus | None = None
        self.version = 0
        self.error: Exception | None = None  # a non-retryable error ends the watch
        self.last_error: KolboError | None = None  # the latest transient one, for timeouts
        self.failures = 0
        self.due = -math.inf  # when the next poll is planned
        self.seq = -1  # id of its live heap item; -1 when not planned
        self.in_flight = False
        self.watchers: list[object] = []
        self.weight = 0.0  # polls per second it asks for (1 / interval)
        self.counted = False  # its weight is in the load: planned or in flight
        #: What the poller polls it through (the client, or `with_options` copy, of the
        #: handle that last asked): opaque here.
        self.via: object = None

    @property
    def finished(self) -> bool:
        """Nothing more will be learnt by polling: a terminal status, or an error."""
        return self.error is not None or (self.status is not None and self.status.done)

    def interval(self) -> float:
        """Seconds between polls that the server asks for (or the SDK's default)."""
        hint = None if self.status is None else self.status.raw.get("poll_interval_hint")
        return poll_delay(self.fallback_hint if hint is None else hint)

    def outlasts(self, deadline: float | None) -> bool:
        """Whether the server asked (with a 429) to wait past `deadline`: a waiter with that
        deadline gets the `RateLimitError` now rather than a timeout later."""
        return (
            deadline is not None
            and isinstance(self.last_error, RateLimitError)
            and self.due >= deadline
        )


class PollPlan:
    """The schedule of one client's status polls.

    Args:
        budget: status polls per second the plan may spend (None: unpaced).
        max_in_flight: polls on the wire at once.
    """

    def __init__(self, *, budget: float | None, max_in_flight: int, rng: random.Random) -> None:
        self.budget = budget
        self.max_in_flight = max_in_flight
        self.rng = rng
        # Sum of the weights of planned and in-flight tracks: what the budget is shared by.
        self.load = 0.0
        self.counted = 0
        self.in_flight = 0
        self._tracks: weakref.WeakValueDictionary[str, Track] = weakref.WeakValueDictionary()
        self._heap: list[tuple[float, int, Track]] = []
        self._seq = itertools.count()
        self._tat = -math.inf  # when the next launch may go, at the budget's pace

    def track(
        self,
        generation_id: str,
        *,
        fallback_hint: float | None = None,
        known: GenerationStatus | None = None,
        via: object = None,
    ) -> Track:
        """The track of `generation_id` (one per id while anyone holds it), made on first use.

        `known` is a terminal status learnt elsewhere (a batch journal): no poll is needed.
        `via` is what to poll it through from now on (the asker's client settings).
        """
        track = self._tracks.get(generation_id)
        if track is None:
            track = self._tracks[generation_id] = Track(generation_id, fallback_hint)
        elif track.fallback_hint is None:
            track.fallback_hint = fallback_hint
        if via is not None:
            track.via = via
        if known is not None and track.status is None:
            track.status = known
            track.version += 1
        return track

    def plan(self, track: Track, due: float) -> bool:
        """Put `track` in the plan at `due` (an earlier turn than planned wins).

        Returns True when the turn was moved: the driver may have to wake up for it.
        """
        if not track.counted:
            track.counted = True
            track.weight = 1.0 / track.interval()
            self.load += track.weight
            self.counted += 1
        if track.seq >= 0 and track.due <= due:
            return False  # already planned, no later than asked
        track.due = due
        track.seq = seq = next(self._seq)
        heapq.heappush(self._heap, (due, seq, track))
        return True

    def drop(self, track: Track) -> None:
        """Take `track`'s weight out of the load (its heap item goes stale)."""
        if track.counted:
            track.counted = False
            self.counted -= 1
            # Back to exactly zero when nothing is planned, so float drift cannot build up.
            self.load = self.load - track.weight if self.counted else 0.0

    def due(
        self,
        now: float,
        *,
        wanted: Callable[[Track], bool],
        admit: Callable[[], float],
    ) -> tuple[list[Track], list[Track], float]:
        """What to do now: the tracks to poll (marked in flight), the tracks parked, and the
        seconds until the next turn.

        `wanted(track)`: someone waits on it now. A track nobody waits on is parked at its
        turn: out of the plan, until one of its watchers waits again (`join` it again).
        `admit()`: the client's rate window, 0 when a poll may go now (and counted).
        """
        launch: list[Track] = []
        parked: list[Track] = []
        heap = self._heap
        while heap:
            due, seq, track = heap[0]
            if track.seq != seq or not track.watchers or track.finished:
                heapq.heappop(heap)  # stale, unwatched or finished: off the plan
                if track.seq == seq:
                    track.seq = -1
                    self.drop(track)
                continue
            if not wanted(track):
                heapq.heappop(heap)
                track.seq = -1
                self.drop(track)
                parked.append(track)
                continue
            if due > now:
                return launch, parked, due - now
            if self.in_flight >= self.max_in_flight:
                return launch, parked, math.inf  # a landing poll wakes the driver
            wait = self._admission(now, admit)
            if wait > 0:
                return launch, parked, wait
            heapq.heappop(heap)
            track.seq = -1
            track.in_flight = True
            self.in_flight += 1
            launch.append(track)
        return launch, parked, math.inf

    def _admission(self, now: float, admit: Callable[[], float]) -> float:
        budget = self.budget
        if budget is not None:
            start = self._tat - BURST / budget
            if now < start:
                return start - now
        wait = admit()
        if wait > 0:
            return wait
        if budget is not None:
            self._tat = max(self._tat, now) + 1.0 / budget
        return 0.0

    def landed(self, track: Track) -> bool:
        """A poll of `track` is off the wire; True when that frees a launch held for it."""
        track.in_flight = False
        full = self.in_flight == self.max_in_flight
        self.in_flight -= 1
        return full

    def on_status(self, track: Track, status: GenerationStatus, now: float) -> None:
        """A poll answered: record it and plan the next turn."""
        track.failures = 0
        track.last_error = None
        track.status = status
        track.version += 1
        if status.done:
            self.drop(track)
            return
        weight = 1.0 / track.interval()
        if track.counted:
            self.load += weight - track.weight
        track.weight = weight
        interval = shared_poll_interval(1.0 / weight, load=self.load, budget=self.budget)
        self._again(track, now + interval * self.rng.uniform(1.0, JITTER))

    def on_failure(self, track: Track, attempt: Attempt, error: KolboError, now: float) -> float:
        """A poll failed in a way worth retrying: back off; return the seconds until the
        retry. A `Retry-After` longer than the SDK sleeps ends the watch instead (-1)."""
        if waits_too_long(attempt.retry_after):
            self.on_error(track, rate_limited(error, attempt.retry_after))
            return -1.0
        delay = retry_delay(
            attempt,
            is_generation=False,
            retries_done=track.failures,
            max_retries=None,
            rng=self.rng,
            cap=POLL_BACKOFF_CAP,
        ) or 0.0
        track.failures += 1
        track.last_error = error
        self._again(track, now + delay)
        return delay

    def on_error(self, track: Track, error: Exception) -> None:
        """A poll failed for good (401, 404, a malformed answer, ...): the watch ends."""
        track.error = error
        self.drop(track)

    def cut_short(self, track: Track, now: float) -> None:
        """A poll was cancelled before its answer: poll again soon."""
        self._again(track, now)

    def join(
        self, track: Track, watcher: object, *, fresh: bool, every: bool, live: bool, now: float
    ) -> bool:
        """`watcher` starts watching `track`; True when it should be told of the track now.

        `fresh` asks for a status polled from now on (a new `progress()` or wait): polled now,
        and an old error cleared (a new wait tries again after, say, a 404), unless the status
        is terminal, or another watcher is `live`ly waiting on the track, whose latest status
        is then as fresh as a poll (a watcher of `every` status is told it now). Otherwise the
        track keeps its planned turn.
        """
        track.watchers.append(watcher)
        retry = fresh and track.error is not None
        if retry:
            track.error = None  # polled again: after an error nobody polls it any more
        if track.finished:
            return True
        if fresh and live and not retry and track.status is not None:
            # As fresh as a poll: a stream is told it now, a wait for the end waits with the
            # others; either way the track keeps its turn.
            return every
        if not track.in_flight:
            self.plan(track, now if fresh else track.due)
        return False

    def leave(self, track: Track, watcher: object) -> bool:
        """`watcher` stops watching; with none left the track leaves the plan at its turn.
        False when it was not watching."""
        try:
            track.watchers.remove(watcher)
        except ValueError:
            return False
        if not track.watchers and not track.in_flight:
            self.drop(track)
        return True

    def _again(self, track: Track, due: float) -> None:
        track.due = due
        if track.watchers:
            self.plan(track, due)
        else:
            self.drop(track)
