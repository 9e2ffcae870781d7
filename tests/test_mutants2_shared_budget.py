"""Promises of the shared rate budget that its mutation run found untested (issue 18).

`SharedBudget` is driven directly, on a `VirtualClock`, with in-process stores: a
non-blocking one that can be made unreachable, and a blocking one whose calls go to the
budget's worker thread (as SQLite's and Redis's do), held at a gate when a test needs a call
still on its way. Real time appears only as a patched ``time.monotonic`` (the age of the
poller's admission ticket) and in waiting for the worker thread's answer.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest

from kolbo_async import InvalidRequestError
from kolbo_async import _shared_budget as shared_budget
from kolbo_async._pacing import GENERATE, REQUEST
from kolbo_async._rate_store import Buckets, LocalStore, StoreUnavailable
from kolbo_async._shared_budget import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    TICKET_POLL,
    TICKET_TTL,
    SharedBudget,
    open_store,
)
from kolbo_async.testing import VirtualClock

NEEDS: dict[str, Buckets] = {
    GENERATE: ((GENERATE, 2), (REQUEST, 5)),
    REQUEST: ((REQUEST, 5),),
}
WINDOW = 61.0
START = 1000.0


class Flaky(LocalStore):
    """The in-process store, unreachable while `down`; `blocking` stores run in a thread."""

    name = "flaky://test"

    def __init__(self, clock: VirtualClock, *, blocking: bool = False) -> None:
        super().__init__(clock.now)
        self.blocking = blocking
        self.down = False
        self.calls: list[str] = []
        self.threads: list[str] = []
        self.budgets: list[str] = []
        self.returned = threading.Event()  # a cool_down call came back
        self.cooled: list[tuple[str, str, float, float | None]] = []
        self.gate = threading.Event()
        self.gate.set()

    def admit(self, budget: str, buckets: Buckets, window: float) -> float:
        self.threads.append(threading.current_thread().name)
        self.budgets.append(budget)
        assert self.gate.wait(10.0)
        self.calls.append("admit")
        if self.down:
            raise StoreUnavailable("ConnectionError: refused")
        return super().admit(budget, buckets, window)

    def cool_down(
        self, budget: str, bucket: str, window: float, retry_after: float | None
    ) -> float:
        self.threads.append(threading.current_thread().name)
        try:
            assert self.gate.wait(10.0)
        finally:
            self.returned.set()
        self.calls.append("cool_down")
        if self.down:
            raise StoreUnavailable("ConnectionError: refused")
        self.cooled.append((budget, bucket, window, retry_after))
        return super().cool_down(budget, bucket, window, retry_after)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=START)


@pytest.fixture
def low_jitter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """The jitter draws its lowest value; the bounds it was asked for are recorded."""
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return low

    monkeypatch.setattr(shared_budget, "random", SimpleNamespace(uniform=uniform))
    return asked


def budget_on(store: Flaky, clock: VirtualClock) -> SharedBudget:
    return SharedBudget(store, "budget", needs=NEEDS, window=WINDOW, clock=clock)


def answer_of(budget: SharedBudget) -> None:
    """Wait (in real time) for the worker thread's answer to the pending ticket."""
    ticket: Future[float] | None = budget._ticket
    assert ticket is not None
    ticket.exception(timeout=10.0)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- open_store ---------------------------------------------------------------------------------


class TestOpenStore:
    def test_a_sqlite_url_opens_the_file_it_names(self, tmp_path: Path) -> None:
        store = open_store(f"sqlite:///{tmp_path}/rates.db")
        try:
            assert type(store).__name__ == "SQLiteStore"
            assert store.name == f"sqlite:///{tmp_path}/rates.db"
            assert store.blocking
        finally:
            store.close()

    def test_a_relative_sqlite_path_is_in_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        store = open_store("sqlite:///rates.db")
        try:
            assert store.name == "sqlite:///rates.db"
        finally:
            store.close()

    def test_a_missing_directory_is_refused_naming_it(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/missing/rates.db"
        with pytest.raises(InvalidRequestError) as raised:
            open_store(url)
        assert raised.value.field == "store"
        folder = str(tmp_path / "missing")
        assert str(raised.value) == (
            f"store: {url!r}: {folder!r} is not a directory this process can write"
        )

    def test_a_file_in_place_of_the_directory_is_refused(self, tmp_path: Path) -> None:
        """Even a file this process could write and search (mode 755) is no directory."""
        not_a_folder = tmp_path / "file"
        not_a_folder.write_text("x")
        not_a_folder.chmod(0o755)
        with pytest.raises(InvalidRequestError) as raised:
            open_store(f"sqlite:///{not_a_folder}/rates.db")
        assert raised.value.field == "store"

    def test_a_directory_this_process_cannot_write_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The check asks for write and search access to the folder itself (this may run as
        root, for whom any folder is writable: `os.access` answers as for another user)."""
        asked: list[tuple[object, int]] = []

        def access(path: object, mode: int) -> bool:
            asked.append((path, mode))
            return False

        monkeypatch.setattr(os, "access", access)
        url = f"sqlite:///{tmp_path}/rates.db"
        with pytest.raises(InvalidRequestError) as raised:
            open_store(url)
        assert raised.value.field == "store"
        assert asked == [(str(tmp_path), os.W_OK | os.X_OK)]

    def test_a_redis_url_opens_a_redis_store(self) -> None:
        pytest.importorskip("redis")
        store = open_store("redis://user:pw@localhost:6379/0")
        try:
            assert type(store).__name__ == "RedisStore"
            assert store.name == "redis://***@localhost:6379/0"
        finally:
            store.close()

    def test_a_redis_url_without_the_driver_says_how_to_install_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "kolbo_async._rate_redis", None)
        with pytest.raises(InvalidRequestError) as raised:
            open_store("redis://localhost:6379/0")
        assert raised.value.field == "store"
        message = str(raised.value)
        assert message.startswith("store: a redis:// store needs the redis package (")
        assert "kolbo_async._rate_redis" in message  # the import error itself
        assert message.endswith("): pip install 'kolbo-async[redis]'")
        assert raised.value.__cause__ is None and raised.value.__suppress_context__


# -- admit: holds, backoff, warnings ------------------------------------------------------------


@pytest.mark.anyio
class TestAdmit:
    async def test_a_refusal_holds_the_bucket_and_the_buckets_that_need_it(
        self, clock: VirtualClock
    ) -> None:
        """A full request bucket holds requests and generations (a generation is also a
        request); a full generation bucket holds only generations."""
        store = Flaky(clock)
        budget = budget_on(store, clock)
        for _ in range(5):
            assert await budget.admit(REQUEST) == 0
        wait = await budget.admit(REQUEST)
        assert wait == pytest.approx(WINDOW)
        assert budget.held(REQUEST) == pytest.approx(WINDOW)
        assert budget.held(GENERATE) == pytest.approx(WINDOW)

        other = budget_on(Flaky(clock), clock)
        for _ in range(2):
            assert await other.admit(GENERATE) == 0
        assert await other.admit(GENERATE) == pytest.approx(WINDOW)
        assert other.held(GENERATE) == pytest.approx(WINDOW)
        assert other.held(REQUEST) == 0.0

    async def test_a_blocking_store_is_asked_from_a_worker_thread(
        self, clock: VirtualClock
    ) -> None:
        store = Flaky(clock, blocking=True)
        budget = budget_on(store, clock)
        for _ in range(2):
            assert await budget.admit(GENERATE) == 0
        assert await budget.admit(GENERATE) == pytest.approx(WINDOW)
        assert budget.held(GENERATE) == pytest.approx(WINDOW)
        assert threading.current_thread().name not in store.threads
        assert store.calls == ["admit"] * 3

    async def test_an_outage_backs_off_doubling_up_to_the_longest_pause(
        self, clock: VirtualClock, low_jitter: list[tuple[float, float]]
    ) -> None:
        """Each failed try waits twice as long as the last (from `BACKOFF_MIN`, at most
        `BACKOFF_MAX`), times a jitter between half and all of it; every bucket is held."""
        store = Flaky(clock)
        budget = budget_on(store, clock)
        store.down = True
        waits = []
        for _ in range(8):
            wait = await budget.admit(REQUEST)
            assert budget.held(GENERATE) == budget.held(REQUEST) == pytest.approx(wait)
            waits.append(wait)
            clock.advance(wait)
        full = [BACKOFF_MIN * 2**n for n in range(6)] + [BACKOFF_MAX, BACKOFF_MAX]
        assert waits == pytest.approx([pause * 0.5 for pause in full])
        assert low_jitter == [(0.5, 1.0)] * 8

    async def test_the_outage_warnings_name_the_store_the_error_and_the_time(
        self, clock: VirtualClock, caplog: pytest.LogCaptureFixture,
        low_jitter: list[tuple[float, float]],
    ) -> None:  # fmt: skip
        """One WARNING when the store goes down, one every `WARN_EVERY` (30 s: at exactly
        30 s, and again 30 s after that one) while it stays down, one when it is back
        (counting the failed tries of this outage only)."""
        caplog.set_level(logging.WARNING, logger="kolbo_async")
        store = Flaky(clock)
        budget = budget_on(store, clock)
        store.down = True
        await budget.admit(REQUEST)  # at 1000
        assert warnings_of(caplog) == [
            "rate store flaky://test unreachable (ConnectionError: refused): requests wait "
            "for it and retry it; the budget is shared, so the client does not fall back to "
            "a budget of its own"
        ]
        clock.advance(29.9)
        await budget.admit(REQUEST)
        assert len(warnings_of(caplog)) == 1
        clock.advance(0.1)  # exactly 30 s after the first warning
        await budget.admit(REQUEST)
        assert warnings_of(caplog)[1:] == [
            "rate store flaky://test still unreachable after 30 s "
            "(ConnectionError: refused): requests still wait"
        ]
        clock.advance(29.0)
        await budget.admit(REQUEST)
        assert len(warnings_of(caplog)) == 2
        clock.advance(1.0)
        await budget.admit(REQUEST)  # the 5th failed try, 60 s in
        assert warnings_of(caplog)[2] == (
            "rate store flaky://test still unreachable after 60 s "
            "(ConnectionError: refused): requests still wait"
        )
        store.down = False
        clock.advance(2.5)
        assert await budget.admit(REQUEST) == 0
        assert warnings_of(caplog)[3:] == [
            "rate store flaky://test reachable again after 62.5 s (5 failed tries): requests resume"
        ]
        assert await budget.admit(REQUEST) == 0
        assert len(warnings_of(caplog)) == 4  # said once

        # A second outage starts afresh: its own first warning, pause and count.
        store.down = True
        clock.advance(100.0)
        assert await budget.admit(REQUEST) == pytest.approx(BACKOFF_MIN * 0.5)
        assert "flaky://test unreachable" in warnings_of(caplog)[4]
        clock.advance(1.25)
        store.down = False
        assert await budget.admit(REQUEST) == 0
        assert warnings_of(caplog)[5] == (
            "rate store flaky://test reachable again after 1.2 s (1 failed tries): requests resume"
        )


# -- try_admit: the shared poller's way in ----------------------------------------------------


class TestTryAdmit:
    def test_a_non_blocking_store_answers_at_once(
        self, clock: VirtualClock, low_jitter: list[tuple[float, float]]
    ) -> None:
        store = Flaky(clock)
        budget = budget_on(store, clock)
        assert [budget.try_admit(REQUEST) for _ in range(5)] == [0.0] * 5
        assert budget.try_admit(REQUEST) == pytest.approx(WINDOW)
        assert budget.held(REQUEST) == pytest.approx(WINDOW)
        # Held: the next try is answered from the hold, without asking the store.
        asked = len(store.calls)
        clock.advance(1.0)
        assert budget.try_admit(REQUEST) == pytest.approx(WINDOW - 1.0)
        assert len(store.calls) == asked

    def test_an_unreachable_non_blocking_store_holds_every_bucket(
        self, clock: VirtualClock, low_jitter: list[tuple[float, float]]
    ) -> None:
        store = Flaky(clock)
        budget = budget_on(store, clock)
        store.down = True
        assert budget.try_admit(REQUEST) == pytest.approx(BACKOFF_MIN * 0.5)
        assert budget.held(GENERATE) == pytest.approx(BACKOFF_MIN * 0.5)

    def test_a_blocking_store_is_asked_once_per_ticket_off_the_poller(
        self, clock: VirtualClock
    ) -> None:
        """The first try asks the worker thread and says to check back after `TICKET_POLL`;
        tries while the answer is on its way ask nothing more; the answer, once there, is
        used (0: admitted), and the try after it asks again."""
        store = Flaky(clock, blocking=True)
        budget = budget_on(store, clock)
        store.gate.clear()
        assert budget.try_admit(REQUEST) == TICKET_POLL
        assert budget.try_admit(REQUEST) == TICKET_POLL
        assert budget.try_admit(REQUEST) == TICKET_POLL
        store.gate.set()
        answer_of(budget)
        assert store.calls == ["admit"]
        assert store.threads[0].startswith("kolbo-rate-store")
        assert threading.current_thread().name != store.threads[0]
        assert budget.try_admit(REQUEST) == 0.0
        assert budget.try_admit(REQUEST) == TICKET_POLL  # a new ticket
        answer_of(budget)
        assert store.calls == ["admit", "admit"]

    def test_a_refusal_is_counted_from_when_the_ticket_was_asked(self, clock: VirtualClock) -> None:
        """The store's wait runs from the moment the ticket was asked for, not from when the
        poller came back for it."""
        store = Flaky(clock, blocking=True)
        budget = budget_on(store, clock)
        for _ in range(5):
            store.admit("budget", NEEDS[REQUEST], WINDOW)  # the window is full
        store.calls.clear()
        assert budget.try_admit(REQUEST) == TICKET_POLL
        answer_of(budget)
        clock.advance(0.5)
        assert budget.try_admit(REQUEST) == pytest.approx(WINDOW - 0.5)
        assert budget.held(REQUEST) == pytest.approx(WINDOW - 0.5)
        assert budget.held(GENERATE) == pytest.approx(WINDOW - 0.5)

    def test_an_outage_answer_is_counted_from_when_the_ticket_was_asked(
        self, clock: VirtualClock, low_jitter: list[tuple[float, float]]
    ) -> None:
        store = Flaky(clock, blocking=True)
        budget = budget_on(store, clock)
        store.down = True
        assert budget.try_admit(REQUEST) == TICKET_POLL
        answer_of(budget)
        clock.advance(0.01)
        pause = BACKOFF_MIN * 0.5
        assert budget.try_admit(REQUEST) == pytest.approx(pause - 0.01)
        assert budget.held(GENERATE) == pytest.approx(pause - 0.01)
        # Held: answered from the hold, without a ticket.
        assert budget.try_admit(REQUEST) == pytest.approx(pause - 0.01)
        clock.advance(pause)
        assert budget.try_admit(REQUEST) == TICKET_POLL
        answer_of(budget)
        clock.advance(1.0)
        assert budget.try_admit(REQUEST) == TICKET_POLL  # pause long over: the floor

    def test_a_late_refusal_checks_back_after_the_shortest_poll(self, clock: VirtualClock) -> None:
        store = Flaky(clock, blocking=True)
        budget = budget_on(store, clock)
        for _ in range(5):
            store.admit("budget", NEEDS[REQUEST], WINDOW)
        clock.advance(WINDOW - 0.5)
        assert budget.try_admit(REQUEST) == TICKET_POLL
        answer_of(budget)
        clock.advance(1.0)  # the refusal's 0.5 s ran out before the poller came back
        assert budget.try_admit(REQUEST) == TICKET_POLL

    @pytest.mark.parametrize(("age", "used"), [(TICKET_TTL, True), (TICKET_TTL + 0.01, False)])
    def test_an_answer_older_than_its_ttl_is_dropped(
        self, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, age: float, used: bool
    ) -> None:
        """An admission not used within `TICKET_TTL` (real time) of asking is dropped and a
        new one asked for; at exactly `TICKET_TTL` it is still used."""
        now = [50.0]
        monkeypatch.setattr(shared_budget, "time", SimpleNamespace(monotonic=lambda: now[0]))
        store = Flaky(clock, blocking=True)
        budget = budget_on(store, clock)
        assert budget.try_admit(REQUEST) == TICKET_POLL
        answer_of(budget)
        now[0] += age
        if used:
            assert budget.try_admit(REQUEST) == 0.0
            assert store.calls == ["admit"]
            return
        assert budget.try_admit(REQUEST) == TICKET_POLL
        answer_of(budget)
        assert store.calls == ["admit", "admit"]
        # The new ticket's age counts from its own asking.
        now[0] += TICKET_TTL
        assert budget.try_admit(REQUEST) == 0.0
        assert store.calls == ["admit", "admit"]


# -- cool_down ------------------------------------------------------------------------------------


@pytest.mark.anyio
class TestCoolDown:
    async def test_a_429_reaches_a_blocking_store_before_the_next_admission(
        self, clock: VirtualClock
    ) -> None:
        """One worker thread: the store hears of the 429 before it is asked to admit the
        next request, which it then holds for the cooldown."""
        store = Flaky(clock, blocking=True)
        budget = budget_on(store, clock)
        store.gate.clear()
        budget.cool_down(REQUEST, 30.0)
        assert budget.try_admit(REQUEST) == TICKET_POLL
        store.gate.set()
        answer_of(budget)
        assert store.calls == ["cool_down", "admit"]
        assert store.cooled == [("budget", REQUEST, WINDOW, 30.0)]
        assert budget.try_admit(REQUEST) == pytest.approx(30.0)
        assert len(set(store.threads)) == 1

    async def test_a_429_reaches_a_non_blocking_store_at_once(self, clock: VirtualClock) -> None:
        store = Flaky(clock)
        budget = budget_on(store, clock)
        budget.cool_down(GENERATE, None)
        assert store.cooled == [("budget", GENERATE, WINDOW, None)]
        assert store.threads == [threading.current_thread().name]

    async def test_a_cooldown_the_store_missed_is_logged_at_debug(
        self, clock: VirtualClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="kolbo_async")
        store = Flaky(clock, blocking=True)
        budget = budget_on(store, clock)
        budget.cool_down(REQUEST, 5.0)  # shared
        pool = budget._pool
        assert pool is not None
        pool.submit(int).result(timeout=10.0)  # one worker: the cooldown went first
        store.down = True
        budget.cool_down(REQUEST, 5.0)  # missed
        pool.shutdown(wait=True)  # both done, their callbacks run
        debug = [r for r in caplog.records if r.name == "kolbo_async"]
        assert [(r.levelno, r.getMessage()) for r in debug] == [
            (logging.DEBUG,
             "rate store: a 429 cooldown could not be shared: ConnectionError: refused")
        ]  # fmt: skip


# -- second pass: what the rerun left ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("blocking", [False, True])
async def test_the_store_is_asked_about_the_budgets_own_name(
    clock: VirtualClock, blocking: bool
) -> None:
    store = Flaky(clock, blocking=blocking)
    budget = budget_on(store, clock)
    assert await budget.admit(REQUEST) == 0
    assert budget.try_admit(GENERATE) in (0.0, TICKET_POLL)
    if blocking:
        answer_of(budget)
    assert store.budgets == ["budget", "budget"]


@pytest.mark.anyio
async def test_a_refusal_shorter_than_a_second_still_holds(clock: VirtualClock) -> None:
    store = Flaky(clock)
    budget = budget_on(store, clock)
    for _ in range(5):
        assert await budget.admit(REQUEST) == 0
    clock.advance(WINDOW - 0.5)
    assert await budget.admit(REQUEST) == pytest.approx(0.5)
    assert budget.held(REQUEST) == pytest.approx(0.5)


def test_the_pollers_outage_warning_names_the_error(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kolbo_async")
    store = Flaky(clock)
    budget = budget_on(store, clock)
    store.down = True
    budget.try_admit(REQUEST)
    [warning] = warnings_of(caplog)
    assert warning.startswith("rate store flaky://test unreachable (ConnectionError: refused)")


def test_a_dropped_budget_does_not_wait_for_its_store_call(clock: VirtualClock) -> None:
    """Collecting a budget whose worker thread is still on a store call (a 429's cooldown
    to a hung store) leaves that call running rather than waiting for it."""
    import gc

    store = Flaky(clock, blocking=True)
    budget = budget_on(store, clock)
    store.gate.clear()
    budget.cool_down(REQUEST, 5.0)
    del budget
    gc.collect()
    still_running = not store.returned.is_set()
    store.gate.set()
    assert store.returned.wait(10.0)
    assert still_running
