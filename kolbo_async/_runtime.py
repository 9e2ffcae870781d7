"""Which event loop and which process the caller is in.

A client's connection pool, locks and pacing belong to the event loop (and the process) that
first used it. Used from another one, the first request would go out on a pool whose sockets
belong to a dead loop or to the parent process: a paid POST sent, then a confusing error. The
pipeline asks here before sending anything, and refuses instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["current_loop", "forks", "running_asyncio"]

# A one-item list rather than a global statement: the fork hook bumps it in the child.
_forks = [0]


def _after_fork_in_child() -> None:
    _forks[0] += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def forks() -> int:
    """How many `fork()`s separate this process from the one that imported the SDK.

    A counter rather than `os.getpid()`: it costs no system call on every request.
    """
    return _forks[0]


def current_loop() -> object | None:
    """The running asyncio loop or trio run token in this thread, or None outside any.

    Neither library is imported here: a program that never loaded one cannot be running it.
    """
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        loop: object | None = asyncio.events._get_running_loop()
        if loop is not None:
            return loop
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            token: object = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return None
        return token
    return None


def running_asyncio() -> Any | None:
    """The `asyncio` module when an asyncio loop runs in this thread, else None."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio.events._get_running_loop() is not None:
        return asyncio
    return None
