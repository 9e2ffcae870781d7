"""The pacer's side of a rate store shared between processes.

`SharedBudget` runs a store's calls off the event loop (``anyio.to_thread``, so asyncio and
trio alike), waits out an unreachable store with backoff and a WARNING on the
``kolbo_async`` logger (it never falls back to a private budget: N processes on private
budgets would run at N times the limit), and gives the shared poller a non-blocking way in.
`open_store` imports the SQLite or Redis driver only when a client is built with such a store.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio.to_thread

from ._exceptions import InvalidRequestError
from ._rate_store import Buckets, RateStore, StoreUnavailable

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from ._clock import Clock

__all__ = ["SharedBudget", "open_store"]

logger = logging.getLogger("kolbo_async")

#: First and longest pause between attempts at an unreachable store (seconds).
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
#: While the store stays unreachable, the WARNING is repeated this often (seconds).
WARN_EVERY = 30.0
#: The shared poller checks back this often while its admission is on its way (seconds).
TICKET_POLL = 0.002
#: An admission the poller did not use within this long of asking is dropped (its slot stays
#: counted: the store timed it when it was granted, and the send must follow within the
#: window's one second of slack). Three quarters of the slack: a loaded machine's worker
#: thread may answer late, and each dropped answer spends a slot of the budget.
TICKET_TTL = 0.75



def open_store(url: str) -> RateStore:
    """The store `url` names (checked by `check_store`); its driver is imported here."""
    if url.startswith("sqlite:///"):
        from ._rate_sqlite import SQLiteStore

        path = url[len("sqlite:///") :]
        # A file that can never be opened is a mistake to say now, not an outage to wait out.
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise InvalidRequestError(
                "store", f"{url!r}: {folder!r} is not a directory this process can write"
            )
        return SQLiteStore(path)
    try:
        from ._rate_redis import RedisStore
    except ImportError as exc:
        raise InvalidRequestError(
            "store",
            f"a redis:// store needs the redis package ({exc}): "
            "pip install 'kolbo-async[redis]'",
        ) from None
    return RedisStore(url)


class SharedBudget:
    """The pacer's side of a store: one budget (`budget`) with one limit per bucket."""

    def __init__(
        self,
        store: RateStore,
        budget: str,
        *,
        needs: dict[str, Buckets],
        window: float,
        clock: Clock,
    ) -> None:
        self.store = store
        self.budget = budget
        self.window = window
        self._needs = needs  # bucket of a request -> every (bucket, limit) it counts against
        self._clock = clock
        self._hold: dict[str, float] = dict.fromkeys(needs, -math.inf)
        self._down_since: float | None = None
        self._warned_at = -math.inf
        self._backoff = 0.0
        self._failures = 0
        self._ticket: Future[float] | None = None
        self._asked_at = 0.0  # time.monotonic() when the ticket was asked for
        self._asked_on_clock = 0.0  # the same moment on the client's clock
        self._pool: ThreadPoolExecutor | None = None
        weakref.finalize(self, store.close)

    def held(self, bucket: str) -> float:
        """Seconds a request of `bucket` is known to have to wait (from the last answers)."""
        now = self._clock.now()
        return max(0.0, *(self._hold[name] - now for name, _ in self._needs[bucket]))

    async def admit(self, bucket: str) -> float:
        """One try: 0 when admitted (counted in every bucket it needs); else seconds to wait
        before the next try (the store's answer, or a backoff while it is unreachable)."""
        asked = self._clock.now()
        store = self.store
        try:
            if store.blocking:
                wait = await anyio.to_thread.run_sync(
                    store.admit, self.budget, self._needs[bucket], self.window
                )
            else:
                wait = store.admit(self.budget, self._needs[bucket], self.window)
        except StoreUnavailable as exc:
            wait = self._unavailable(exc)
            for name in self._hold:
                self._hold[name] = asked + wait
            return wait
        self._available()
        if wait > 0:
            self._hold[bucket] = asked + wait
        return wait

    def try_admit(self, bucket: str) -> float:
        """`admit` for the shared poller, which must not wait on the store: 0 when a request
        may go now (counted); else the seconds to check back after.

        The store is asked from a worker thread; the poller comes back after `TICKET_POLL`
        for the answer. An answer older than `TICKET_TTL` is dropped rather than used late.
        """
        now = self._clock.now()
        wait = self.held(bucket)
        if wait > 0:
            return wait
        store = self.store
        if not store.blocking:
            return self._settle(bucket, lambda: store.admit(self.budget, self._needs[bucket],
                                                            self.window), now)  # fmt: skip
        ticket = self._ticket
        if ticket is not None and not ticket.done():
            return TICKET_POLL
        # The ticket's age is real time: the store timed the admission by its own clock.
        if ticket is None or time.monotonic() - self._asked_at > TICKET_TTL:
            self._ticket = self._executor().submit(
                store.admit, self.budget, self._needs[bucket], self.window
            )
            self._asked_at = time.monotonic()
            self._asked_on_clock = now
            return TICKET_POLL
        self._ticket = None
        return self._settle(bucket, ticket.result, self._asked_on_clock)

    def _settle(self, bucket: str, answer: Callable[[], float], asked: float) -> float:
        try:
            wait = answer()
        except StoreUnavailable as exc:
            wait = self._unavailable(exc)
            for name in self._hold:
                self._hold[name] = asked + wait
            return max(wait - (self._clock.now() - asked), TICKET_POLL)
        self._available()
        if wait > 0:
            self._hold[bucket] = asked + wait
            return max(wait - (self._clock.now() - asked), TICKET_POLL)
        return 0.0

    def cool_down(self, bucket: str, retry_after: float | None) -> None:
        """Tell the store about a 429 (without waiting: the caller's own cooldown is local)."""
        store = self.store
        if not store.blocking:
            store.cool_down(self.budget, bucket, self.window, retry_after)
            return
        pushed = self._executor().submit(
            store.cool_down, self.budget, bucket, self.window, retry_after
        )
        pushed.add_done_callback(_log_cooldown_failure)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="kolbo-rate-store")
            weakref.finalize(self, self._pool.shutdown, wait=False)
        return self._pool

    def _unavailable(self, exc: StoreUnavailable) -> float:
        """Note a failed call; the seconds to wait before the next one (with jitter)."""
        now = self._clock.now()
        self._failures += 1
        if self._down_since is None:
            self._down_since = now
            self._backoff = BACKOFF_MIN
            self._warned_at = now
            logger.warning(
                "rate store %s unreachable (%s): requests wait for it and retry it; the "
                "budget is shared, so the client does not fall back to a budget of its own",
                self.store.name,
                exc,
            )
        else:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            if now - self._warned_at >= WARN_EVERY:
                self._warned_at = now
                logger.warning(
                    "rate store %s still unreachable after %.0f s (%s): requests still wait",
                    self.store.name,
                    now - self._down_since,
                    exc,
                )
        return self._backoff * random.uniform(0.5, 1.0)

    def _available(self) -> None:
        if self._down_since is not None:
            logger.warning(
                "rate store %s reachable again after %.1f s (%d failed tries): requests resume",
                self.store.name,
                self._clock.now() - self._down_since,
                self._failures,
            )
            self._down_since = None
            self._failures = 0


def _log_cooldown_failure(future: Future[float]) -> None:
    exc = future.exception()
    if exc is not None:
        # The 429 still holds this process (its cooldown is local too); the others learn
        # of it from their own 429s.
        logger.debug("rate store: a 429 cooldown could not be shared: %s", exc)
