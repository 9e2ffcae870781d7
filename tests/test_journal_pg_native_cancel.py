"""The PostgreSQL journal (`PostgresJournal`) under asyncio's own cancellation and a close
from another thread, against a REAL PostgreSQL server (``$KOLBO_TEST_POSTGRES_URL``, or a
cluster of our own: see tests/test_journal_pg.py).

asyncio's own cancellation (`Task.cancel`, `wait_for`, the runner after a second Ctrl-C) gets
through anyio's hold on `anyio.to_thread.run_sync`: the caller leaves while its psycopg work
runs on in the thread, and the journal's `CapacityLimiter(1)` is free at once. The next call,
or the close, must still wait for that work (one connection, one transaction at a time), and
a close that comes while work runs (`close_now` from the thread that drops a batch) is done
when that work ends, without holding its caller for good. Each test reads what PostgreSQL
holds at the end (rows, connections), not what the journal says.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kolbo_async import _journal_pg
from kolbo_async._journal_keys import ItemKey, item_keys
from kolbo_async._journal_path import SharedSpec
from kolbo_async._journal_pg import PostgresJournal

from .test_journal_pg import batch_name, rows
from .test_journal_pg import own_database as own_database  # noqa: PLC0414
from .test_journal_pg import postgres_url as postgres_url  # noqa: PLC0414

pytestmark = pytest.mark.anyio

PATH = "/v1/video/generate"
ITEMS: list[tuple[str, dict[str, Any]]] = [(PATH, {"prompt": f"p {i}"}) for i in range(2)]
KEYS = item_keys(list(ITEMS))
ANSWER = {"generation_id": "gen_1", "credits_charged": 5}


class Held:
    """A journal whose next update of item `key` waits in its worker thread, inside its
    transaction, until `release` is set (`inside` once it waits); `idle` waits until no
    call of the journal runs on any thread."""

    def __init__(self, journal: PostgresJournal, key: ItemKey) -> None:
        self.journal = journal
        self.inside, self.release = threading.Event(), threading.Event()
        self._running = 0
        self._quiet = threading.Condition()
        update, call = journal._update, journal._call_sync

        def held(conn: Any, statement: str, item: ItemKey, values: dict[str, Any]) -> bool:
            if item == key and not self.inside.is_set():
                self.inside.set()
                assert self.release.wait(10)
            return update(conn, statement, item, values)

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._quiet:
                self._running += 1
            try:
                return call(*args, **kwargs)
            finally:
                with self._quiet:
                    self._running -= 1
                    self._quiet.notify_all()

        journal._update = held  # type: ignore[method-assign,assignment]
        journal._call_sync = counted  # type: ignore[method-assign]

    async def idle(self) -> None:
        def wait() -> bool:
            with self._quiet:
                return self._quiet.wait_for(lambda: self._running == 0, 10)

        assert await anyio.to_thread.run_sync(wait)


async def opened(url: str, claims: int) -> tuple[PostgresJournal, SharedSpec]:
    spec = SharedSpec(url, batch_name(), 30.0)
    journal = PostgresJournal(spec, KEYS, ITEMS)
    await journal.open()
    for key in KEYS[:claims]:
        assert await journal.claim() == key
    return journal, spec


async def cancelled_natively(held: Held, write: Callable[[], Any]) -> None:
    """`write()` started as an asyncio task, held in its thread, then `Task.cancel()`ed: the
    task is gone while its thread still runs (what anyio cannot hold back)."""
    task = asyncio.ensure_future(write())
    assert await anyio.to_thread.run_sync(held.inside.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not held.release.is_set()  # still running


def connections(url: str) -> int:
    """Connections PostgreSQL holds to the test's own database (but this one), once those
    closed have left (a backend ends a moment after its client said goodbye)."""
    import psycopg

    give_up = time.monotonic() + 5
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            [[count]] = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            if count == 0 or time.monotonic() > give_up:
                return int(count)
            time.sleep(0.02)


class Watched:
    """The journal's lock, which says when a thread finds it taken and waits."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.lock.acquire(False):
            return True
        self.contended.set()
        return bool(blocking and self.lock.acquire(True, timeout))

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Waits:
    """The journal's condition that its work ended, which says when a thread waits on it."""

    def __init__(self, condition: threading.Condition, waiting: threading.Event) -> None:
        self.condition = condition
        self.waiting = waiting

    def __enter__(self) -> bool:
        return self.condition.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.condition.__exit__(*exc)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        self.waiting.set()
        return self.condition.wait_for(predicate, timeout)

    def notify_all(self) -> None:
        self.condition.notify_all()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_call_after_a_native_cancel_waits_for_the_work_still_running(
    own_database: str,
) -> None:
    """A write cancelled natively runs on in its thread, in its transaction: the next write
    waits for it. On the same connection from another thread it ran as a savepoint inside
    the first one's transaction, and was said done while PostgreSQL did not hold it (gone
    for good had the first rolled back or the process died)."""
    journal, spec = await opened(own_database, claims=2)
    held = Held(journal, KEYS[0])
    lock = Watched(getattr(journal, "_one_at_a_time", threading.RLock()))
    journal._one_at_a_time = lock  # type: ignore[assignment]
    try:
        await cancelled_natively(held, lambda: journal.submitted(KEYS[0], "gen_1", ANSWER))
        seen: list[list[tuple[Any, ...]]] = []

        async def second() -> None:
            await journal.submitted(KEYS[1], "gen_2", {"generation_id": "gen_2"})
            seen.append(rows(own_database, spec.batch_id))  # what PostgreSQL holds now
            lock.contended.set()

        task = asyncio.ensure_future(second())
        # Either it waits for the first write (the lock), or it ran beside it.
        assert await anyio.to_thread.run_sync(lock.contended.wait, 10)
        held.release.set()
        await task
        await held.idle()
        [then] = seen
        assert [row[1:3] for row in then] == [("submitted", "gen_1"), ("submitted", "gen_2")]
        assert [row[1:3] for row in rows(own_database, spec.batch_id)] == [
            ("submitted", "gen_1"),
            ("submitted", "gen_2"),
        ]
    finally:
        held.release.set()
        await journal.close()
    assert connections(own_database) == 0


def released_and_closed(url: str, spec: SharedSpec) -> None:
    """The held write landed, then the close let go of every item and of its connection."""
    assert [row[1:3] for row in rows(url, spec.batch_id)] == [("submitted", "gen_1"),
                                                              ("new", None)]  # fmt: skip
    assert [row[4:6] for row in rows(url, spec.batch_id)] == [(None, None), (None, None)]
    assert connections(url) == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_close_after_a_native_cancel_waits_for_the_work_still_running(
    own_database: str,
) -> None:
    """Closed while a natively cancelled write runs: the write lands, then the items are let
    go of and the connection closed. Closing it under the write rolled back the release with
    the write's transaction, and the write, retried on a new connection, left that one open."""
    journal, spec = await opened(own_database, claims=1)
    held = Held(journal, KEYS[0])
    await cancelled_natively(held, lambda: journal.submitted(KEYS[0], "gen_1", ANSWER))
    real_close_now = journal.close_now
    called = threading.Event()

    def close_now() -> None:
        real_close_now()
        called.set()

    journal.close_now = close_now  # type: ignore[method-assign]
    idle = Waits(getattr(journal, "_idle", threading.Condition()), called)
    journal._idle = idle  # type: ignore[assignment]
    closing = asyncio.ensure_future(journal.close())
    # Either it waits for the write (for `CLOSE_WAIT` at most), or it closed under it.
    assert await anyio.to_thread.run_sync(called.wait, 10)
    held.release.set()
    await closing
    await held.idle()
    released_and_closed(own_database, spec)


async def test_a_batch_dropped_while_a_write_runs_closes_the_journal_after_it(
    own_database: str,
) -> None:
    """`close_now` (the batch dropped: garbage, a Ctrl-C) while a write runs on a worker
    thread returns at once; that write lands, then lets go of the items and the connection."""
    journal, spec = await opened(own_database, claims=1)
    held = Held(journal, KEYS[0])
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(journal.submitted, KEYS[0], "gen_1", ANSWER)
        assert await anyio.to_thread.run_sync(held.inside.wait, 10)
        journal.close_now()  # from the event loop's thread, as `__del__` may
        held.release.set()
    await held.idle()
    released_and_closed(own_database, spec)
    journal.close_now()  # idempotent
    await journal.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_close_waits_for_left_work_a_bounded_time_only(
    own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close does not wait for good for work left running by a native cancel (a query
    stuck on a lock): after `CLOSE_WAIT` it returns, and that work closes the journal when it
    ends."""
    monkeypatch.setattr(_journal_pg, "CLOSE_WAIT", 0.05, raising=False)
    journal, spec = await opened(own_database, claims=1)
    held = Held(journal, KEYS[0])
    await cancelled_natively(held, lambda: journal.submitted(KEYS[0], "gen_1", ANSWER))
    try:
        with anyio.fail_after(5):
            await journal.close()
        assert not held.release.is_set()
    finally:
        held.release.set()
    await held.idle()
    released_and_closed(own_database, spec)
