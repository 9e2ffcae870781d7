"""A batch's crash-safe journal: one SQLite file, written off the event loop.

Each item of a batch has one row, keyed by its index and a hash of its request (so two
identical prompts stay two items). The row is written *before* the POST (``intent``), gets
the generation id the moment the POST answers (``submitted``), and the terminal status when
it arrives (``finished``); a POST Kolbo rejected outright (nothing charged) is ``rejected``
and submitted again by a rerun. Every write is committed with ``synchronous=FULL`` before the
batch goes on, so a process killed at any instant leaves at most one kind of doubt: an
``intent`` row without an id, a POST that may or may not have reached Kolbo.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    import sqlite3

__all__ = ["INTENT", "FINISHED", "REJECTED", "SUBMITTED", "Journal", "Row", "request_key"]

T = TypeVar("T")

INTENT = "intent"
SUBMITTED = "submitted"
FINISHED = "finished"
REJECTED = "rejected"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER NOT NULL,
    request_hash TEXT NOT NULL,
    path TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    generation_id TEXT,
    submission TEXT,
    status TEXT,
    error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (idx, request_hash)
)
"""


class Row(NamedTuple):
    """What the journal knows of one item."""

    state: str
    generation_id: str | None
    submission: dict[str, Any] | None
    status: dict[str, Any] | None


def request_key(path: str, body: Mapping[str, Any]) -> str:
    """A stable hash of one request: endpoint and canonical JSON body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()


class Journal:
    """One open journal file. Methods run in a worker thread, one at a time, and return
    only once the write is durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    async def open(self) -> dict[tuple[int, str], Row]:
        """Open (or create) the file and return every row, keyed by (index, hash)."""
        return await self._run(self._open)

    async def intent(self, index: int, key: str, path: str, body: Mapping[str, Any]) -> None:
        """Record that item `index` is about to be POSTed."""
        await self._run(self._write, index, key, path, json.dumps(body), INTENT, None, None)

    async def submitted(self, index: int, key: str, generation_id: str,
                        submission: Mapping[str, Any]) -> None:  # fmt: skip
        """Record the generation id the POST answered with."""
        await self._run(self._update, index, key, SUBMITTED, generation_id,
                        json.dumps(dict(submission)), None, None)  # fmt: skip

    async def rejected(self, index: int, key: str, error: str) -> None:
        """Record that Kolbo refused the POST (nothing was created or charged)."""
        await self._run(self._update, index, key, REJECTED, None, None, None, error)

    async def finished(self, index: int, key: str, status: Mapping[str, Any]) -> None:
        """Record the generation's terminal status."""
        await self._run(self._update, index, key, FINISHED, None, None,
                        json.dumps(dict(status)), None)  # fmt: skip

    async def close(self) -> None:
        """Close the file; the journal can be opened again by a later run."""
        if self._db is not None:
            await self._run(self._close)

    def close_now(self) -> None:
        """Close the file from this thread (a batch dropped without `aclose`)."""
        self._close()

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        # Not abandoned on cancellation: a write that started is finished, and the caller
        # learns of it, before anything else happens.
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def _open(self) -> dict[tuple[int, str], Row]:
        # Imported on first use: `import kolbo_async` is measured, and most runs keep no journal.
        import sqlite3

        if self.path.parent and not self.path.parent.exists():
            os.makedirs(self.path.parent, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            rows = db.execute(
                "SELECT idx, request_hash, state, generation_id, submission, status FROM items"
            ).fetchall()
        except BaseException:
            db.close()
            raise
        self._db = db
        return {
            (idx, key): Row(state, gen_id, _load(submission), _load(status))
            for idx, key, state, gen_id, submission, status in rows
        }

    def _write(self, index: int, key: str, path: str, body: str, state: str,
               generation_id: str | None, error: str | None) -> None:  # fmt: skip
        assert self._db is not None
        with self._db:
            self._db.execute(
                "INSERT INTO items (idx, request_hash, path, body, state, generation_id, error,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idx, request_hash)"
                " DO UPDATE SET state = excluded.state, generation_id = NULL, submission = NULL,"
                " status = NULL, error = NULL, updated_at = excluded.updated_at",
                (index, key, path, body, state, generation_id, error, time.time()),
            )

    def _update(self, index: int, key: str, state: str, generation_id: str | None,
                submission: str | None, status: str | None, error: str | None) -> None:  # fmt: skip
        assert self._db is not None
        with self._db:
            self._db.execute(
                "UPDATE items SET state = ?, generation_id = COALESCE(?, generation_id),"
                " submission = COALESCE(?, submission), status = COALESCE(?, status),"
                " error = ?, updated_at = ? WHERE idx = ? AND request_hash = ?",
                (state, generation_id, submission, status, error, time.time(), index, key),
            )

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _load(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
