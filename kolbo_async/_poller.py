"""The shared poller: one scheduler for every status poll a client sends.

Whoever waits drives. There is no background task (a client needs no task group, and
``break`` leaks nothing): the first caller that waits becomes the *driver* and sends the due
polls of every watched generation, its own and everyone else's, from a task group of its
own. When its own wait is over it stops launching, lets the polls in flight land (a grace
second, then cancels them: they are rescheduled) and hands the role to another waiter. Every
other waiter sleeps on its own event until a status it listens for arrives.

Planning, per client: each generation is polled at its own `poll_interval_hint` while the
total fits the status budget (`POLL_BUDGET_SHARE` of `requests_per_minute`); past it every
interval is stretched by the same factor (`shared_poll_interval`), and each interval is
drawn from [1.0, 1.1] of its planned length so handles drift apart instead of polling in
lock-step (upwards: never faster than a hint asks). Launches are spread at the budget's
rate (a small burst allowed) rather than let through in the rate window's bursts. A
generation nobody waits on is dropped from the schedule the moment its turn comes, and
costs nothing until someone waits again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from ._config import RateLimits
from ._exceptions import KolboError, RateLimitError
from ._pacing import Pacer
from ._pipeline import Retryable, rate_limited
from ._retries import (
    POLL_BACKOFF_CAP,
    POLL_BUDGET_SHARE,
    retry_delay,
    shared_poll_interval,
    waits_too_long,
)

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._clock import Clock
    from ._handles import AsyncGeneration
    from ._models import GenerationStatus

__all__ = ["Entry", "Listener", "Poller"]

logger = logging.getLogger("kolbo_async")

#: Polls the launcher may send back to back before spacing them at the budget's rate.
BURST = 4
#: Clock seconds a departing driver lets in-flight polls land before cancelling them.
GRACE = 1.0
#: Jitter of each planned interval: drawn from [1, JITTER] of it. Upwards only, so a
#: generation is never polled faster than its server hint asks.
JITTER = 1.1


class Entry:
    """The poller's record of one handle: last status, next turn, who listens."""

    __slots__ = (
        "counted",
        "due",
        "error",
        "failures",
        "generation",
        "in_flight",
        "last_error",
        "listeners",
        "seq",
        "status",
        "version",
        "weight",
    )

    def __init__(self, generation: AsyncGeneration) -> None:
        self.generation = generation
        self.status: GenerationStatus | None = None
        self.version = 0  # bumped on every status, so a listener can tell news from old
        self.error: Exception | None = None  # a non-retryable error ends the watch
        self.last_error: KolboError | None = None  # the latest transient one, for timeouts
        self.failures = 0
        self.due = -math.inf  # when the next poll is planned
        self.seq = -1  # id of its live heap item; -1 when not scheduled
        self.in_flight = False
        self.listeners: list[Listener] = []
        self.weight = 0.0  # polls/s it asks for (1 / hint)
        self.counted = False  # its weight is in the load: it is planned or in flight

    @property
    def finished(self) -> bool:
        """Nothing more will be learnt by polling: terminal status, or an error."""
        return self.error is not None or (self.status is not None and self.status.done)


class Listener:
    """A caller waiting on one or more entries (a `progress()` stream, a batch)."""

    __slots__ = ("deadline", "event", "parked", "ready", "terminal_only", "timed_out", "waiting",
                 "woken")  # fmt: skip

    def __init__(self, *, terminal_only: bool) -> None:
        self.terminal_only = terminal_only  # a batch wants only the ends, a stream every poll
        self.ready: dict[Entry, None] = {}  # entries with news, in arrival order
        self.event: anyio.Event | None = None
        self.deadline: float | None = None
        self.timed_out = False
        self.waiting = False
        self.woken = False  # poked by its owner (a batch's submitter has an outcome)
        self.parked: list[Entry] = []  # dropped from the schedule while it was not waiting


class Poller:
    """The scheduler; one per client, shared by its `with_options` copies."""

    def __init__(
        self,
        *,
        clock: Clock,
        pacer: Pacer,
        rate_limits: RateLimits | None,
        max_in_flight: int,
        rng: random.Random,
    ) -> None:
        self.clock = clock
        self.pacer = pacer
        self.budget = (
            None
            if rate_limits is None
            else rate_limits.requests_per_minute * POLL_BUDGET_SHARE / 60.0
        )
        self.max_in_flight = max_in_flight
        self.rng = rng
        # Sum of the weights of planned and in-flight entries: what the budget is shared by.
        # An entry nobody waits on leaves it at its turn (or at once, when its last
        # listener goes), so an abandoned batch does not slow everyone else down.
        self.load = 0.0
        self.counted = 0
        self.in_flight = 0
        self._heap: list[tuple[float, int, Entry]] = []
        self._deadlines: list[tuple[float, int, Listener]] = []
        self._seq = itertools.count()
        self._driver: Listener | None = None
        self._idle: dict[Listener, None] = {}
        # The driver's sleeps run inside these scopes; cancelling one wakes it. A scope, not
        # an event and an alarm task: the sleep registers with the clock at once, which a
        # virtual clock needs to order it before the sleeps of requests in flight.
        self._nap: anyio.CancelScope | None = None
        self._nap_until = -math.inf  # when the driver's current sleep ends by itself
        self._landing: anyio.CancelScope | None = None
        self._tat = -math.inf  # when the launcher may next send, at the budget's pace

    # -- who listens to what -------------------------------------------------------------

    def entry(self, generation: AsyncGeneration) -> Entry:
        """The handle's entry, made on first use."""
        entry = generation._entry
        if entry is None:
            entry = generation._entry = Entry(generation)
            if generation._final is not None:  # known from elsewhere (a batch journal)
                entry.status = generation._final
                entry.version = 1
        return entry

    def watch(self, listener: Listener, entry: Entry, *, fresh: bool) -> None:
        """Start listening to `entry`.

        `fresh` asks for a status polled from now on (a new `progress()`), unless others
        already watch the entry, whose latest status is then news enough; otherwise the
        entry keeps its planned turn.
        """
        others = bool(entry.listeners)
        entry.listeners.append(listener)
        if fresh and not others and entry.error is not None:
            entry.error = None  # a new wait tries again after, say, a 404
        if entry.finished:
            self._tell(listener, entry)
            return
        if fresh and others and entry.status is not None and not listener.terminal_only:
            self._tell(listener, entry)
        elif not entry.in_flight:
            self._schedule(entry, self.clock.now() if fresh else entry.due)

    def unwatch(self, listener: Listener, entry: Entry) -> None:
        """Stop listening; with no listener left the entry leaves the plan at its turn."""
        try:
            entry.listeners.remove(listener)
        except ValueError:
            return
        listener.ready.pop(entry, None)
        if not entry.listeners and not entry.in_flight:
            self._uncount(entry)

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
        for entry in listener.parked:
            if entry.listeners and not entry.finished and not entry.in_flight:
                self._schedule(entry, entry.due)
        listener.parked.clear()
        try:
            while not (listener.ready or listener.woken or listener.timed_out):
                if self._driver is None:
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
            if self._driver is None:
                # Cancelled right after being handed the role: pass it on.
                self._hand_off()

    async def _drive(self, me: Listener) -> None:
        self._driver = me
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    now = self.clock.now()
                    self._expire(now)
                    if me.ready or me.woken or me.timed_out:
                        break
                    wait = self._launch(tg, now)
                    if self._deadlines:
                        wait = min(wait, self._deadlines[0][0] - now)
                    self._nap_until = now + wait
                    with anyio.CancelScope() as self._nap:
                        await _sleep(self.clock, wait)
                    self._nap = None
                if self.in_flight:
                    # Other waiters' polls: a moment to land, then they are cancelled (and
                    # rescheduled) rather than holding this caller for a request timeout.
                    with anyio.CancelScope() as self._landing:
                        await _sleep(self.clock, 0.0 if me.timed_out else GRACE)
                tg.cancel_scope.cancel()
        finally:
            self._driver = None
            self._nap = self._landing = None
            self._hand_off()

    def _hand_off(self) -> None:
        for listener in self._idle:
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

    # -- the plan ------------------------------------------------------------------------

    def _schedule(self, entry: Entry, due: float) -> None:
        if not entry.counted:
            entry.counted = True
            entry.weight = 1.0 / entry.generation._hint(entry.status)
            self.load += entry.weight
            self.counted += 1
        if entry.seq >= 0 and entry.due <= due:
            return  # already planned, no later than asked
        entry.due = due
        entry.seq = seq = next(self._seq)
        heapq.heappush(self._heap, (due, seq, entry))
        self._wake_driver(due)

    def _uncount(self, entry: Entry) -> None:
        if entry.counted:
            entry.counted = False
            self.counted -= 1
            # Back to exactly zero when nothing is planned, so float drift cannot build up.
            self.load = self.load - entry.weight if self.counted else 0.0

    def _launch(self, tg: TaskGroup, now: float) -> float:
        """Send every poll that is due and allowed; return the seconds until the next one."""
        heap = self._heap
        while heap:
            due, seq, entry = heap[0]
            if entry.seq != seq or not entry.listeners or entry.finished:
                heapq.heappop(heap)  # stale, unwatched or finished: off the plan
                if entry.seq == seq:
                    entry.seq = -1
                    self._uncount(entry)
                continue
            if not any(listener.waiting for listener in entry.listeners):
                heapq.heappop(heap)
                entry.seq = -1
                self._uncount(entry)
                for listener in entry.listeners:
                    listener.parked.append(entry)
                continue
            if due > now:
                return due - now
            if self.in_flight >= self.max_in_flight:
                return math.inf  # a landing poll wakes the driver
            wait = self._admission(now)
            if wait > 0:
                return wait
            heapq.heappop(heap)
            entry.seq = -1
            entry.in_flight = True
            self.in_flight += 1
            tg.start_soon(self._poll, entry)
        return math.inf

    def _admission(self, now: float) -> float:
        budget = self.budget
        if budget is not None:
            start = self._tat - BURST / budget
            if now < start:
                return start - now
        wait = self.pacer.try_admit()
        if wait > 0:
            return wait
        if budget is not None:
            self._tat = max(self._tat, now) + 1.0 / budget
        return 0.0

    async def _poll(self, entry: Entry) -> None:
        generation = entry.generation
        settled = False
        try:
            status = await generation._pipeline.once(generation._status, generation._parse_status)
        except Retryable as failed:
            settled = True
            if waits_too_long(failed.attempt.retry_after):
                # Not slept: every waiter gets the server's answer (and its advice) now.
                self._finish(entry, rate_limited(failed.error, failed.attempt))
                return
            delay = retry_delay(
                failed.attempt,
                is_generation=False,
                retries_done=entry.failures,
                max_retries=None,
                rng=self.rng,
                cap=POLL_BACKOFF_CAP,
            )
            entry.failures += 1
            entry.last_error = failed.error
            logger.debug("polling %s again in %.2f s after: %s", generation.id, delay or 0.0,
                         failed.error)  # fmt: skip
            entry.due = self.clock.now() + (delay or 0.0)
            if entry.listeners:
                self._schedule(entry, entry.due)
            else:
                self._uncount(entry)
            if isinstance(failed.error, RateLimitError):
                # The server asked for longer than some waiters have: tell them now.
                for listener in entry.listeners:
                    if listener.deadline is not None and listener.deadline <= entry.due:
                        listener.timed_out = True
                        self._notify(listener)
        except Exception as error:  # not retryable (401, 404, a malformed answer, ...)
            settled = True
            self._finish(entry, error)
        else:
            settled = True
            self._record(entry, status)
        finally:
            entry.in_flight = False
            if self.in_flight == self.max_in_flight:
                self._wake_driver()  # a launch may have been waiting for this slot
            self.in_flight -= 1
            if not settled:
                if entry.listeners:
                    self._schedule(entry, self.clock.now())  # cut short: poll again soon
                else:
                    self._uncount(entry)
            if self.in_flight == 0 and self._landing is not None:
                self._landing.cancel()

    def _record(self, entry: Entry, status: GenerationStatus) -> None:
        entry.failures = 0
        entry.last_error = None
        entry.status = status
        entry.version += 1
        if status.done:
            entry.generation._final = status
            self._finish(entry, None)
            return
        weight = 1.0 / entry.generation._hint(status)
        if entry.counted:
            self.load += weight - entry.weight
        entry.weight = weight
        interval = shared_poll_interval(1.0 / weight, load=self.load, budget=self.budget)
        interval *= self.rng.uniform(1.0, JITTER)
        entry.due = self.clock.now() + interval
        logger.debug("waiting %.2f s before polling %s again", interval, entry.generation.id)
        if entry.listeners:
            self._schedule(entry, entry.due)
        else:
            self._uncount(entry)
        for listener in entry.listeners:
            if not listener.terminal_only:
                self._tell(listener, entry)

    def _finish(self, entry: Entry, error: Exception | None) -> None:
        entry.error = error
        self._uncount(entry)
        for listener in entry.listeners:
            self._tell(listener, entry)

    def _tell(self, listener: Listener, entry: Entry) -> None:
        listener.ready[entry] = None
        self._notify(listener)


async def _sleep(clock: Clock, seconds: float) -> None:
    if seconds <= 0:
        await anyio.lowlevel.checkpoint()
    elif math.isinf(seconds):
        await anyio.sleep_forever()
    else:
        await clock.sleep(seconds)
