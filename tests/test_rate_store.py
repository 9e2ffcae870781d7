"""A rate budget behind the store interface, in one process, on a virtual clock.

The pacer's shared path (`Pacer(..., store=...)`) is judged here through the in-process
store, which keeps the same windows: admission into every bucket a request needs or none,
the minute's second of slack, a 429 cooldown that holds every pacer on the store, an
unreachable store waited out with a WARNING (never a private budget), and the poller's
non-blocking way in. `RateLimits(store=...)` is checked before anything is sent, and
``import kolbo_async`` loads no driver. Real servers and processes: test_rate_store_servers.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import anyio
import pytest

from kolbo_async import InvalidRequestError, RateLimits
from kolbo_async._pacing import GENERATE, REQUEST, Pacer
from kolbo_async._rate_store import (
    LocalStore,
    StoreUnavailable,
    budget_name,
    redact_store,
)
from kolbo_async._shared_budget import TICKET_POLL
from kolbo_async.testing import Simulator, VirtualClock

from .conftest import StepClock

KEY = "kolbo_live_" + "c3" * 20
SHARED = RateLimits(generations_per_minute=2, requests_per_minute=5, store="sqlite:///unused")


def pacer_on(store: LocalStore, clock: StepClock, limits: RateLimits = SHARED) -> Pacer:
    return Pacer(limits, clock, api_key=KEY, store=store)


class Flaky(LocalStore):
    """The in-process store, unreachable while `down` (counts what reached it)."""

    blocking = False
    name = "flaky://test"

    def __init__(self, clock: StepClock) -> None:
        super().__init__(clock.now)
        self.down = False
        self.calls = 0
        self.admitted = 0

    def admit(self, budget: str, buckets: object, window: float) -> float:  # type: ignore[override]
        self.calls += 1
        if self.down:
            raise StoreUnavailable("ConnectionError: refused")
        wait = super().admit(budget, buckets, window)  # type: ignore[arg-type]
        self.admitted += wait <= 0
        return wait


class TestRateLimitsStore:
    def test_the_default_keeps_the_budget_in_the_process(self) -> None:
        assert RateLimits().store is None
        assert "store=None" in repr(RateLimits())

    @pytest.mark.parametrize(
        "url", ["sqlite:///rates.db", "sqlite:////var/tmp/r.db", "redis://localhost:6379/0",
                "redis://10.0.0.5", "rediss://:pw@redis.internal:6380/2"]
    )
    def test_store_urls_accepted(self, url: str) -> None:
        assert RateLimits(store=url).store == url

    @pytest.mark.parametrize(
        "url",
        ["postgresql://db/x", "sqlite://rates.db", "sqlite:///", "redis://", "redis://h:port/0",
         "redis://h:6379/zero", "memcached://h", "", "redis://h:6379/0?x=1", 42],
    )  # fmt: skip
    def test_a_bad_store_is_refused_naming_store(self, url: object) -> None:
        with pytest.raises(InvalidRequestError) as raised:
            RateLimits(store=url)  # type: ignore[arg-type]
        assert raised.value.field == "store"

    def test_refused_before_anything_is_sent(self) -> None:
        sim = Simulator(clock=VirtualClock())
        with pytest.raises(InvalidRequestError):
            sim.client(KEY, rate_limits=RateLimits(store="ftp://x"))
        assert sim.requests == []

    def test_a_password_in_the_url_is_never_shown(self) -> None:
        limits = RateLimits(store="redis://user:s3cret@redis.internal:6379/0")
        assert "s3cret" not in repr(limits)
        assert "redis://***@redis.internal:6379/0" in repr(limits)
        with pytest.raises(InvalidRequestError) as raised:
            RateLimits(store="redis://user:s3cret@host:notaport/0")
        assert "s3cret" not in str(raised.value)
        assert redact_store("sqlite:///a@b.db") == "sqlite:///a@b.db"

    def test_import_loads_no_driver(self) -> None:
        """``import kolbo_async`` imports neither redis nor sqlite3 (only a store does)."""
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import kolbo_async"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        loaded = [line for line in out.stderr.splitlines() if "redis" in line or "sqlite" in line]
        assert loaded == []

    def test_the_budget_is_named_by_a_hash_of_the_key(self) -> None:
        name = budget_name(KEY)
        assert KEY not in name and KEY[11:] not in name
        assert name == budget_name(KEY) != budget_name(KEY + "x")
        assert len(name) == 32


@pytest.mark.anyio
class TestSharedAdmission:
    async def test_the_window_keeps_its_second_of_slack(self, clock: StepClock) -> None:
        """Two generations a minute through a store: the third waits 61 s from the first."""
        pacer = pacer_on(LocalStore(clock.now), clock)
        start = clock.now()
        for _ in range(3):
            await pacer.admit(GENERATE)
        assert clock.now() - start == pytest.approx(61.0)

    async def test_pacers_on_one_store_share_the_budget(self, clock: StepClock) -> None:
        """Two clients of one key on one store: two generations a minute between them."""
        store = LocalStore(clock.now)
        first, second = pacer_on(store, clock), pacer_on(store, clock)
        start = clock.now()
        await first.admit(GENERATE)
        await second.admit(GENERATE)
        await first.admit(GENERATE)
        assert clock.now() - start == pytest.approx(61.0)

    async def test_another_key_has_a_budget_of_its_own(self, clock: StepClock) -> None:
        store = LocalStore(clock.now)
        mine = pacer_on(store, clock)
        theirs = Pacer(SHARED, clock, api_key=KEY + "0", store=store)
        for _ in range(2):
            await mine.admit(GENERATE)
            await theirs.admit(GENERATE)
        assert clock.sleeps == []

    async def test_a_generation_counts_in_both_buckets_or_neither(self, clock: StepClock) -> None:
        """A full request bucket holds a generation without spending a generation slot."""
        store = LocalStore(clock.now)
        pacer = pacer_on(store, clock, RateLimits(2, 3, store="sqlite:///x"))
        await pacer.admit(GENERATE)  # 1 generation, 1 request
        await pacer.admit(REQUEST)
        await pacer.admit(REQUEST)  # the request bucket is full (3)
        budget = budget_name(KEY)
        assert store.admit(budget, [(GENERATE, 2), (REQUEST, 3)], 61.0) > 0
        # Refused as a whole, so not counted in the generation bucket: one slot is still free.
        assert store.admit(budget, [(GENERATE, 2)], 61.0) == 0
        assert store.admit(budget, [(GENERATE, 2)], 61.0) > 0
        assert clock.sleeps == []

    async def test_a_429_cooldown_holds_every_pacer_on_the_store(self, clock: StepClock) -> None:
        store = LocalStore(clock.now)
        first, second = pacer_on(store, clock), pacer_on(store, clock)
        first.cool_down(REQUEST, 30.0)
        start = clock.now()
        await second.admit(REQUEST)
        assert clock.now() - start == pytest.approx(30.0)

    async def test_the_429_holds_its_own_process_without_the_store(self, clock: StepClock) -> None:
        """The pacer that saw the 429 holds at once, even if the store never heard of it."""
        store = Flaky(clock)
        pacer = pacer_on(store, clock)
        store.down = True
        pacer.cool_down(GENERATE, 12.0)
        store.down = False
        start = clock.now()
        await pacer.admit(GENERATE)
        assert clock.now() - start == pytest.approx(12.0)
        assert pacer.delay(REQUEST) == 0

    async def test_an_unreachable_store_is_waited_out_with_a_warning(
        self, clock: StepClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Nothing is admitted while the store is down (no private budget); the pacer retries
        with growing pauses, warns once, and says when the store is back."""
        store = Flaky(clock)
        pacer = pacer_on(store, clock)
        store.down = True

        async def recover() -> None:
            await clock.sleep(10.0)
            store.down = False

        caplog.set_level(logging.DEBUG, logger="kolbo_async")
        async with anyio.create_task_group() as tg:
            tg.start_soon(recover)
            await pacer.admit(GENERATE)
        assert clock.now() - 1000.0 >= 10.0
        assert clock.now() - 1000.0 < 13.0  # resumed within the longest pause (2 s)
        assert store.admitted == 1
        pauses = [s for s in clock.sleeps if s < 10.0]
        assert 8 < len(pauses) < 60  # backed off, not a spin
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2, warnings
        assert "flaky://test unreachable" in warnings[0]
        assert "does not fall back" in warnings[0]
        assert "reachable again" in warnings[1]
        assert KEY not in caplog.text

    async def test_the_warning_repeats_while_the_store_stays_down(
        self, clock: StepClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = Flaky(clock)
        pacer = pacer_on(store, clock)
        store.down = True

        async def stop_at_65_s(scope: anyio.CancelScope) -> None:
            await clock.sleep(65.0)
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_at_65_s, tg.cancel_scope)
            await pacer.admit(REQUEST)
        still = [r for r in caplog.records if "still unreachable" in r.getMessage()]
        assert len(still) == 2  # after 30 s and after 60 s
        assert store.admitted == 0


class TestPollerAdmission:
    """`try_admit` never waits on the store: the poller checks back for the answer."""

    def test_a_poll_is_counted_in_the_shared_budget(self, clock: StepClock) -> None:
        store = LocalStore(clock.now)
        pacer, other = pacer_on(store, clock), pacer_on(store, clock)
        assert [pacer.try_admit() for _ in range(5)] == [0.0] * 5
        assert other.try_admit() == pytest.approx(61.0)
        assert other.delay(REQUEST) == pytest.approx(61.0)  # what the store last said

    def test_an_unreachable_store_holds_polls(
        self, clock: StepClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = Flaky(clock)
        pacer = pacer_on(store, clock)
        store.down = True
        wait = pacer.try_admit()
        assert wait >= TICKET_POLL
        assert store.admitted == 0
        assert "unreachable" in caplog.text
        store.down = False
        clock.time += wait
        assert pacer.try_admit() == 0.0
        assert "reachable again" in caplog.text
