"""`Runner`: one blocking client's loop (`Portal`) and the `AsyncKolbo` living on it."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ._portal import Portal

__all__ = ["Runner"]


class Runner:
    """A `Portal` and the `AsyncKolbo` built on its loop, closed exactly once.

    The client, its namespaces, its `with_options` copies and every `Generation` hold the
    runner, so the loop lives exactly as long as something can still call into it:
    ``gen = Kolbo().videos.generate(...)`` keeps working after the client object is gone.
    """

    __slots__ = ("__weakref__", "call", "client", "close", "portal")

    def __init__(self, factory: Callable[[], Awaitable[Any]]) -> None:
        self.portal = portal = Portal()
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
