"""The one seam between the SDK and time.

Everything that waits (pacing, backoff, polling, deadlines) asks a `Clock`, so tests can swap
in `kolbo_async.testing.VirtualClock` and run half an hour of polling in milliseconds.
"""

from __future__ import annotations

from typing import Protocol

import anyio


class Clock(Protocol):
    """Monotonic time in seconds and a way to wait on it."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time, through anyio so asyncio and trio both work."""

    __slots__ = ()

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
