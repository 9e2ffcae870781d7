"""Promises of the poll plan (`kolbo_async._poll_plan`) that its mutation run found
untested, with plain numbers: the status budget's load is exactly what is planned (back to
exactly zero with nothing planned, moved with a changed hint, kept while anyone watches); a
generation is never polled twice for one turn, nor polled once nobody watches it; a poll's
backoff grows to the poll cap, not the API call's; a too-long ``Retry-After`` ends the watch
with the server's advice.
"""

from __future__ import annotations

import math
import random

import httpx

from kolbo_async._exceptions import InternalServerError, RateLimitError
from kolbo_async._models import GenerationStatus
from kolbo_async._poll_plan import PollPlan, Track
from kolbo_async._retries import POLL_BACKOFF_CAP, Attempt, Failure


def status(state: str, hint: float | None = None) -> GenerationStatus:
    raw: dict[str, object] = {"generation_id": "g", "state": state, "progress": 0}
    if hint is not None:
        raw["poll_interval_hint"] = hint
    return GenerationStatus(generation_id="g", state=state, progress=0, raw=raw)


def new_plan(budget: float | None = 1.0) -> PollPlan:
    return PollPlan(budget=budget, max_in_flight=32, rng=random.Random(1))


def watched(p: PollPlan, generation_id: str, hint: float, watcher: object = None) -> Track:
    track = p.track(generation_id, fallback_hint=hint)
    p.join(track, watcher or object(), fresh=True, every=True, live=False, now=0.0)
    return track


def everyone(track: Track) -> bool:
    return True


def free() -> float:
    return 0.0


class TestLoad:
    def test_back_to_exactly_zero_with_nothing_planned(self) -> None:
        """Float drift cannot build up: the last drop leaves a load of exactly 0."""
        p = new_plan()
        a, b = watched(p, "a", 10.0), watched(p, "b", 5.0)
        assert (a.weight + b.weight) - a.weight - b.weight != 0.0  # the drift avoided
        p.drop(a)
        assert math.isclose(p.load, b.weight)
        p.drop(b)
        assert p.load == 0.0

    def test_a_dropped_track_counts_again_when_planned_again(self) -> None:
        p = new_plan()
        track = watched(p, "a", 4.0)
        p.drop(track)
        p.plan(track, 10.0)
        assert (p.load, p.counted) == (0.25, 1)

    def test_a_new_hint_moves_the_load(self) -> None:
        p = new_plan()
        track = watched(p, "a", 10.0)
        [launched], _, _ = p.due(0.0, wanted=everyone, admit=free)
        p.landed(launched)
        p.on_status(track, status("processing", hint=5.0), 0.0)
        assert p.load == 0.2

    def test_one_watcher_leaving_keeps_the_track_counted(self) -> None:
        p = new_plan()
        first, second = object(), object()
        track = watched(p, "a", 4.0, first)
        p.join(track, second, fresh=False, every=True, live=False, now=0.0)
        assert p.leave(track, first)
        assert (track.counted, p.load) == (True, 0.25)

    def test_a_status_for_a_track_nobody_watches_drops_it(self) -> None:
        p = new_plan()
        watcher = object()
        track = watched(p, "a", 4.0, watcher)
        [launched], _, _ = p.due(0.0, wanted=everyone, admit=free)
        p.leave(track, watcher)  # in flight: it stays counted until its answer
        p.landed(launched)
        p.on_status(track, status("processing"), 1.0)
        assert (track.counted, p.load) == (False, 0.0)


class TestTurns:
    def test_an_earlier_turn_replaces_the_later_one(self) -> None:
        """Planned at 10, then moved to 5: polled once, at 5; never again for the 10."""
        p = new_plan(budget=None)
        track = watched(p, "a", 8.0)
        [first], _, _ = p.due(0.0, wanted=everyone, admit=free)
        p.landed(first)
        p.plan(track, 10.0)
        p.plan(track, 5.0)
        launch, _, _ = p.due(5.0, wanted=everyone, admit=free)
        assert launch == [track]
        launch, _, wait = p.due(20.0, wanted=everyone, admit=free)
        assert launch == [] and wait == math.inf

    def test_a_track_nobody_watches_is_not_polled(self) -> None:
        p = new_plan(budget=None)
        watcher = object()
        track = watched(p, "a", 8.0, watcher)
        p.leave(track, watcher)
        launch, parked, _ = p.due(0.0, wanted=everyone, admit=free)
        assert (launch, parked) == ([], [])


class TestFailures:
    def test_backoff_grows_to_the_poll_cap(self) -> None:
        """Inside a wait a status poll backs off up to 30 s, not the 8 s of an API call."""
        p = new_plan(budget=None)
        track = watched(p, "a", 8.0)
        error = RateLimitError.__new__(RateLimitError)
        delays = [p.on_failure(track, Attempt(Failure.LOST), error, float(n)) for n in range(12)]
        assert 0.75 * POLL_BACKOFF_CAP <= max(delays) <= POLL_BACKOFF_CAP

    def test_a_retry_after_past_what_the_sdk_sleeps_ends_the_watch_with_it(self) -> None:
        """A 503 asking for a day: the watch ends at once with a `RateLimitError` carrying
        the server's advice, not a day's sleep."""
        p = new_plan(budget=None)
        track = watched(p, "a", 8.0)
        response = httpx.Response(503, request=httpx.Request("GET", "https://api.kolbo.ai"))
        error = InternalServerError(
            "503 Service Unavailable", response=response, body=None, code=None
        )
        attempt = Attempt(Failure.STATUS, 503, 86400.0)
        assert p.on_failure(track, attempt, error, 0.0) < 0
        assert isinstance(track.error, RateLimitError)
        assert track.error.retry_after == 86400.0

    def test_a_rate_limit_due_exactly_at_the_deadline_outlasts_it(self) -> None:
        track = Track("a", None)
        track.last_error = RateLimitError.__new__(RateLimitError)
        track.due = 60.0
        assert track.outlasts(60.0) and not track.outlasts(60.5)


class TestPlanning:
    def test_a_later_turn_never_moves_a_planned_one(self) -> None:
        """The first track ever planned too: asked again for the same or a later turn, the
        plan keeps its turn and says nothing moved; an earlier one moves it."""
        p = new_plan(budget=None)
        track = p.track("a", fallback_hint=8.0)
        assert p.plan(track, 10.0)
        assert not p.plan(track, 20.0) and not p.plan(track, 10.0)
        assert track.due == 10.0
        assert p.plan(track, 4.0) and track.due == 4.0

    def test_the_first_hint_known_is_kept(self) -> None:
        """A later asker's fallback hint fills a missing one, and never replaces one."""
        p = new_plan()
        track = p.track("a")
        assert p.track("a", fallback_hint=5.0).fallback_hint == 5.0
        assert p.track("a", fallback_hint=9.0).fallback_hint == 5.0
        assert track.interval() == 5.0

    def test_a_stale_turn_does_not_unplan_the_live_one(self) -> None:
        p = new_plan(budget=None)
        track = watched(p, "a", 8.0)
        [first], _, _ = p.due(0.0, wanted=everyone, admit=free)
        p.landed(first)
        p.plan(track, 10.0)
        p.plan(track, 5.0)  # the turn at 10 is now stale
        [polled], _, _ = p.due(5.0, wanted=everyone, admit=free)
        p.landed(polled)
        p.on_status(track, status("processing"), 5.0)  # next turn in 8-8.8 s
        assert p.due(10.0, wanted=everyone, admit=free)[0] == []
        assert p.due(20.0, wanted=everyone, admit=free)[0] == [track]

    def test_a_parked_track_is_polled_again_when_someone_waits(self) -> None:
        """Nobody waiting now: parked at its turn; a new wait plans it again, at once."""
        p = new_plan(budget=None)
        track = watched(p, "a", 8.0)
        _, parked, _ = p.due(0.0, wanted=lambda t: False, admit=free)
        assert parked == [track] and not track.counted
        p.join(track, object(), fresh=True, every=True, live=False, now=1.0)
        assert p.due(1.0, wanted=everyone, admit=free)[0] == [track]

    def test_an_unwatched_track_is_polled_again_when_someone_watches(self) -> None:
        p = new_plan(budget=None)
        watcher = object()
        track = watched(p, "a", 8.0, watcher)
        p.leave(track, watcher)
        assert p.due(0.0, wanted=everyone, admit=free)[0] == []
        p.join(track, object(), fresh=True, every=True, live=False, now=1.0)
        assert p.due(1.0, wanted=everyone, admit=free)[0] == [track]

    def test_parking_one_track_does_not_hold_back_the_others(self) -> None:
        p = new_plan(budget=None)
        a, b = watched(p, "a", 8.0), watched(p, "b", 8.0)
        launch, parked, _ = p.due(0.0, wanted=lambda t: t is b, admit=free)
        assert (launch, parked) == ([b], [a])


def test_the_version_grows_by_one_with_each_status_learnt() -> None:
    """A reader tells news by the version: asking for a track again is no news; a status
    known from elsewhere (a journal) is one."""
    p = new_plan()
    track = p.track("a")
    assert p.track("a") is track and track.version == 0 and track.status is None
    assert p.track("a", known=status("completed")).version == 1
    assert p.track("a", known=status("failed")).status == status("completed")
    assert track.version == 1 and track.finished


def test_an_unwatched_turn_does_not_hold_back_one_due_now() -> None:
    p = new_plan(budget=None)
    gone = object()
    a = watched(p, "a", 8.0, gone)
    b = watched(p, "b", 8.0)
    p.leave(a, gone)
    assert p.due(0.0, wanted=everyone, admit=free)[0] == [b]


def test_a_landed_poll_frees_its_place_on_the_wire() -> None:
    """With one poll allowed on the wire, each landing lets the next go."""
    p = PollPlan(budget=None, max_in_flight=1, rng=random.Random(1))
    a, b, c = (watched(p, name, 8.0) for name in "abc")
    for expected in (a, b, c):
        launch, _, _ = p.due(0.0, wanted=everyone, admit=free)
        assert launch == [expected]
        assert p.due(0.0, wanted=everyone, admit=free)[2] == math.inf  # held for the landing
        p.landed(expected)
    assert p.in_flight == 0
