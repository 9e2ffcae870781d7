"""A rate budget shared by the processes of one machine through a SQLite file.

One short ``BEGIN IMMEDIATE`` transaction per admission: it takes the file's write lock
first, so the read (prune, count, cooldown) and the write (one row per bucket) cannot
interleave with another process's; the time is read once the lock is held, so the rows go
in in time order. Times are the machine's wall clock (`time.time`), which every process on
the machine shares. One connection per store, used by one worker thread at a time (the
pacer's calls run in threads), reopened after an error, closed with the client's pacer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from ._rate_store import Buckets, StoreUnavailable

__all__ = ["SQLiteStore"]

#: How long a call waits for another process's transaction before it counts as unavailable.
BUSY_TIMEOUT = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kolbo_rate_events (
    budget TEXT NOT NULL, bucket TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS kolbo_rate_events_at ON kolbo_rate_events (budget, bucket, at);
CREATE TABLE IF NOT EXISTS kolbo_rate_cooldowns (
    budget TEXT NOT NULL, bucket TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (budget, bucket));
"""
_COOL = (
    "INSERT INTO kolbo_rate_cooldowns (budget, bucket, until) VALUES (?, ?, ?) "
    "ON CONFLICT (budget, bucket) DO UPDATE SET until = max(until, excluded.until)"
)


class SQLiteStore:
    """`RateStore` on a SQLite file (created with its tables on first use)."""

    blocking = True

    def __init__(self, path: str, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.name = f"sqlite:///{path}"
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        """The store's connection (held under `_lock`), opened with its tables if need be."""
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
            try:
                # WAL: readers never wait for the writer, and a commit is one append (no
                # fsync with synchronous=NORMAL: a power cut may lose the last admissions).
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _transaction(self, body: Callable[[sqlite3.Connection, float], float]) -> float:
        """`body(conn, now)` inside one ``BEGIN IMMEDIATE`` transaction."""
        with self._lock:
            try:
                conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = body(conn, time.time())
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._drop()
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        return result

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    def admit(self, budget: str, buckets: Buckets, window: float) -> float:
        def body(conn: sqlite3.Connection, now: float) -> float:
            wait = 0.0
            for bucket, limit in buckets:
                wait = max(wait, _delay(conn, budget, bucket, limit, window, now))
            if wait <= 0:
                conn.executemany(
                    "INSERT INTO kolbo_rate_events (budget, bucket, at) VALUES (?, ?, ?)",
                    [(budget, bucket, now) for bucket, _ in buckets],
                )
            return wait

        return self._transaction(body)

    def cool_down(
        self, budget: str, bucket: str, window: float, retry_after: float | None
    ) -> float:
        def body(conn: sqlite3.Connection, now: float) -> float:
            _prune(conn, budget, bucket, window, now)
            if retry_after is not None:
                seconds = retry_after
            else:
                (oldest,) = conn.execute(
                    "SELECT min(at) FROM kolbo_rate_events WHERE budget = ? AND bucket = ?",
                    (budget, bucket),
                ).fetchone()
                seconds = 1.0 if oldest is None else max(1.0, oldest + window - now)
            conn.execute(_COOL, (budget, bucket, now + seconds))
            return float(seconds)

        return self._transaction(body)

    def close(self) -> None:
        with self._lock:
            self._drop()


def _prune(conn: sqlite3.Connection, budget: str, bucket: str, window: float, now: float) -> None:
    conn.execute(
        "DELETE FROM kolbo_rate_events WHERE budget = ? AND bucket = ? AND at <= ?",
        (budget, bucket, now - window),
    )


def _delay(
    conn: sqlite3.Connection, budget: str, bucket: str, limit: int, window: float, now: float
) -> float:
    """Seconds until `bucket` takes one more (its cooldown, then its window); pruned first."""
    _prune(conn, budget, bucket, window, now)
    row = conn.execute(
        "SELECT until FROM kolbo_rate_cooldowns WHERE budget = ? AND bucket = ?", (budget, bucket)
    ).fetchone()
    wait = 0.0 if row is None else float(row[0]) - now
    (count,) = conn.execute(
        "SELECT count(*) FROM kolbo_rate_events WHERE budget = ? AND bucket = ?", (budget, bucket)
    ).fetchone()
    if count >= limit:
        # The event whose leaving makes room: the (count - limit)th oldest.
        (nth,) = conn.execute(
            "SELECT at FROM kolbo_rate_events WHERE budget = ? AND bucket = ? "
            "ORDER BY at LIMIT 1 OFFSET ?",
            (budget, bucket, count - limit),
        ).fetchone()
        wait = max(wait, float(nth) + window - now)
    return wait
