"""A batch's crash-safe journal: one SQLite file, written off the event loop, held by one run.

Each item has one row (keyed as `_journal_keys` says; the format is `_journal_schema`'s). The
row is written *before* the POST (``intent``), gets the generation id the moment the POST
answers (``submitted``), and the terminal status when it arrives (``finished``); a POST Kolbo
refused with a 4xx (nothing charged) is ``rejected`` and submitted again by a rerun. Every
write is committed with ``synchronous=FULL`` before the batch goes on, so a process killed at
any instant leaves at most one kind of doubt: an ``intent`` row without an id, a POST that may
or may not have reached Kolbo.

A second run is kept out for as long as the first one has the journal open, whatever name it
reaches the file by (a symlink, a hard link, a relative path): within a process by the file's
identity, between processes by a ``flock`` on the database file itself (Linux; taken only
once the file's header says it is empty, a journal, or an unmarked SQLite file) and by a
sidecar ``REALPATH.lock`` that also names the holder. The ``flock`` on the file is what makes
a hard link, or a deleted ``.lock``, no way around the rule; where ``flock`` and SQLite's
``fcntl`` locks may conflict (the BSDs, macOS) or locks are mandatory (Windows) only the
sidecar is used.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from ._exceptions import KolboError
from ._filelock import FLOCK_BESIDE_SQLITE, FileLock
from ._journal_keys import ItemKey, item_keys, request_key
from ._journal_schema import (
    ALL_COLUMNS,
    APPLICATION_ID,
    FINISHED,
    INTENT,
    REJECTED,
    SUBMITTED,
    NotAJournal,
    Row,
    check_header,
    inspect,
    load,
    prepare,
)

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT",
    "FINISHED",
    "INTENT",
    "REJECTED",
    "SUBMITTED",
    "ItemKey",
    "Journal",
    "Row",
    "item_keys",
    "request_key",
]

T = TypeVar("T")

#: Seconds a write waits for another program's lock on the file (``sqlite3 batch.db``, a
#: browser) before it fails; the batch then sends nothing more without a record.
BUSY_TIMEOUT = 5.0


# Journals this process holds, by resolved path and by file identity (st_dev, st_ino): a
# second batch of the process is refused before it opens any descriptor of the file, since
# closing one would drop the POSIX locks the first batch's SQLite holds on it.
_HELD: set[object] = set()
_HELD_LOCK = threading.Lock()
# Keys of journals whose batch was dropped while a write ran: closed when that write ends,
# which a new batch of the process waits for (at most a write's time) instead of refusing.
_CLOSING: set[object] = set()
_RELEASED = threading.Condition(_HELD_LOCK)


class Journal:
    """One open journal file. Methods run in a worker thread, one at a time, and return
    only once the write is durable; every failure is a `KolboError` naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path  # as given: what messages name
        # Every name of one file (a symlink, a relative path) locks the same things.
        self._file = Path(os.path.realpath(path))
        sidecar = self._file.with_name(self._file.name + ".lock")
        what = f"journal {path}"
        self._lock = FileLock(sidecar, what)
        self._hold = FileLock(self._file, what, note_in=sidecar) if FLOCK_BESIDE_SQLITE else None
        self._held: list[object] = []
        self._db: sqlite3.Connection | None = None
        # What an intent replaced, to put back when its POST is not sent after all.
        self._before: dict[ItemKey, tuple[Any, ...] | None] = {}
        self._limiter = anyio.CapacityLimiter(1)
        # SQLite's connection closed under a running statement crashes the interpreter. Two
        # ways to get there: `close_now` from whatever thread drops the batch (the garbage
        # collector's, a Ctrl-C's) while a write runs on a worker thread (that write then
        # closes it when done), and a caller cancelled natively (asyncio's runner after a
        # second Ctrl-C) letting go of the limiter while its write still runs (the next
        # write or close waits for it on `_one_at_a_time`).
        self._one_at_a_time = threading.Lock()
        self._mutex = threading.Lock()
        self._writing = 0
        self._close_after = False

    async def open(self) -> dict[ItemKey, Row]:
        """Check, lock and open (or create) the file; return every row by its key.

        Raises `KolboError` naming the path, having changed nothing, when the file is
        corrupt, another program's, in a missing directory or held by another run.
        """
        return await self._run("open it", self._open)

    async def intent(self, index: int, key: ItemKey, path: str, body: Mapping[str, Any]) -> None:
        """Record that item `key` (at `index` in this run's list) is about to be POSTed."""
        await self._run(f"record requests[{index}] before sending it",
                        self._write, index, key, path, json.dumps(body))  # fmt: skip

    async def unsent(self, key: ItemKey) -> None:
        """Take back the intent of a POST that was certainly not sent: the row is as before
        it (none, or what an earlier run left), so a rerun sends the item."""
        await self._run("take back an intent", self._restore, key)

    async def submitted(
        self, key: ItemKey, generation_id: str, submission: Mapping[str, Any]
    ) -> None:
        """Record the generation id the POST answered with."""
        await self._run(f"record generation {generation_id}", self._update, key, SUBMITTED,
                        generation_id, json.dumps(dict(submission)), None, None)  # fmt: skip

    async def unknown(self, key: ItemKey, error: str) -> None:
        """Keep the intent (the POST may have reached Kolbo) and say what went wrong."""
        await self._run("record an unknown outcome", self._update, key, INTENT,
                        None, None, None, error)  # fmt: skip

    async def rejected(self, key: ItemKey, error: str) -> None:
        """Record that Kolbo refused the POST with a 4xx (nothing was created or charged)."""
        await self._run("record a refusal", self._update, key, REJECTED,
                        None, None, None, error)  # fmt: skip

    async def finished(self, key: ItemKey, generation_id: str, status: Mapping[str, Any]) -> None:
        """Record the generation's terminal status (and its id, in case that write failed)."""
        await self._run(f"record the end of generation {generation_id}", self._update, key,
                        FINISHED, generation_id, None, json.dumps(dict(status)), None)  # fmt: skip

    async def holds(self, key: ItemKey) -> bool:
        return True  # one run holds the whole journal

    def handed(self, key: ItemKey) -> None:
        """Nothing to do: the run holds the whole file."""

    async def close(self) -> None:
        """Close the file and let the next run have it."""
        if self._db is not None or self._held:
            await self._run("close it", self._close)

    def close_now(self) -> None:
        """Close the file from this thread (a batch dropped without `aclose`), or, when a
        write is running on a worker thread, as soon as that write is done."""
        with self._mutex:
            if self._writing:
                self._close_after = True
                with _HELD_LOCK:
                    _CLOSING.update(self._held)
                return
            self._close()

    async def _run(self, doing: str, func: Callable[..., T], *args: Any) -> T:
        # Not abandoned on cancellation: a write that started is finished, and the caller
        # learns of it, before anything else happens.
        return await anyio.to_thread.run_sync(
            self._guarded, doing, func, *args, limiter=self._limiter
        )

    def _guarded(self, doing: str, func: Callable[..., T], *args: Any) -> T:
        import sqlite3

        with self._mutex:
            self._writing += 1
        try:
            with self._one_at_a_time:
                return func(*args)
        except (sqlite3.Error, OSError) as exc:
            # Another program holding the file (``database is locked``), a full disk: the
            # batch learns it as a `KolboError`, and decides what it means for the item.
            raise KolboError(
                f"Journal {self.path}: could not {doing} ({type(exc).__name__}: {exc})."
            ) from None
        finally:
            with self._mutex:
                self._writing -= 1
                if self._close_after and not self._writing:
                    self._close_after = False
                    self._close()

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> dict[ItemKey, Row]:
        # Imported on first use: `import kolbo_async` is measured, and most runs keep no journal.
        import sqlite3

        file = self._file
        if not file.parent.is_dir():
            raise self._error(f"its directory {file.parent} does not exist; create it first")
        if file.exists() and not file.is_file():
            raise self._error("it is not a regular file")
        self._claim(str(file))
        try:
            return self._open_held(sqlite3)
        except BaseException:
            self._close()
            raise

    def _open_held(self, sqlite3: Any) -> dict[ItemKey, Row]:
        file = self._file
        # Claimed before any descriptor of the file is opened (see `_HELD`).
        self._claim(_identity(file))
        fresh = not file.exists() or file.stat().st_size == 0
        if not fresh:
            self._check_header()
        if self._hold is not None:
            # Only a file that is empty, a journal or an unmarked SQLite file gets here.
            self._hold.acquire()
            self._claim(_identity(file))
        if not fresh:
            # Looked at (read only) before the lock file appears beside another program's file.
            self._with_db(sqlite3, inspect, close=True)
        self._lock.acquire()
        self._db = db = self._with_db(sqlite3, prepare, close=False)
        self._claim(_identity(file))  # created just now, when it was missing
        try:
            rows = db.execute(
                "SELECT request_hash, occurrence, state, generation_id, submission, status,"
                " error FROM items"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error(f"it cannot be read ({exc})") from None
        return {
            (digest, occurrence): Row(state, gen_id, load(submission), load(status), error)
            for digest, occurrence, state, gen_id, submission, status, error in rows
        }

    def _claim(self, key: object) -> None:
        if key is None or key in self._held:
            return
        with _RELEASED:
            if key in _CLOSING:
                _RELEASED.wait_for(lambda: key not in _HELD, timeout=BUSY_TIMEOUT * 2)
            if key in _HELD:
                raise KolboError(
                    f"The journal {self.path} is in use by another batch of this process "
                    f"(pid {os.getpid()}): one journal is one run's at a time. Wait for that "
                    "batch to end (or close it), then run again. Nothing was sent."
                )
            _HELD.add(key)
            self._held.append(key)
            if self._close_after:  # dropped while this very open runs: closed at its end
                _CLOSING.add(key)

    def _check_header(self) -> None:
        # Before SQLite opens it: a file that is not a database, or is another program's
        # (marked with its own application id), is refused without being opened at all.
        try:
            with self._file.open("rb") as file:
                header = file.read(100)
        except OSError as exc:
            raise self._error(f"it cannot be read ({exc.strerror or exc})") from None
        try:
            check_header(header)
        except NotAJournal as exc:
            raise self._error(str(exc)) from None

    def _with_db(self, sqlite3: Any, func: Callable[[Any], object], *, close: bool) -> Any:
        try:
            db = sqlite3.connect(
                self._file, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise self._error(f"it cannot be opened ({exc})") from None
        try:
            func(db)
        except sqlite3.Error as exc:
            db.close()
            if "locked" in str(exc):  # SQLITE_BUSY: held past the busy timeout
                raise self._error(
                    f"another program holds a lock on it ({exc}); close that program's "
                    "transaction (an sqlite3 shell, a database browser), then run again"
                ) from None
            raise self._error(f"it is not a readable journal ({exc})") from None
        except NotAJournal as exc:
            db.close()
            raise self._error(str(exc)) from None
        except BaseException:
            db.close()
            raise
        if close:
            db.close()
        return db

    def _error(self, why: str) -> KolboError:
        return KolboError(f"Journal {self.path}: {why}. Nothing was sent.")

    # -- writing ---------------------------------------------------------------------------

    def _write(self, index: int, key: ItemKey, path: str, body: str) -> None:
        db = self._open_db()
        with _transaction(db):
            before = db.execute(
                f"SELECT {ALL_COLUMNS} FROM items WHERE request_hash = ? AND occurrence = ?", key
            ).fetchone()
            db.execute(
                "INSERT INTO items (request_hash, occurrence, idx, path, body, state,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_hash, occurrence)"
                " DO UPDATE SET idx = excluded.idx, state = excluded.state, generation_id = NULL,"
                " submission = NULL, status = NULL, error = NULL,"
                " updated_at = excluded.updated_at",
                (key[0], key[1], index, path, body, INTENT, time.time()),
            )
        self._before[key] = None if before is None else tuple(before)

    def _restore(self, key: ItemKey) -> None:
        db = self._open_db()
        before = self._before.pop(key, None)
        with _transaction(db):
            db.execute("DELETE FROM items WHERE request_hash = ? AND occurrence = ?", key)
            if before is not None:
                marks = ", ".join("?" * len(before))
                db.execute(f"INSERT INTO items ({ALL_COLUMNS}) VALUES ({marks})", before)

    def _update(self, key: ItemKey, state: str, generation_id: str | None,
                submission: str | None, status: str | None, error: str | None) -> None:  # fmt: skip
        db = self._open_db()
        self._before.pop(key, None)
        with _transaction(db):
            db.execute(
                "UPDATE items SET state = ?, generation_id = COALESCE(?, generation_id),"
                " submission = COALESCE(?, submission), status = COALESCE(?, status),"
                " error = ?, updated_at = ? WHERE request_hash = ? AND occurrence = ?",
                (state, generation_id, submission, status, error, time.time(), key[0], key[1]),
            )

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise KolboError(f"Journal {self.path}: it is closed (the batch was closed).")
        return self._db

    def _close(self) -> None:
        # The database first: closing our own descriptor of the file while SQLite still has
        # it open would drop SQLite's locks on it.
        db, self._db = self._db, None
        try:
            if db is not None:
                db.close()
        finally:
            self._lock.release()
            if self._hold is not None:
                self._hold.release()
            held, self._held = self._held, []
            with _RELEASED:
                _HELD.difference_update(held)
                _CLOSING.difference_update(held)
                _RELEASED.notify_all()


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write as one transaction. The connection autocommits (``isolation_level=None``),
    where ``with db:`` opens none: a take-back's DELETE was committed before its INSERT ran,
    so a failure between them lost the row that the batch's warning says a rerun reports."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLite rolls some failures back itself
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _identity(file: Path) -> tuple[int, int] | None:
    try:
        stat = file.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)
