"""The portal's cheap loop entry: who runs the loop when it was just handed over, and the
selector that skips the OS poll while callbacks are ready.

Timing-free: the daemon thread is kept from starting its turn by never notifying it, and the
selector's clock is replaced.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from kolbo_async import _runner
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


@pytest.fixture
def ready_pair() -> Iterator[tuple[_runner._Selector, socket.socket]]:
    """A selector watching one end of a socket pair whose other end has written a byte."""
    import selectors

    left, right = socket.socketpair()
    selector = _runner._Selector()
    selector.register(left, selectors.EVENT_READ)
    right.send(b"x")
    yield selector, left
    selector.close()
    left.close()
    right.close()


def test_zero_timeout_polls_are_skipped_for_a_moment_after_a_poll(
    ready_pair: tuple[_runner._Selector, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    selector, sock = ready_pair
    now = [100.0]
    monkeypatch.setattr(_runner, "_clock", lambda: now[0])
    assert [key.fileobj for key, _ in selector.select(0)] == [sock]  # first poll: real
    now[0] += _runner.POLL_EVERY / 2
    assert selector.select(0) == []  # callbacks are ready: no system call this time
    now[0] += _runner.POLL_EVERY
    assert [key.fileobj for key, _ in selector.select(0)] == [sock]  # due again: real


def test_a_poll_that_may_block_is_always_made(
    ready_pair: tuple[_runner._Selector, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    selector, sock = ready_pair
    monkeypatch.setattr(_runner, "_clock", lambda: 100.0)  # time stands still
    assert [key.fileobj for key, _ in selector.select(0)] == [sock]
    # An idle loop (nothing ready) sleeps in the OS, and sees the socket at once.
    assert [key.fileobj for key, _ in selector.select(0.001)] == [sock]
    assert [key.fileobj for key, _ in selector.select(None)] == [sock]
