"""Client-side pacing: sliding windows per bucket, and a cooldown after a 429.

A sliding window, not a token bucket: a token bucket of N per minute starts full and refills
while it drains, so it lets nearly 2N requests into one minute, and Kolbo counts in fixed
one-minute windows. With a sliding window no trailing 60 s ever holds more than N, so any
fixed window the server uses holds no more than N either.

`Window` is pure (it takes `now`); `Pacer` is the only part that waits. With
``RateLimits(store=...)`` the windows live in a store shared between processes
(`_rate_store`): the pacer then asks the store, and keeps only a 429's cooldown locally, so
that the process that saw it holds at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from ._clock import Clock
from ._config import RateLimits
from ._rate_store import RateStore, budget_name
from ._window import PERIOD, Window

if TYPE_CHECKING:
    from ._hooks import Hook
    from ._shared_budget import SharedBudget

__all__ = ["GENERATE", "REQUEST", "Pacer", "Window"]

logger = logging.getLogger("kolbo_async")

#: Added to each window the client keeps: a request that left at t reaches Kolbo a little
#: later, so a window counted to the exact second would let a burst straddle one of Kolbo's
#: fixed windows when latency varies. A second costs under 2 % of the throughput.
SLACK = 1.0
GENERATE = "generate"
REQUEST = "request"


class Pacer:
    """Admits requests into the client's windows, waiting (on the client's clock) when full.

    Waiters queue on a lock per bucket, so a batch is let through in order and spread out
    rather than stampeding when a slot frees.
    """

    def __init__(
        self,
        limits: RateLimits | None,
        clock: Clock,
        api_key: str | None = None,
        *,
        store: RateStore | None = None,
        budget: str | None = None,
        window: float = PERIOD + SLACK,
        hooks: tuple[Hook, ...] = (),
    ) -> None:
        """`api_key` names the budget in a shared store (only its hash is kept, see
        `budget_name`; `budget` gives the name directly). `store` overrides
        ``limits.store``; `window` is the windows' length (tests shorten it); `hooks` are
        told of each wait and cooldown (`_hooks.PacingWait`, `_hooks.CooldownStarted`)."""
        self._clock = clock
        self.hooks = hooks
        # With pacing off the windows have no limit but still carry 429 cooldowns, so a
        # storm is waited out together rather than by each request on its own.
        self.paced = limits is not None
        self.shared: SharedBudget | None = None
        if limits is not None and (store is not None or limits.store is not None):
            if budget is None:
                if api_key is None:
                    raise ValueError("a shared rate budget is named after the API key")
                budget = budget_name(api_key)
            gen, req = limits.generations_per_minute, limits.requests_per_minute
            # Imported here: a shared budget is rare, and `import kolbo_async` is timed.
            from ._shared_budget import SharedBudget, open_store

            self.shared = SharedBudget(
                store if store is not None else open_store(str(limits.store)),
                budget,
                needs={GENERATE: ((GENERATE, gen), (REQUEST, req)), REQUEST: ((REQUEST, req),)},
                window=window,
                clock=clock,
            )
            limits = None  # the store counts; the local windows only carry cooldowns
        self.windows = {
            GENERATE: Window(limits.generations_per_minute if limits else None, window),
            REQUEST: Window(limits.requests_per_minute if limits else None, window),
        }
        self._locks = {
            GENERATE: anyio.Lock(fast_acquire=True),
            REQUEST: anyio.Lock(fast_acquire=True),
        }

    def delay(self, bucket: str) -> float:
        """Seconds a request of `bucket` would wait right now (for deadline checks)."""
        now = self._clock.now()
        wait = self.windows[REQUEST].delay(now)
        if bucket == GENERATE:
            wait = max(wait, self.windows[GENERATE].delay(now))
        if self.shared is not None:
            wait = max(wait, self.shared.held(bucket))
        return wait

    async def admit(self, bucket: str) -> None:
        """Wait until a request of `bucket` fits every window it counts against, and count it."""
        if not self.paced:
            # Hot path with pacing off: no lock, no bookkeeping, only a pending cooldown.
            wait = self.delay(bucket)
            if wait > 0:
                logger.debug("pacing: waiting %.2f s for a 429 cooldown", wait)
                self._waits(bucket, wait)
                await self._clock.sleep(wait)
            return
        if self.shared is not None:
            await self._admit_shared(self.shared, bucket)
        elif bucket == GENERATE:
            async with self._locks[GENERATE]:
                await self._wait_for(self.windows[GENERATE], GENERATE)
                # Holding the generation lock keeps that window from filling meanwhile.
                await self._admit_request()
                self.windows[GENERATE].record(self._clock.now())
        else:
            await self._admit_request()

    def try_admit(self) -> float:
        """Count a status poll now if it fits without waiting and return 0; else the wait.

        For the shared poller, which decides itself when to send and must not park a task
        per poll in the window's queue.
        """
        wait = self.delay(REQUEST)
        if wait > 0 or not self.paced:
            return wait
        if self._locks[REQUEST].locked():  # others are already queued for the window
            return 0.01
        if self.shared is not None:
            # Never a store round trip on the loop: the store is asked from a thread and
            # the poller checks back for the answer a moment later.
            return self.shared.try_admit(REQUEST)
        self.windows[REQUEST].record(self._clock.now())
        return 0.0

    async def _admit_shared(self, shared: SharedBudget, bucket: str) -> None:
        """Ask the store until it admits: one atomic call counts every bucket or none."""
        async with self._locks[bucket]:
            while True:
                wait = self.delay(bucket)  # a local 429 cooldown, or the store's last answer
                if wait <= 0:
                    wait = await shared.admit(bucket)
                    if wait <= 0:
                        return
                logger.debug("pacing: waiting %.2f s for the shared %s budget", wait, bucket)
                self._waits(bucket, wait)
                await self._clock.sleep(wait)

    async def _admit_request(self) -> None:
        async with self._locks[REQUEST]:
            await self._wait_for(self.windows[REQUEST], REQUEST)
            self.windows[REQUEST].record(self._clock.now())

    async def _wait_for(self, window: Window, name: str) -> None:
        while True:
            wait = window.delay(self._clock.now())
            if wait <= 0:
                return
            logger.debug("pacing: waiting %.2f s for the %s window", wait, name)
            self._waits(name, wait)
            await self._clock.sleep(wait)

    def cool_down(self, bucket: str, retry_after: float | None) -> float:
        """Start `bucket`'s cooldown after a 429; every request of that bucket waits it out."""
        seconds = self.windows[bucket].cool_down(self._clock.now(), retry_after)
        if self.shared is not None:
            self.shared.cool_down(bucket, retry_after)
        logger.debug("pacing: %s bucket cooling down for %.2f s after a 429", bucket, seconds)
        if self.hooks:
            from ._hooks import CooldownStarted, emit

            emit(self.hooks, CooldownStarted(bucket, None, seconds))
        return seconds

    def _waits(self, bucket: str, seconds: float) -> None:
        if self.hooks:
            from ._hooks import PacingWait, emit

            emit(self.hooks, PacingWait(bucket, seconds))
