"""The journal file's format: its one table, the states of a row, and telling a journal (of
this schema or an older one, migrated in place) from an empty file or another program's.

The file is marked with SQLite's ``application_id``; a file without the mark is changed only
when it is empty or a journal of the first schema (keyed by index and hash), so another
program's database is never touched. Journals of schema 2 hashed request bodies without the
canonical rule of `_journal_keys`; opening one re-keys the rows whose body holds a whole
float, so items they recorded still match.

Plain functions of an open ``sqlite3.Connection`` (or of the file's first bytes); they raise
`NotAJournal` saying why a file is refused, and leave locking and threads to `_journal`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple

from ._journal_keys import legacy_key, request_key

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "ALL_COLUMNS",
    "APPLICATION_ID",
    "FINISHED",
    "INTENT",
    "REJECTED",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SUBMITTED",
    "NotAJournal",
    "Row",
    "check_header",
    "inspect",
    "load",
    "prepare",
]

INTENT = "intent"
SUBMITTED = "submitted"
FINISHED = "finished"
REJECTED = "rejected"

#: ``PRAGMA application_id`` of every journal: "KOLB".
APPLICATION_ID = 0x4B4F4C42
#: ``PRAGMA user_version``: 3 hashes whole floats as integers; 2 is keyed by (hash,
#: occurrence) and did not; 1 (unmarked) was keyed by (index, hash).
SCHEMA_VERSION = 3

_SQLITE_MAGIC = b"SQLite format 3\x00"

_COLUMNS = (
    "path TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, generation_id TEXT, "
    "submission TEXT, status TEXT, error TEXT, updated_at REAL NOT NULL"
)
# `idx` is the item's position in the list of the run that last wrote the row: for people
# reading the file, never for matching.
SCHEMA = f"""
CREATE TABLE items (
    request_hash TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    {_COLUMNS},
    PRIMARY KEY (request_hash, occurrence)
)
"""
ALL_COLUMNS = (
    "request_hash, occurrence, idx, path, body, state, generation_id, submission, status,"
    " error, updated_at"
)
_V1_COLUMNS = frozenset(
    {"idx", "request_hash", "path", "body", "state", "generation_id", "submission", "status",
     "error", "updated_at"}
)  # fmt: skip
# Rows of one hash keep their index order, which is the order a rerun of the same list
# numbers its occurrences in.
_MIGRATE_V1 = [
    "ALTER TABLE items RENAME TO items_v1",
    SCHEMA,
    "INSERT INTO items (request_hash, occurrence, idx, path, body, state, generation_id,"
    " submission, status, error, updated_at)"
    " SELECT o.request_hash, (SELECT COUNT(*) FROM items_v1 AS e"
    "  WHERE e.request_hash = o.request_hash AND e.idx < o.idx),"
    " o.idx, o.path, o.body, o.state, o.generation_id, o.submission, o.status, o.error,"
    " o.updated_at FROM items_v1 AS o",
    "DROP TABLE items_v1",
]


class Row(NamedTuple):
    """What the journal knows of one item."""

    state: str
    generation_id: str | None
    submission: dict[str, Any] | None
    status: dict[str, Any] | None
    error: str | None = None


class NotAJournal(Exception):
    """A file the journal must not use (or change); the message says why."""


def check_header(header: bytes) -> None:
    """Refuse, from its first 100 bytes, a file that is not an SQLite database or is another
    program's (marked with its own application id), before SQLite opens it at all."""
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise NotAJournal("it is not an SQLite database (a corrupt or foreign file)")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id not in (0, APPLICATION_ID):
        raise _foreign(f"application_id {app_id:#010x}")


def inspect(db: sqlite3.Connection) -> str:
    """What the open file is: "new" (empty), "current", "v2" or "v1" (to migrate); else
    raises `NotAJournal`."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise NotAJournal(
                f"it was written by a newer kolbo-async (schema {version}); upgrade to use it"
            )
        return "current" if version == SCHEMA_VERSION else "v2"
    if app_id != 0:
        raise _foreign(f"application_id {app_id:#010x}")
    if not tables:
        return "new"
    if tables == ["items"]:
        columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
        if columns == _V1_COLUMNS:
            return "v1"
    raise _foreign("tables: " + ", ".join(sorted(tables)))


def prepare(db: sqlite3.Connection) -> None:
    """Make the open file a journal of this schema (created, migrated or as it was), then
    set it up for durable writes."""
    # One write transaction under the lock: the check and the change are one step.
    db.execute("BEGIN IMMEDIATE")
    try:
        kind = inspect(db)
        if kind == "new":
            db.execute(SCHEMA)
        elif kind == "v1":
            for statement in _MIGRATE_V1:
                db.execute(statement)
        if kind in ("v1", "v2"):
            _rekey(db)
        if kind != "current":
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")


def load(text: str | None) -> dict[str, Any] | None:
    """A JSON object column as a dict (None when missing or unreadable)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _foreign(what: str) -> NotAJournal:
    return NotAJournal(
        f"it is another program's SQLite database ({what}), not a kolbo-async journal; "
        "it was left untouched. Name a new file for the journal"
    )


def _rekey(db: sqlite3.Connection) -> None:
    """Give rows hashed by schema 2's rule (5.0 apart from 5) their canonical key.

    A moved row takes the next free occurrence of its new hash, in list order, so a rerun
    of the list that wrote it finds every one of its items again.
    """
    rows = db.execute(
        "SELECT rowid, request_hash, path, body FROM items ORDER BY idx, occurrence"
    ).fetchall()
    keys = db.execute("SELECT request_hash, occurrence FROM items").fetchall()
    next_free: dict[str, int] = {}
    for digest, occurrence in keys:
        next_free[digest] = max(next_free.get(digest, 0), occurrence + 1)
    for rowid, digest, path, text in rows:
        body = load(text)
        if body is None or legacy_key(path, body) != digest:
            continue  # not written by schema 2's rule: left as it is
        new = request_key(path, body)
        if new == digest:
            continue
        occurrence = next_free.get(new, 0)
        next_free[new] = occurrence + 1
        db.execute(
            "UPDATE items SET request_hash = ?, occurrence = ? WHERE rowid = ?",
            (new, occurrence, rowid),
        )
