"""Who runs the portal's loop right after it was handed to the daemon thread.

Timing-free: the daemon thread is kept from starting its turn by never notifying it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from kolbo_async._portal import Portal


@pytest.fixture
def portal() -> Iterator[Portal]:
    """A bare portal, shut down afterwards."""
    portal = Portal()
    yield portal
    portal.shutdown()


async def _thread_id() -> int:
    return threading.get_ident()


def test_a_caller_takes_back_a_loop_the_daemon_has_not_started(portal: Portal) -> None:
    # The loop was handed to the daemon thread (`_turn`) and the daemon has not woken yet:
    # a caller arriving now runs the loop itself instead of queueing behind the daemon.
    with portal._mutex:
        portal._busy = portal._turn = True  # handed over; the daemon is not notified
    # Without the take-back, the call below waits for a daemon nobody woke: this
    # timer wakes it after 5 s so that the failure is an assertion, not a hang.
    rescue = threading.Timer(5, _notify, args=(portal,))
    rescue.start()
    try:
        ran_in = portal.call(_thread_id)
    finally:
        rescue.cancel()
    assert ran_in == threading.get_ident()
    assert not portal._busy and not portal._turn  # free again for the next caller


def _notify(portal: Portal) -> None:
    with portal._mutex:
        portal._cond.notify_all()


def test_a_caller_inside_a_running_loop_never_takes_the_loop_back(portal: Portal) -> None:
    import asyncio

    async def from_a_loop() -> int:
        with portal._mutex:
            portal._busy = portal._turn = True
            portal._cond.notify_all()
        # A blocking call made right in a running loop (a notebook cell does this).
        return portal.call(_thread_id)

    # Queued for the daemon thread, which runs it: never the caller's own loop thread.
    assert asyncio.run(from_a_loop()) == portal._thread_id
