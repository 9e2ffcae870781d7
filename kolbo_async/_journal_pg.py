"""A batch journal in PostgreSQL, shared by the workers of one batch (`PostgresJournal`).

Every worker passes the same requests and ``batch_id``; the first registers the batch and its
items. A worker claims one item at a time (``FOR UPDATE SKIP LOCKED``; the claim is the item's
intent, committed before its POST), records the generation id the moment Kolbo answers and
the final status when it arrives, as the SQLite journal does. Each row it holds carries a
lease on the database's clock, renewed by a thread of the worker's own for as long as the
process lives; once it runs out, another worker takes the row over (`Sweep`) and does what a
rerun does with it (`_rerun.step`): re-attach a generation whose id is known, report a POST
whose answer was never recorded as outcome-unknown (never send it again), yield what ended.

psycopg 3's blocking driver, run off the event loop (``anyio.to_thread``: asyncio and trio
alike), imported only when a batch opens such a journal; one call at a time on its connection,
even when asyncio's own cancellation lets the caller leave before its call ends. A dropped
connection (a restarted server) is retried with backoff and a WARNING for up to `RETRY_FOR`
seconds; every write is an idempotent update of one row, and a claim carries a token that
finds it again when its commit's acknowledgement was lost.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from . import _journal_pg_sql as sql
from ._exceptions import KolboError
from ._journal_keys import ItemKey
from ._journal_path import SharedSpec
from ._journal_schema import Row, load
from ._journal_store import Sweep
from ._rate_store import redact_store
from ._rerun import Send, Step, Unknown, step

__all__ = ["RETRY_FOR", "PostgresJournal"]

logger = logging.getLogger("kolbo_async")
T = TypeVar("T")

#: Seconds a call keeps trying a server it cannot reach before it fails (a restart takes a
#: few); at least one lease, after which other workers may take this one's items over.
RETRY_FOR = 30.0
#: Seconds to connect before an attempt counts as failed.
CONNECT_TIMEOUT = 5
#: Longest pause between attempts, and between two looks while other workers hold the rest.
BACKOFF_MAX = 1.0
LOOK_EVERY = 1.0
#: Longest a close waits for work a natively cancelled caller left running on its thread; that
#: work then closes the journal when it ends.
CLOSE_WAIT = 10.0

# The journals not yet closed, for `_close_at_exit`.
_open: weakref.WeakSet[PostgresJournal] = weakref.WeakSet()


def _close_at_exit() -> None:
    """Close the journals of batches still alive as the interpreter exits (a module global,
    frames held by a Ctrl-C's traceback): now, while imports still work. Collected later,
    during the interpreter's teardown, the batch's close could not connect (psycopg imports
    as it connects; by then `sys.meta_path` is None) and what it had handed out was given
    again by another worker once the lease ran out."""
    for journal in list(_open):
        journal.close_at_exit()


# Registered with the first journal, not on import: a process that never opens one (or a
# child forked from one that imported this module) has nothing to run at exit.
_at_exit_registered = [False]


class PostgresJournal:
    """One worker's view of a shared batch journal (a `JournalStore`, plus claims)."""

    def __init__(
        self,
        spec: SharedSpec,
        keys: Sequence[ItemKey],
        items: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        resubmit_unknown: bool = False,
    ) -> None:
        self._spec = spec
        self._keys = keys
        self._items = items
        self._resubmit_unknown = resubmit_unknown
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.where = f"journal {redact_store(spec.url)} (batch {spec.batch_id!r})"
        self._conn: Any = None
        self._limiter = anyio.CapacityLimiter(1)
        self._handed: set[ItemKey] = set()
        self._handed_lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._opened = False
        self._closed = False
        self._pid = os.getpid()  # a forked child inherits it, never owns it
        _open.add(self)
        if not _at_exit_registered[0]:
            _at_exit_registered[0] = True
            atexit.register(_close_at_exit)
        # One connection, one transaction at a time. The limiter alone does not hold: asyncio's
        # own cancellation (`Task.cancel`, `wait_for`, the runner after a second Ctrl-C) gets
        # through anyio's hold on a thread, so the caller leaves, and the limiter is free, while
        # its work runs on. The next call waits for that work on `_one_at_a_time` (run on the
        # same connection from another thread, its transaction was a savepoint inside the
        # first's, said done before it was committed); a close that comes meanwhile
        # (`close_now`, from whatever thread drops the batch) is left to the last work running
        # (`_close_after`): closing the connection under it rolled back what it had done, and
        # the close's own release with it.
        self._one_at_a_time = threading.RLock()
        # Guards `_working`, `_close_after` and `_closed`; notified as each work ends.
        self._idle = threading.Condition(threading.Lock())
        self._working = 0
        self._close_after = False

    # -- the batch's calls (off the event loop, one at a time) -----------------------------

    async def open(self) -> None:
        """Create the tables if needed, register the batch (or check it is this list), and
        start renewing leases. Raises `KolboError` having sent nothing."""
        await self._run("open it", self._open)
        self._opened = True
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"kolbo-journal-lease {self.name}", daemon=True
        )
        self._heartbeat.start()

    async def sweep(self) -> Sweep:
        """Take over what other workers' run-out leases left; count what is left."""
        return await self._run("look for work", self._sweep, uuid.uuid4().hex)

    async def claim(self) -> ItemKey | None:
        """The next item nobody has claimed, now ours with its intent (None: none left)."""
        return await self._run("claim an item", self._claim, uuid.uuid4().hex)

    async def intent(self, index: int, key: ItemKey, path: str, body: Mapping[str, Any]) -> None:
        """The claimed item is about to be POSTed: recorded only if it is still ours."""
        values: dict[str, Any] = {}
        if not await self._run("record an intent", self._update, sql.INTENT, key, values):
            raise KolboError(
                f"The {self.where}: requests[{index}] was taken over by another worker while "
                "it waited (this worker's lease ran out); it is not sent here."
            )

    async def unsent(self, key: ItemKey) -> None:
        await self._write("take back a claim", sql.UNSENT, key)

    async def submitted(
        self, key: ItemKey, generation_id: str, submission: Mapping[str, Any]
    ) -> None:
        await self._write(f"record generation {generation_id}", sql.SUBMITTED, key,
                          id=generation_id, submission=json.dumps(dict(submission)))  # fmt: skip

    async def unknown(self, key: ItemKey, error: str) -> None:
        await self._write("record an unknown outcome", sql.UNKNOWN, key, error=error)

    async def rejected(self, key: ItemKey, error: str) -> None:
        await self._write("record a refusal", sql.REJECTED, key, error=error)

    async def finished(self, key: ItemKey, generation_id: str, status: Mapping[str, Any]) -> None:
        await self._write(f"record the end of generation {generation_id}", sql.FINISHED, key,
                          id=generation_id, status=json.dumps(dict(status)))  # fmt: skip

    async def holds(self, key: ItemKey) -> bool:
        return bool(await self._run("check an item is still this worker's", self._holds, key))

    def handed(self, key: ItemKey) -> None:
        with self._handed_lock:
            self._handed.add(key)

    async def close(self) -> None:
        """Hand over what went to the caller, release the rest, stop renewing."""
        if not (self._closed and not self._working):
            await anyio.to_thread.run_sync(self._close_waiting, limiter=self._limiter)

    def _close_waiting(self) -> None:
        # Work a natively cancelled caller left running (the limiter is free meanwhile) is
        # waited for, a bounded time: then it closes the journal when it ends.
        with self._idle:
            self._idle.wait_for(lambda: not self._working, CLOSE_WAIT)
        self.close_now()

    def close_at_exit(self) -> None:
        """`close_now`, after the work in flight (daemon threads still run now) has ended,
        or `CLOSE_WAIT`; the interpreter's teardown comes next."""
        if os.getpid() == self._pid:
            self._close_waiting()
        else:
            self.close_now()  # a forked child's copy: forgotten (the work was the parent's)

    def close_now(self) -> None:
        """Close from this thread (also a batch dropped without `aclose`); when work runs on
        a worker thread, that work closes the journal as it ends, and this returns at once."""
        if os.getpid() != self._pid:
            # A forked child: the rows and the connection are its parent's. Forgotten, the
            # connection is not closed (psycopg closes only in the process that opened it).
            self._closed, self._conn = True, None
            return
        with self._idle:
            if self._closed:
                return
            self._closed = True
            _open.discard(self)
            finalizing = sys.is_finalizing()
            later = self._close_after = bool(self._working) and not finalizing
        self._stop.set()
        if later:
            return
        if not finalizing:
            self._alone(self._shut)
            return
        # A batch collected at interpreter exit (a module global, or frames held by a Ctrl-C's
        # traceback): daemon threads no longer run, so neither the lease thread nor a worker
        # thread is waited for (one frozen mid-call may hold the lock), and the connection it
        # may have left mid-call is not used. What went to the caller is still written (on a
        # connection of its own), else another worker would give it again once the lease runs
        # out.
        self._conn = None
        try:
            self._release(self._attempts, deadline=2.0)
        finally:
            self._drop()

    def _shut(self) -> None:
        """Let go of this worker's items (alone on the connection; `_alone` then closes it)."""
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            # Not needed for correctness (a renewal after the release finds nothing of ours):
            # only a short wait for a renewal in flight.
            self._heartbeat.join(timeout=BACKOFF_MAX * 2)
        self._release(self._call_sync, deadline=5.0)

    def _release(self, call: Callable[..., None], *, deadline: float) -> None:
        """Let go of this worker's items through `call` (`_call_sync`, or `_attempts` where
        the lock may be held by a thread frozen at exit); failing that, their lease runs out."""
        try:
            if self._opened:
                call("let go of its items", self._let_go, deadline=deadline)
        except KolboError as error:
            logger.warning("%s Its items are taken over once their lease runs out.", error)

    # -- in the worker thread ----------------------------------------------------------------

    async def _write(self, doing: str, statement: str, key: ItemKey, **values: Any) -> None:
        if not await self._run(doing, self._update, statement, key, values):
            # Taken over after this worker's lease ran out (it was paused, or cut off from
            # the database for longer than a lease): the new owner reports the item.
            logger.warning(
                "The %s: did not %s: another worker took the item over when this worker's "
                "lease ran out, and reports it.", self.where, doing,
            )  # fmt: skip

    async def _run(self, doing: str, func: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise KolboError(f"The {self.where} is closed (the batch was closed).")
        # Not abandoned on cancellation: a write that started is finished first.
        return await anyio.to_thread.run_sync(
            lambda: self._call_sync(doing, func, *args), limiter=self._limiter
        )

    def _call_sync(
        self, doing: str, func: Callable[..., T], *args: Any, deadline: float | None = None
    ) -> T:
        return self._alone(lambda: self._attempts(doing, func, *args, deadline=deadline))

    def _alone(self, work: Callable[[], T]) -> T:
        """`work()` with the connection to itself (see `_one_at_a_time`). The last work to
        end after a close runs the close it was left, and closes the connection (a call that
        got past the closed check as the journal closed reconnects: it is closed again)."""
        with self._idle:
            self._working += 1
        entered = False
        try:
            with self._one_at_a_time:
                entered = True
                try:
                    return work()
                finally:
                    self._ended()
        finally:
            if not entered:  # interrupted while it waited (a Ctrl-C on the main thread)
                with self._idle:
                    self._working -= 1
                    self._idle.notify_all()

    def _ended(self) -> None:
        # Still alone on the connection: nobody can be using it while it closes.
        with self._idle:
            shut = self._close_after and self._working == 1
            if shut:
                self._close_after = False
        if shut:
            self._shut()
        with self._idle:
            self._working -= 1
            last = not self._working
        if last and self._closed:
            self._drop()
        with self._idle:
            self._idle.notify_all()

    def _attempts(self, doing: str, func: Callable[..., T], *args: Any,
                  deadline: float | None = None) -> T:  # fmt: skip
        import psycopg

        if deadline is None:
            deadline = max(RETRY_FOR, self._spec.lease)
        give_up = time.monotonic() + deadline
        pause, warned = 0.05, False
        while True:
            try:
                conn = self._connect()
                with conn.transaction():
                    handed = self._flush(conn) if self._opened else []
                    result = func(conn, *args)
                self._flushed(handed)
                if warned:
                    logger.warning("The %s is reachable again.", self.where)
                return result
            except psycopg.OperationalError as exc:
                self._drop()
                why = _first_line(exc)
                if _refused_for_good(str(exc)):
                    raise KolboError(f"The {self.where}: could not {doing} ({why}).") from None
                if time.monotonic() + pause > give_up:
                    raise KolboError(f"The {self.where}: could not {doing} ({why}).") from None
                if not warned:
                    logger.warning("The %s is unreachable (%s); retrying.", self.where, why)
                    warned = True
                time.sleep(pause)
                pause = min(BACKOFF_MAX, pause * 2)
            except psycopg.Error as exc:
                self._drop()
                raise KolboError(
                    f"The {self.where}: could not {doing} ({_first_line(exc)})."
                ) from None

    def _connect(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._spec.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                application_name="kolbo-async journal",
            )  # fmt: skip
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close
                conn.close()

    def _params(self, **values: Any) -> dict[str, Any]:
        return {"batch": self._spec.batch_id, "me": self.name, "lease": self._spec.lease,
                **values}  # fmt: skip

    def _open(self, conn: Any) -> None:
        conn.execute(sql.LOCK)
        for statement in sql.SCHEMA:
            conn.execute(statement)
        batch, count, digest = self._spec.batch_id, len(self._keys), sql.digest(self._keys)
        if conn.execute(sql.REGISTER, (batch, count, digest)).fetchone() is not None:
            with conn.cursor().copy(sql.COPY_ITEMS) as copy:
                for index, (key, (path, body)) in enumerate(zip(self._keys, self._items,
                                                                strict=True)):  # fmt: skip
                    copy.write_row((batch, key[0], key[1], index, path, json.dumps(body), "new"))
            return
        known = conn.execute(sql.KNOWN, (batch,)).fetchone()
        if tuple(known) != (count, digest):
            raise KolboError(
                f"The {self.where} was started with other requests ({known[0]} items); every "
                "worker of a batch passes the same requests (in any order). Nothing was sent."
            )

    def _flush(self, conn: Any) -> list[ItemKey]:
        """Write what went to the caller since the last flush (in the caller's transaction);
        the keys written, to forget once that transaction committed (`_flushed`)."""
        # A lease thread frozen at interpreter exit may hold the lock: then copy without it
        # (it can no longer change the set).
        locked = self._handed_lock.acquire(timeout=1.0)
        try:
            handed = list(self._handed)
        finally:
            if locked:
                self._handed_lock.release()
        if handed:
            conn.execute(sql.HANDED, self._params(hashes=[h for h, _ in handed],
                                                   occs=[o for _, o in handed]))  # fmt: skip
        return handed

    def _flushed(self, handed: list[ItemKey]) -> None:
        # Only after the commit: a connection cut before it (pg_terminate_backend) would
        # otherwise lose the record, and the item be taken over and given again.
        if handed:
            locked = self._handed_lock.acquire(timeout=1.0)  # see `_flush`
            try:
                self._handed.difference_update(handed)
            finally:
                if locked:
                    self._handed_lock.release()

    def _claim(self, conn: Any, token: str) -> ItemKey | None:
        params = self._params(claim=token)
        # A retry first looks for its own claim, committed before the connection dropped.
        row = conn.execute(sql.FIND_CLAIM, params).fetchone()
        if row is None:
            row = conn.execute(sql.CLAIM, params).fetchone()
        return None if row is None else (row[0], row[1])

    def _sweep(self, conn: Any, token: str) -> Sweep:
        params = self._params(claim=token)
        taken: list[tuple[ItemKey, Step]] = []
        rows = conn.execute(sql.FIND_TAKEN, params).fetchall()  # a lost acknowledgement
        for found in rows or conn.execute(sql.TAKE, params).fetchall():
            key, row, owner = (found[0], found[1]), _row(found), found[7]
            what = step(row, resubmit_unknown=self._resubmit_unknown)
            if isinstance(what, Send):
                conn.execute(sql.REOPEN, self._params(hash=key[0], occ=key[1]))
                continue
            error = None
            if isinstance(what, Unknown) and row.error is None:
                error = f"its worker {owner or ''} stopped before the answer was recorded"
                what = Unknown(error)
            conn.execute(sql.TAKEN, {**params, "hash": key[0], "occ": key[1], "error": error})
            taken.append((key, what))
        fresh, left, expiry, uptime = conn.execute(sql.COUNTS, params).fetchone()
        wait = LOOK_EVERY if expiry is None else max(0.05, float(expiry) + 0.05)
        if uptime is not None and float(uptime) < self._spec.lease:  # just restarted
            wait = max(wait, self._spec.lease - float(uptime) + 0.05)
        return Sweep(taken, int(fresh or 0), int(left or 0), min(wait, LOOK_EVERY))

    def _update(self, conn: Any, statement: str, key: ItemKey, values: dict[str, Any]) -> bool:
        return bool(conn.execute(statement, self._params(hash=key[0], occ=key[1],
                                                         **values)).rowcount)  # fmt: skip

    def _holds(self, conn: Any, key: ItemKey) -> bool:
        return conn.execute(sql.HOLDS, self._params(hash=key[0], occ=key[1])).fetchone() is not None

    def _let_go(self, conn: Any) -> None:
        conn.execute(sql.RELEASE, self._params())

    # -- the lease thread --------------------------------------------------------------------

    def _beat(self) -> None:
        """Renew this worker's leases every third of a lease, for as long as it lives."""
        import psycopg

        conn: Any = None
        every = self._spec.lease / 3
        while not self._stop.wait(every):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._spec.url, autocommit=True,
                                           connect_timeout=CONNECT_TIMEOUT)  # fmt: skip
                with conn.transaction():
                    handed = self._flush(conn)
                    conn.execute(sql.RENEW, self._params())
                self._flushed(handed)
            except psycopg.Error as exc:
                logger.warning("The %s: could not renew leases (%s); retrying.", self.where,
                               _first_line(exc))  # fmt: skip
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def _row(found: Sequence[Any]) -> Row:
    _, _, state, generation_id, submission, status, error, _ = found
    return Row(state, generation_id, load(submission), load(status), error)


#: What a server says when it will never let this worker in: no such database or role, a
#: wrong password, no pg_hba.conf entry. Said at once rather than retried like an outage
#: (psycopg gives no SQLSTATE for a refused connection, only the server's message).
_FOR_GOOD = ("does not exist", "password authentication failed", "no pg_hba.conf entry")


def _refused_for_good(message: str) -> bool:
    return "FATAL:" in message and any(words in message for words in _FOR_GOOD)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
