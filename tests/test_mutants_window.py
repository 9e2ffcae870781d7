"""Promises of the sliding window that its mutation run found untested (issue 18)."""

from __future__ import annotations

from kolbo_async._window import Window


def test_an_event_exactly_a_window_old_does_not_decide_a_429_cooldown() -> None:
    """The event at 0 s has left a 60 s window at 60 s: the cooldown waits for the next one
    (at 30 s, so until 90 s), not the one-second floor that the departed event would give."""
    window = Window(10, 60.0)
    window.record(0.0)
    window.record(30.0)
    assert window.cool_down(60.0, None) == 30.0
    assert window.delay(60.0) == 30.0


def test_the_cooldown_floor_after_a_429_is_exactly_one_second() -> None:
    """The oldest event leaves in half a second: the cooldown is one second, no more."""
    window = Window(10, 60.0)
    window.record(0.0)
    assert window.cool_down(59.5, None) == 1.0
    assert window.delay(59.5) == 1.0
