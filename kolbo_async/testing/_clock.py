"""Clocks for the simulator and for tests: one that jumps when all is still, one that runs fast."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from weakref import WeakKeyDictionary

import anyio
import anyio.lowlevel

__all__ = ["ScaledClock", "VirtualClock", "wait_all_tasks_blocked"]


class VirtualClock:
    """A clock that jumps instead of sleeping: half an hour of polling runs in milliseconds.

    Share one between a `Simulator` and the client under test (``AsyncKolbo(...,
    _clock=clock)`` or `Simulator.client`). Time moves only when every task of the event loop
    is blocked, as with trio's ``MockClock(autojump_threshold=0)``: then the earliest
    sleeper's deadline becomes the time and it wakes. So an in-process HTTP exchange always
    finishes before time jumps, however many steps it takes. Works on asyncio and trio.

    A task waiting on a real socket or a worker thread counts as blocked too: time may jump
    while a loopback answer is on its way. With `Simulator.serve` use a `ScaledClock` (the
    simulator's default).

    Example:
        >>> clock = VirtualClock()
        >>> clock.advance(90); clock.now()
        90.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()
        self._jumps = 0  # sleepers woken so far

    def now(self) -> float:
        """The current virtual time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` without waking anyone early."""
        self._now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of virtual time, waking in deadline order among sleepers.

        Only the earliest sleeper watches the loop; the others wait on an event until they are
        first. Once every other task is blocked, the earliest moves time to its deadline and
        hands over to the next; a deadline already reached (equal deadlines, `advance`) wakes
        at once. A cancelled sleeper leaves the queue and wakes the next.
        """
        deadline = self._now + max(0.0, seconds)
        entry = _Sleeper(deadline, next(self._seq))
        heapq.heappush(self._sleepers, entry)
        try:
            while True:
                if self._sleepers[0] is not entry:
                    # A fresh event each time: an earlier sleeper may have overtaken us since
                    # we were last woken.
                    entry.event = anyio.Event()
                    await entry.event.wait()
                elif deadline > self._now:
                    jumps = self._jumps
                    await wait_all_tasks_blocked()
                    # Still first, and no other sleeper woke meanwhile (trio wakes every
                    # waiter at once, and one woken sleeper's task runs again): all is still.
                    if self._sleepers[0] is entry and self._jumps == jumps:
                        break
                else:
                    await anyio.lowlevel.checkpoint()
                    break
            heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            self._jumps += 1
            self._wake_next()
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


async def wait_all_tasks_blocked() -> None:
    """Return once every other task of the running event loop is blocked.

    On trio this is trio's own (its scheduler knows). On asyncio, anyio's version sleeps a
    real 0.1 s each time it finds a task still running, which would make every jump of a
    `VirtualClock` cost wall time; this one yields to the loop instead, and lets one waiter
    watch at a time, as trio does (two waiters yielding would each keep the other busy).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        await anyio.wait_all_tasks_blocked()
        return
    turns = _TURNS.setdefault(loop, deque())
    turn: asyncio.Future[None] = loop.create_future()
    turns.append(turn)
    try:
        if turns[0] is not turn:
            await turn
        this = asyncio.current_task()
        while True:
            await asyncio.sleep(0)
            if _all_blocked(loop, this):
                return
    finally:
        first = turns[0] is turn
        turns.remove(turn)
        if first and turns and not turns[0].done():
            turns[0].set_result(None)


#: Per asyncio loop, the waiters of `wait_all_tasks_blocked`; the first one watches.
_TURNS: WeakKeyDictionary[asyncio.AbstractEventLoop, deque[asyncio.Future[None]]] = (
    WeakKeyDictionary()
)


def _all_blocked(loop: asyncio.AbstractEventLoop, this: asyncio.Task[object] | None) -> bool:
    # A callback due to run (a task's next step, an I/O event just polled) means someone is
    # about to move. Otherwise a task is blocked when it awaits a future still pending: a
    # task that only yielded, or whose future is done, waits in the ready queue. Both are
    # asyncio internals, read the way anyio reads `_fut_waiter`; without `_ready` (another
    # loop implementation), the tasks alone decide.
    if getattr(loop, "_ready", None):
        return False
    for task in asyncio.all_tasks(loop):
        if task is not this:
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is None or waiter.done():
                return False
    return True


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
