"""Pure decisions, tested as plain functions: retries, backoff, Retry-After, polling, pacing."""

from __future__ import annotations

import logging
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kolbo_async import RateLimits
from kolbo_async._pacing import GENERATE, REQUEST, Pacer, Window
from kolbo_async._retries import (
    Attempt,
    Failure,
    backoff,
    parse_retry_after,
    poll_delay,
    retry_delay,
)

from .conftest import StepClock

RNG = random.Random(0)


def delay(attempt: Attempt, *, generation: bool, done: int = 0, max_retries: int | None = 2):
    return retry_delay(
        attempt, is_generation=generation, retries_done=done, max_retries=max_retries, rng=RNG
    )


class TestRetryDelay:
    @pytest.mark.parametrize(
        "attempt",
        [
            Attempt(Failure.LOST),
            Attempt(Failure.STATUS, 500),
            Attempt(Failure.STATUS, 502),
            Attempt(Failure.STATUS, 503),
            Attempt(Failure.STATUS, 408),
            Attempt(Failure.STATUS, 400),
        ],
    )
    def test_generation_post_never_retried_after_it_may_have_landed(
        self, attempt: Attempt
    ) -> None:
        """A paid POST is not retried after a lost answer, a 5xx or a 408."""
        assert delay(attempt, generation=True) is None

    @pytest.mark.parametrize(
        "attempt", [Attempt(Failure.NOT_SENT), Attempt(Failure.STATUS, 429)]
    )
    def test_generation_post_retried_when_it_cannot_have_landed(self, attempt: Attempt) -> None:
        """A POST that never connected, or was 429'd, is safe to send again."""
        assert delay(attempt, generation=True) is not None

    @pytest.mark.parametrize("code", [408, 425, 429, 500, 501, 502, 503, 504, 522, 524])
    def test_gets_retry_transient_statuses(self, code: int) -> None:
        """GETs and cancel retry 408, 425, 429 and every 5xx."""
        assert delay(Attempt(Failure.STATUS, code), generation=False) is not None

    @pytest.mark.parametrize("code", [400, 401, 402, 403, 404, 409, 422])
    def test_gets_do_not_retry_client_errors(self, code: int) -> None:
        """A 4xx answer is final."""
        assert delay(Attempt(Failure.STATUS, code), generation=False) is None

    def test_lost_and_not_sent_gets_are_retried(self) -> None:
        """Timeouts and dropped connections are transient for a GET."""
        assert delay(Attempt(Failure.LOST), generation=False) is not None
        assert delay(Attempt(Failure.NOT_SENT), generation=False) is not None

    def test_max_retries(self) -> None:
        """After max_retries tries it gives up; None means no limit."""
        lost = Attempt(Failure.LOST)
        assert delay(lost, generation=False, done=2, max_retries=2) is None
        assert delay(lost, generation=False, done=1, max_retries=2) is not None
        assert delay(lost, generation=False, done=500, max_retries=None) is not None

    def test_retry_after_lengthens_the_wait(self) -> None:
        """The server's Retry-After wins over a shorter backoff."""
        got = delay(Attempt(Failure.STATUS, 429, retry_after=42), generation=True)
        assert got == 42


class _TopRandom(random.Random):
    """Jitter pinned to the top of its range, so a wait can be compared exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


class TestBackoff:
    @given(st.integers(min_value=0, max_value=10_000))
    @settings(max_examples=200, derandomize=True, deadline=None)
    def test_capped_and_jittered(self, n: int) -> None:
        """min(0.5 * 2**n, cap) scaled into [0.75, 1]."""
        base = min(0.5 * 2 ** min(n, 16), 8.0)
        got = backoff(n, rng=RNG)
        assert 0.75 * base <= got <= base

    @pytest.mark.parametrize(
        ("cap", "expected"),
        [(8.0, [0.5, 1, 2, 4, 8, 8]), (30.0, [0.5, 1, 2, 4, 8, 16, 30, 30])],
    )
    def test_doubles_up_to_the_cap(self, cap: float, expected: list[float]) -> None:
        """At the top of the jitter the waits are exactly 0.5, 1, 2, 4 ... then the cap:
        doubling, not faster, and the poller's 30 s cap really reached."""
        top = _TopRandom()
        assert [backoff(n, rng=top, cap=cap) for n in range(len(expected))] == expected
        attempt = Attempt(Failure.STATUS, 503)
        waits = [
            retry_delay(attempt, is_generation=False, retries_done=n, max_retries=None,
                        rng=top, cap=cap)
            for n in range(len(expected))
        ]  # fmt: skip
        assert waits == expected

    def test_jitter_spreads_a_fleet(self) -> None:
        """Two callers at the same retry count do not wait the same time."""
        assert len({backoff(3, rng=RNG) for _ in range(20)}) > 10


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("7", 7.0),
            ("0.25", 0.25),
            (" 3 ", 3.0),
            ("-4", 0.0),
            ("", None),
            (None, None),
            ("soon", None),
            ("inf", None),
            ("nan", None),
            ("Thu, 01 Jan 1970 00:00:30 GMT", 20.0),
            ("Thu, 01 Jan 1970 00:00:05 GMT", 0.0),
        ],
    )
    def test_forms(self, value: str | None, expected: float | None) -> None:
        """Seconds or an HTTP date; garbage is None; never negative."""
        assert parse_retry_after(value, now_epoch=10) == expected


class TestPollDelay:
    @pytest.mark.parametrize(
        ("hint", "expected"),
        [
            (8, 8.0),
            (3, 3.0),
            (120, 120.0),
            (0.01, 0.05),
            (0, 8.0),
            (-1, 8.0),
            (121, 8.0),
            (math.nan, 8.0),
            (math.inf, 8.0),
            (True, 8.0),
            ("5", 8.0),
            (None, 8.0),
        ],
    )
    def test_rule(self, hint: object, expected: float) -> None:
        """The hint when in (0, 120], else 8 s; never under 50 ms."""
        assert poll_delay(hint) == expected


class TestWindow:
    def test_a_handful_never_waits(self) -> None:
        """Below the limit nothing waits."""
        window = Window(10)
        for i in range(10):
            assert window.delay(float(i)) == 0
            window.record(float(i))

    def test_the_next_waits_for_the_oldest_to_leave(self) -> None:
        """The 11th call waits until the first is 60 s old."""
        window = Window(10)
        for i in range(10):
            window.record(float(i))
        assert window.delay(10.0) == pytest.approx(50.0)
        assert window.delay(60.0) == 0

    @given(st.lists(st.floats(min_value=0, max_value=600), min_size=1, max_size=80))
    @settings(max_examples=150, derandomize=True, deadline=None)
    def test_no_trailing_minute_holds_more_than_the_limit(self, arrivals: list[float]) -> None:
        """Whenever callers arrive, admitted events never exceed the limit in any 60 s."""
        window = Window(5)
        admitted: list[float] = []
        for arrival in sorted(arrivals):
            now = max(arrival, admitted[-1] if admitted else 0.0)
            now += window.delay(now)
            window.record(now)
            admitted.append(now)
        for start in admitted:
            inside = [t for t in admitted if start <= t < start + 60]
            assert len(inside) <= 5

    def test_not_a_token_bucket(self) -> None:
        """A burst of 2N never squeezes 2N into one minute (a token bucket would)."""
        window = Window(10)
        admitted: list[float] = []
        now = 0.0
        for _ in range(20):
            now += window.delay(now)
            window.record(now)
            admitted.append(now)
        assert admitted[10] - admitted[0] >= 60

    def test_cooldown(self) -> None:
        """A 429 holds the bucket for Retry-After, or until the oldest event leaves."""
        window = Window(10)
        window.cool_down(100.0, 30.0)
        assert window.delay(100.0) == 30
        other = Window(10)
        other.record(90.0)
        assert other.cool_down(100.0, None) == pytest.approx(50.0)
        assert Window(10).cool_down(0.0, None) == 1.0

    def test_cooldown_counts_from_the_oldest_event_still_in_the_window(self) -> None:
        """An event exactly a period old has left the window: a 429 without Retry-After on
        the request admitted at that instant holds until the next oldest leaves (not 1 s)."""
        window = Window(2, period=60.0)
        window.record(0.0)
        window.record(10.0)
        assert window.delay(60.0) == 0  # the first left at 60 s exactly
        window.record(60.0)
        assert window.cool_down(60.0, None) == pytest.approx(10.0)  # until 10 s leaves
        assert window.delay(60.0) == pytest.approx(10.0)

    def test_unlimited_window_only_honours_cooldowns(self) -> None:
        """With pacing off, only a 429 cooldown makes anyone wait."""
        window = Window(None)
        for i in range(1000):
            window.record(float(i) / 1000)
        assert window.delay(1.0) == 0
        window.cool_down(1.0, 5.0)
        assert window.delay(1.0) == 5


@pytest.mark.anyio
class TestPacer:
    async def test_generations_count_against_both_windows(self, clock: StepClock) -> None:
        """11 generation POSTs at 10/min take at least 60 s; requests are counted too."""
        pacer = Pacer(RateLimits(generations_per_minute=10, requests_per_minute=300), clock)
        start = clock.now()
        for _ in range(10):
            await pacer.admit(GENERATE)
        assert clock.now() == start
        assert len(pacer.windows[REQUEST]._events) == 10
        await pacer.admit(GENERATE)
        assert clock.now() - start >= 60

    async def test_status_polls_are_not_frozen_by_a_generation_cooldown(
        self, clock: StepClock
    ) -> None:
        """A 429 cooldown on POSTs leaves the request bucket free."""
        pacer = Pacer(RateLimits(), clock)
        pacer.cool_down(GENERATE, 120.0)
        start = clock.now()
        await pacer.admit(REQUEST)
        assert clock.now() == start
        await pacer.admit(GENERATE)
        assert clock.now() - start >= 120

    async def test_pacing_off_waits_only_for_cooldowns(self, clock: StepClock) -> None:
        """rate_limits=None never paces, but still waits out a 429 cooldown."""
        pacer = Pacer(None, clock)
        for _ in range(1000):
            await pacer.admit(GENERATE)
        assert clock.sleeps == []
        pacer.cool_down(REQUEST, 3.0)
        await pacer.admit(REQUEST)
        assert clock.sleeps == [3.0]

    async def test_delays_are_logged_at_debug(
        self, clock: StepClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every pacing wait is a DEBUG record on the kolbo_async logger."""
        caplog.set_level(logging.DEBUG, logger="kolbo_async")
        pacer = Pacer(RateLimits(generations_per_minute=1), clock)
        await pacer.admit(GENERATE)
        await pacer.admit(GENERATE)
        assert any("pacing: waiting" in r.getMessage() for r in caplog.records)
