"""The sliding window with plain numbers: no event loop, the clock is a float."""

from __future__ import annotations

from kolbo_async._window import Window


def test_a_429_cools_down_until_the_oldest_event_still_in_the_window_leaves() -> None:
    """An event that already left the window does not decide the cooldown: with events at
    0.5 s and 50 s, a 429 at 62 s holds until 110 s (48 s), not 1 s."""
    window = Window(10, 60.0)
    window.record(0.5)
    window.record(50.0)
    assert window.cool_down(62.0, None) == 48.0
    assert window.delay(62.0) == 48.0


def test_a_429_with_nothing_in_the_window_holds_a_second() -> None:
    window = Window(10, 60.0)
    window.record(0.0)
    assert window.cool_down(70.0, None) == 1.0


def test_retry_after_wins_and_a_shorter_cooldown_never_cuts_a_longer_one() -> None:
    window = Window(10, 60.0)
    assert window.cool_down(0.0, 30.0) == 30.0
    window.cool_down(1.0, 2.0)
    assert window.delay(5.0) == 25.0


def test_full_window_waits_for_its_oldest_event() -> None:
    window = Window(2, 60.0)
    window.record(0.0)
    window.record(10.0)
    assert window.delay(20.0) == 40.0
    assert window.delay(60.0) == 0.0  # an event exactly a window old has left
