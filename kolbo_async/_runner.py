"""`Runner`: one blocking client's loop (`Portal`) and the `AsyncKolbo` living on it."""

from __future__ import annotations

import selectors
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._portal import Portal

if TYPE_CHECKING:
    import asyncio

__all__ = ["Runner"]

#: Seconds a busy loop may go without asking the OS which sockets are ready.
POLL_EVERY = 0.0005
_clock = time.monotonic


class Runner:
    """A `Portal` and the `AsyncKolbo` built on its loop, closed exactly once.

    The client, its namespaces, its `with_options` copies and every `Generation` hold the
    runner, so the loop lives exactly as long as something can still call into it:
    ``gen = Kolbo().videos.generate(...)`` keeps working after the client object is gone.
    """

    __slots__ = ("__weakref__", "call", "client", "close", "portal")

    def __init__(self, factory: Callable[[], Awaitable[Any]]) -> None:
        self.portal = portal = Portal(_new_loop)
        self.call = portal.call
        try:
            # Built on the loop it will run on, so its locks and pool belong to that loop.
            self.client = portal.call(factory)
        except BaseException:
            portal.shutdown()
            raise
        # Runs once: on close(), when the last holder is collected, or at interpreter exit.
        # Its arguments must not include `self`, or the runner would never be collected.
        self.close = weakref.finalize(self, portal.shutdown, self.client.aclose)

    @property
    def closed(self) -> bool:
        """Whether the client was closed (new calls raise `KolboError`)."""
        return self.portal.stopped.is_set()


def _new_loop() -> asyncio.AbstractEventLoop:
    import asyncio

    return asyncio.SelectorEventLoop(_Selector())


class _Selector(selectors.DefaultSelector):
    """The loop's selector, polling the OS at most every `POLL_EVERY` s while work is ready.

    The loop asks for a zero-timeout poll on every iteration that has callbacks ready: for a
    blocking call, each call's first step. The system call itself is cheap, but it drops the
    GIL, and with threads waiting for it that hands the interpreter to another thread in the
    middle of a call. Ready callbacks run regardless; only I/O readiness is noticed up to
    `POLL_EVERY` later, and only while the loop is busy (an idle loop blocks in a real poll).
    """

    _polled = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        now = _clock()
        if timeout is not None and timeout <= 0 and now - self._polled < POLL_EVERY:
            return []
        self._polled = now
        result: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
        return result
