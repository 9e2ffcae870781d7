"""The poll plan with plain numbers: no event loop, no clock but a float."""

from __future__ import annotations

import math
import random

import httpx
import pytest

from kolbo_async._exceptions import InternalServerError, RateLimitError
from kolbo_async._models import GenerationStatus
from kolbo_async._poll_plan import BURST, JITTER, PollPlan, Track
from kolbo_async._retries import Attempt, Failure


def status(state: str, hint: float | None = None) -> GenerationStatus:
    raw: dict[str, object] = {"generation_id": "g", "state": state, "progress": 0}
    if hint is not None:
        raw["poll_interval_hint"] = hint
    return GenerationStatus(generation_id="g", state=state, progress=0, raw=raw)


def plan(budget: float | None = None, max_in_flight: int = 32) -> PollPlan:
    return PollPlan(budget=budget, max_in_flight=max_in_flight, rng=random.Random(1))


def everyone(track: Track) -> bool:
    return True


def free() -> float:
    return 0.0


def watched(p: PollPlan, generation_id: str, *, now: float = 0.0, hint: float = 5.0) -> Track:
    track = p.track(generation_id, fallback_hint=hint)
    p.join(track, object(), fresh=True, every=True, live=False, now=now)
    return track


class TestTracks:
    def test_one_track_per_id_while_held(self) -> None:
        p = plan()
        first = p.track("a", fallback_hint=3)
        assert p.track("a") is first
        assert p.track("b") is not first

    def test_a_track_nobody_holds_is_forgotten(self) -> None:
        p = plan()
        p.track("a", known=status("completed"))
        assert p.track("a").status is None  # the first one was collected with its last holder

    def test_a_known_terminal_status_needs_no_poll(self) -> None:
        p = plan()
        track = p.track("a", known=status("completed"))
        assert p.join(track, object(), fresh=True, every=True, live=False, now=0.0)  # tell at once
        assert p.due(0.0, wanted=everyone, admit=free) == ([], [], math.inf)

    def test_interval_prefers_the_status_hint_then_the_submission(self) -> None:
        track = Track("a", fallback_hint=4)
        assert track.interval() == 4
        track.status = status("processing", hint=9)
        assert track.interval() == 9


class TestDue:
    def test_a_fresh_watch_is_polled_now_then_at_its_hint(self) -> None:
        p = plan()
        track = watched(p, "a", hint=5)
        launch, parked, wait = p.due(0.0, wanted=everyone, admit=free)
        assert launch == [track] and parked == [] and wait == math.inf
        assert track.in_flight and p.in_flight == 1
        p.on_status(track, status("processing"), now=0.2)
        p.landed(track)
        assert 0.2 + 5 <= track.due <= 0.2 + 5 * JITTER
        assert p.due(1.0, wanted=everyone, admit=free)[2] == pytest.approx(track.due - 1.0)

    def test_nobody_waiting_parks_the_track_at_its_turn(self) -> None:
        p = plan()
        track = watched(p, "a")
        launch, parked, _ = p.due(0.0, wanted=lambda t: False, admit=free)
        assert launch == [] and parked == [track]
        assert p.counted == 0 and p.load == 0.0  # costs nothing until someone waits

    def test_the_last_watcher_leaving_takes_the_track_off_the_load(self) -> None:
        p = plan()
        track = p.track("a", fallback_hint=2)
        me = object()
        p.join(track, me, fresh=True, every=True, live=False, now=0.0)
        assert p.load == pytest.approx(0.5)
        assert p.leave(track, me)
        assert p.load == 0.0 and not p.leave(track, me)

    def test_in_flight_cap(self) -> None:
        p = plan(max_in_flight=2)
        for name in "abc":
            watched(p, name)
        launch, _, wait = p.due(0.0, wanted=everyone, admit=free)
        assert len(launch) == 2 and wait == math.inf  # a landing poll wakes the driver

    def test_the_rate_window_holds_a_launch(self) -> None:
        p = plan()
        watched(p, "a")
        assert p.due(0.0, wanted=everyone, admit=lambda: 0.7) == ([], [], 0.7)

    def test_launches_are_spaced_at_the_budget_after_a_burst(self) -> None:
        p = plan(budget=2.0)  # two polls a second
        for index in range(BURST + 3):
            watched(p, f"g{index}")
        launch, _, wait = p.due(0.0, wanted=everyone, admit=free)
        assert len(launch) == BURST + 1  # the burst, and the one the pace allows now
        assert wait == pytest.approx(0.5)

    def test_over_budget_every_interval_stretches_alike(self) -> None:
        p = plan(budget=1.0)
        tracks = [watched(p, f"g{index}", hint=1.0) for index in range(4)]  # 4 polls/s asked
        for track in tracks:
            p.on_status(track, status("processing"), now=0.0)
        for track in tracks:
            assert 4.0 <= track.due <= 4.0 * JITTER  # stretched 4x: the load fits the budget


class TestFailures:
    def test_transient_failures_back_off_and_keep_the_error_for_timeouts(self) -> None:
        p = plan()
        track = watched(p, "a")
        error = InternalServerError("boom", response=_response(503), body=None, code=None)
        first = p.on_failure(track, Attempt(Failure.STATUS, 503), error, now=0.0)
        second = p.on_failure(track, Attempt(Failure.STATUS, 503), error, now=0.0)
        assert 0 < first <= second and track.failures == 2 and track.last_error is error
        p.on_status(track, status("processing"), now=1.0)
        assert track.failures == 0 and track.last_error is None

    def test_a_retry_after_longer_than_the_sdk_sleeps_ends_the_watch(self) -> None:
        p = plan()
        track = watched(p, "a")
        error = RateLimitError("slow down", response=_response(429), body=None, code=None)
        assert p.on_failure(track, Attempt(Failure.STATUS, 429, 3600.0), error, now=0.0) < 0
        assert isinstance(track.error, RateLimitError) and track.finished

    def test_a_429_outlasting_a_deadline_is_told_to_that_waiter(self) -> None:
        p = plan()
        track = watched(p, "a")
        error = RateLimitError("slow down", response=_response(429), body=None, code=None, retry_after=30)
        p.on_failure(track, Attempt(Failure.STATUS, 429, 30.0), error, now=0.0)
        assert track.outlasts(10.0) and not track.outlasts(100.0) and not track.outlasts(None)

    def test_a_fresh_wait_clears_an_old_error(self) -> None:
        p = plan()
        track = p.track("a")
        p.on_error(track, KeyError("404"))
        assert p.join(track, object(), fresh=False, every=True, live=False, now=0.0)  # told: it ended
        other = p.track("b")
        p.on_error(other, KeyError("404"))
        assert not p.join(other, object(), fresh=True, every=True, live=False, now=0.0)
        assert other.error is None and other.seq >= 0  # tried again

    def test_a_fresh_wait_polls_unless_another_waiter_keeps_the_status_fresh(self) -> None:
        """A new progress() on an id someone else is waiting on right now gets its latest
        status at once; on an id nobody waits on (a batch left with `break`), a poll now."""
        p = plan()
        track = watched(p, "a")
        p.due(0.0, wanted=everyone, admit=free)
        p.on_status(track, status("processing"), now=0.0)
        p.landed(track)
        assert p.join(track, object(), fresh=True, every=True, live=True, now=1.0)
        assert not p.join(track, object(), fresh=True, every=True, live=False, now=1.0)
        assert track.due == 1.0  # polled now, not at its planned turn

    def test_a_fresh_wait_clears_an_error_others_still_hold(self) -> None:
        """After a 404 every waiter is told; a retry polls again even while the others are
        still registered."""
        p = plan()
        track = watched(p, "a")
        p.on_error(track, KeyError("404"))
        assert not p.join(track, object(), fresh=True, every=True, live=True, now=2.0)
        assert track.error is None
        assert p.due(2.0, wanted=everyone, admit=free)[0] == [track]

    def test_a_cancelled_poll_is_planned_again_now(self) -> None:
        p = plan()
        track = watched(p, "a")
        p.due(0.0, wanted=everyone, admit=free)
        p.cut_short(track, now=3.0)
        assert p.landed(track) is False
        assert p.due(3.0, wanted=everyone, admit=free)[0] == [track]


def _response(code: int) -> httpx.Response:
    return httpx.Response(code, request=httpx.Request("GET", "https://api.kolbo.ai/x"))
