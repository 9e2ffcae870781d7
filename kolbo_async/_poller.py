"""The shared poller: one driver for every status poll a client sends.

Whoever waits drives. There is no background task (a client needs no task group, and
``break`` leaks nothing): the first caller that waits becomes the *driver* and sends the due
polls of every watched generation, its own and everyone else's, from a task group of its
own. When its own wait is over it stops launching, lets the polls in flight land (a grace
second, then cancels them: they are re-planned) and hands the role to the waiter that has
waited longest, which alone may take it: a departing driver that waits again at once (a
`progress()` stream between two updates) must not take the role straight back, or another
waiter's slow poll would be cut short at every update. Every other waiter sleeps on its own
event until a status it listens for arrives.

What to poll when is `_poll_plan.PollPlan`'s decision; this module only sleeps, sends (through
the `fetch` callable the client gives it) and wakes listeners.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import anyio

from ._config import RateLimits
from ._exceptions import RateLimitError
from ._pacing import Pacer
from ._poll_plan import PollPlan, Track
from ._retries import POLL_BUDGET_SHARE
from ._send import Retryable

if TYPE_CHECKING:
    import random

    from anyio.abc import TaskGroup

    from ._clock import Clock
    from ._hooks import Hook
    from ._models import GenerationStatus

    #: One status poll: ``fetch(via, generation_id)``, `via` being the track's (`Track.via`).
    Fetch = Callable[[Any, str], Awaitable[GenerationStatus]]

__all__ = ["Listener", "Poller", "Track"]

logger = logging.getLogger("kolbo_async")

#: Clock seconds a departing driver lets in-flight polls land before cancelling them.
GRACE = 1.0


class Listener:
    """A caller waiting on one or more tracks (a `progress()` stream, a batch)."""

    __slots__ = ("deadline", "event", "every", "parked", "ready", "timed_out", "waiting",
                 "woken")  # fmt: skip

    def __init__(self, *, every: bool) -> None:
        self.every = every  # a stream wants every status, a batch only the ends
        self.ready: dict[Track, None] = {}  # tracks with news, in arrival order
        self.event: anyio.Event | None = None
        self.deadline: float | None = None
        self.timed_out = False
        self.waiting = False
        self.woken = False  # poked by its owner (a batch's submitter has an outcome)
        self.parked: list[Track] = []  # dropped from the plan while it was not waiting

    def take(self) -> list[Track]:
        """The tracks with news since the last call, in arrival order."""
        ready = list(self.ready)
        self.ready.clear()
        return ready


class Poller:
    """The driver; one per client, shared by its `with_options` copies.

    Args:
        fetch: one status poll of a generation id through its track's `via` (the settings of
            the client that asked), already paced by the poller; a failure worth retrying
            comes out as `Retryable`.
        hooks: told of each change of state or progress a poll finds (`_hooks.StateChanged`).
    """

    def __init__(
        self,
        *,
        fetch: Fetch,
        clock: Clock,
        pacer: Pacer,
        rate_limits: RateLimits | None,
        max_in_flight: int,
        rng: random.Random,
        hooks: tuple[Hook, ...] = (),
    ) -> None:
        self.fetch = fetch
        self.hooks = hooks
        self.clock = clock
        self.pacer = pacer
        self.plan = PollPlan(
            budget=None
            if rate_limits is None
            else rate_limits.requests_per_minute * POLL_BUDGET_SHARE / 60.0,
            max_in_flight=max_in_flight,
            rng=rng,
        )
        self._deadlines: list[tuple[float, int, Listener]] = []
        self._seq = itertools.count()
        self._driver: Listener | None = None
        self._heir: Listener | None = None  # handed the role, not yet driving
        self._idle: dict[Listener, None] = {}
        # The driver's sleeps run inside these scopes; cancelling one wakes it. A scope, not
        # an event and an alarm task: the sleep registers with the clock at once, which a
        # virtual clock needs to order it before the sleeps of requests in flight.
        self._nap: anyio.CancelScope | None = None
        self._nap_until = -math.inf  # when the driver's current sleep ends by itself
        self._landing: anyio.CancelScope | None = None

    # -- who listens to what -------------------------------------------------------------

    def track(
        self,
        generation_id: str,
        *,
        fallback_hint: float | None = None,
        known: GenerationStatus | None = None,
        via: object = None,
    ) -> Track:
        """The track of `generation_id`, shared by every handle on it (see `PollPlan.track`)."""
        return self.plan.track(generation_id, fallback_hint=fallback_hint, known=known, via=via)

    def watch(
        self, listener: Listener, track: Track, *, fresh: bool, due: float | None = None
    ) -> None:
        """Start listening to `track`.

        `fresh` asks for a status polled from now on (a new `progress()`); otherwise the
        track keeps its planned turn, or takes `due` (a batch's new submission waits for its
        hint before the first poll).
        """
        if due is not None and not track.in_flight:
            track.due = due
        live = _wanted(track)  # before joining: is anyone else waiting on it right now?
        if self.plan.join(
            track, listener, fresh=fresh, every=listener.every, live=live, now=self.clock.now()
        ):
            self._tell(listener, track)
        elif track.seq >= 0:
            self._wake_driver(track.due)

    def unwatch(self, listener: Listener, track: Track) -> None:
        """Stop listening; with no listener left the track leaves the plan at its turn."""
        if self.plan.leave(track, listener):
            listener.ready.pop(track, None)

    def poke(self, listener: Listener) -> None:
        """Wake `listener` for a reason of its owner's (a batch has an outcome to give)."""
        listener.woken = True
        self._notify(listener)

    # -- waiting and driving -------------------------------------------------------------

    async def wait(self, listener: Listener, deadline: float | None) -> None:
        """Return when `listener` has news, was poked, or its deadline passed (`timed_out`)."""
        if listener.ready or listener.woken:
            return
        if deadline is not None and self.clock.now() >= deadline:
            listener.timed_out = True
            return
        listener.deadline = deadline
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, next(self._seq), listener))
            self._wake_driver(deadline)
        listener.waiting = True
        for track in listener.parked:
            if track.watchers and not track.finished and not track.in_flight:
                self._plan(track, track.due)
        listener.parked.clear()
        try:
            while not (listener.ready or listener.woken or listener.timed_out):
                if self._driver is None and self._heir in (None, listener):
                    await self._drive(listener)
                    continue
                listener.event = event = anyio.Event()
                self._idle[listener] = None
                try:
                    await event.wait()
                finally:
                    self._idle.pop(listener, None)
                    listener.event = None
        finally:
            listener.waiting = False
            listener.deadline = None
            if self._heir is listener:
                # Handed the role, then cancelled or told its news before driving: pass it on.
                self._hand_off()

    async def _drive(self, me: Listener) -> None:
        self._driver = me
        self._heir = None
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    now = self.clock.now()
                    self._expire(now)
                    if me.ready or me.woken or me.timed_out:
                        break
                    await self._nap_for(now, self._launch(tg, now))
                if self.plan.in_flight:
                    # Other waiters' polls: a moment to land, then they are cancelled (and
                    # rescheduled) rather than holding this caller for a request timeout.
                    with anyio.CancelScope() as self._landing:
                        await self._land(self.clock.now() + (0.0 if me.timed_out else GRACE))
                tg.cancel_scope.cancel()
        finally:
            self._driver = None
            self._nap = self._landing = None
            self._hand_off()

    async def _land(self, end: float) -> None:
        """Sleep until `end` (or the last poll in flight lands: `_landing` is cancelled),
        still raising the timeouts that fall meanwhile, on time."""
        while True:
            now = self.clock.now()
            self._expire(now)
            await self._nap_for(now, end - now)
            if self.clock.now() >= end:
                return

    async def _nap_for(self, now: float, wait: float) -> None:
        """The driver's sleep: `wait` seconds at most, ending at the next waiter's deadline,
        and sooner when `_wake_driver` cancels it (a poll due earlier, a nearer deadline)."""
        if self._deadlines:
            wait = min(wait, self._deadlines[0][0] - now)
        self._nap_until = now + wait
        with anyio.CancelScope() as self._nap:
            await _sleep(self.clock, wait)
        self._nap = None

    def _hand_off(self) -> None:
        self._heir = None
        for listener in self._idle:
            self._heir = listener
            self._notify(listener)
            return

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, _, listener = heapq.heappop(deadlines)
            if listener.waiting and listener.deadline == deadline:
                listener.timed_out = True
                self._notify(listener)

    def _notify(self, listener: Listener) -> None:
        if listener.event is not None:
            listener.event.set()
        if listener is self._driver:
            self._wake_driver()

    def _wake_driver(self, at: float = -math.inf) -> None:
        """Wake the driver if it would otherwise sleep past `at` (default: now)."""
        if self._nap is not None and at < self._nap_until:
            self._nap.cancel()

    # -- sending ------------------------------------------------------------------------

    def _plan(self, track: Track, due: float) -> None:
        if self.plan.plan(track, due):
            self._wake_driver(due)

    def _launch(self, tg: TaskGroup, now: float) -> float:
        """Send every poll that is due and allowed; return the seconds until the next one."""
        launch, parked, wait = self.plan.due(now, wanted=_wanted, admit=self.pacer.try_admit)
        for track in parked:
            for listener in self._listeners(track):
                listener.parked.append(track)
        for track in launch:
            tg.start_soon(self._poll, track)
        return wait

    async def _poll(self, track: Track) -> None:
        plan = self.plan
        settled = False
        try:
            status = await self.fetch(track.via, track.id)
        except Retryable as failed:
            settled = True
            delay = plan.on_failure(track, failed.attempt, failed.error, self.clock.now())
            if delay < 0:
                # Not slept: every waiter gets the server's answer (and its advice) now.
                self._tell_all(track)
                return
            logger.debug("polling %s again in %.2f s after: %s", track.id, delay, failed.error)
            if track.seq >= 0:
                self._wake_driver(track.due)
            if isinstance(failed.error, RateLimitError):
                # The server asked for longer than some waiters have: tell them now.
                for listener in self._listeners(track):
                    if track.outlasts(listener.deadline):
                        listener.timed_out = True
                        self._notify(listener)
        except Exception as error:  # not retryable (401, 404, a malformed answer, ...)
            settled = True
            plan.on_error(track, error)
            self._tell_all(track)
        else:
            settled = True
            if self.hooks:
                _tell_hooks(self.hooks, track.status, status)
            plan.on_status(track, status, self.clock.now())
            if status.done:
                self._tell_all(track)
            else:
                logger.debug("waiting %.2f s before polling %s again",
                             track.due - self.clock.now(), track.id)  # fmt: skip
                if track.seq >= 0:
                    self._wake_driver(track.due)
                for listener in self._listeners(track):
                    if listener.every:
                        self._tell(listener, track)
        finally:
            if plan.landed(track):
                self._wake_driver()  # a launch may have been waiting for this slot
            if not settled:
                plan.cut_short(track, self.clock.now())  # cancelled: poll again soon
                if track.seq >= 0:
                    self._wake_driver(track.due)
            if plan.in_flight == 0 and self._landing is not None:
                self._landing.cancel()

    def _listeners(self, track: Track) -> list[Listener]:
        return cast("list[Listener]", track.watchers)  # only listeners join a track

    def _tell_all(self, track: Track) -> None:
        for listener in self._listeners(track):
            self._tell(listener, track)

    def _tell(self, listener: Listener, track: Track) -> None:
        listener.ready[track] = None
        self._notify(listener)


def _tell_hooks(
    hooks: tuple[Hook, ...], before: GenerationStatus | None, status: GenerationStatus
) -> None:
    if before is None or (before.state, before.progress) != (status.state, status.progress):
        from ._hooks import StateChanged, emit

        emit(hooks, StateChanged(status.generation_id, status.state, status.progress))


def _wanted(track: Track) -> bool:
    """Someone waits on `track` right now."""
    return any(listener.waiting for listener in cast("list[Listener]", track.watchers))


async def _sleep(clock: Clock, seconds: float) -> None:
    if seconds <= 0:
        from anyio.lowlevel import checkpoint  # not loaded by `import anyio`

        await checkpoint()
    elif math.isinf(seconds):
        await anyio.sleep_forever()
    else:
        await clock.sleep(seconds)
