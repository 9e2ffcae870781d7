"""Clocks for the simulator and for tests: one that jumps, one that runs fast."""

from __future__ import annotations

import heapq
import itertools
import time

import anyio
import anyio.lowlevel

__all__ = ["ScaledClock", "VirtualClock"]


class VirtualClock:
    """A clock that jumps instead of sleeping: half an hour of polling runs in milliseconds.

    Share one between a `Simulator` and the client under test (``AsyncKolbo(...,
    _clock=clock)`` or `Simulator.client`). Sleepers wake in deadline order: the earliest
    sleeper first lets every other ready task run (in-process HTTP exchanges included), then
    moves time to its deadline. Works on asyncio and trio.

    Example:
        >>> clock = VirtualClock()
        >>> clock.advance(90); clock.now()
        90.0
    """

    #: How many times the earliest sleeper yields before jumping: enough for in-process
    #: request/response chains of other tasks to settle.
    YIELDS = 8

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """The current virtual time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` without waking anyone early."""
        self._now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of virtual time, waking in deadline order among sleepers.

        The earliest sleeper first yields to the loop `YIELDS` times, so that other ready
        tasks (in-process HTTP exchanges included) run before time jumps; the others wait on
        an event until they are first. A cancelled sleeper leaves the queue and wakes the next.
        """
        deadline = self._now + max(0.0, seconds)
        entry = _Sleeper(deadline, next(self._seq))
        heapq.heappush(self._sleepers, entry)
        try:
            while True:
                if self._sleepers[0] is entry:
                    for _ in range(self.YIELDS):
                        await anyio.lowlevel.checkpoint()
                    if self._sleepers[0] is entry:
                        heapq.heappop(self._sleepers)
                        self._now = max(self._now, deadline)
                        self._wake_next()
                        return
                else:
                    # A fresh event each time: an earlier sleeper may have overtaken us since
                    # we were last woken.
                    entry.event = anyio.Event()
                    await entry.event.wait()
        except BaseException:
            if entry in self._sleepers:
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)
                self._wake_next()
            raise

    def _wake_next(self) -> None:
        if self._sleepers:
            self._sleepers[0].event.set()


class _Sleeper:
    __slots__ = ("deadline", "event", "seq")

    def __init__(self, deadline: float, seq: int) -> None:
        self.deadline = deadline
        self.seq = seq
        self.event = anyio.Event()

    def __lt__(self, other: _Sleeper) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class ScaledClock:
    """Real time sped up: simulated seconds = real monotonic seconds x `speed`.

    Thread-safe: `now()` only reads `time.monotonic()` (not anyio's clock, which needs a
    running loop), so the loopback server's thread and the test's thread can both ask. Its
    `sleep` waits the real equivalent.

    Example:
        >>> clock = ScaledClock(speed=100)   # 90 simulated seconds pass in 0.9 real ones
    """

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, not {speed!r}")
        self.speed = float(speed)
        self._origin = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since the clock was made."""
        return (time.monotonic() - self._origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of simulated time."""
        await anyio.sleep(max(0.0, seconds) / self.speed)
