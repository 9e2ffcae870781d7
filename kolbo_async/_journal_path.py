"""The ``journal=``, ``batch_id=`` and ``lease=`` arguments of `generate_many`: a path, an
SQLite URL as SQLAlchemy writes them, or a PostgreSQL URL shared by many workers, checked
before anything is sent or created."""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs

from ._exceptions import InvalidRequestError
from ._rate_store import redact_store

__all__ = ["DEFAULT_LEASE", "SharedSpec", "journal_path", "journal_spec"]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SQLITE = "sqlite:///"
_POSTGRES = ("postgresql", "postgres")

#: Seconds a worker holds the items it claimed without renewing them (`lease=`).
DEFAULT_LEASE = 60.0
#: The longest lease: a dead worker's items wait that long, and PostgreSQL's timestamps (and
#: the lease thread's timer) overflow far beyond it.
MAX_LEASE = 86_400.0
#: The longest `batch_id` (characters).
MAX_BATCH_ID = 200


@attrs.frozen
class SharedSpec:
    """A journal in PostgreSQL shared by every worker that passes the same `batch_id`."""

    url: str = attrs.field(repr=lambda url: repr(redact_store(url)))
    batch_id: str
    lease: float


def journal_spec(
    journal: str | os.PathLike[str] | None,
    batch_id: str | None = None,
    lease: float | None = None,
) -> Path | SharedSpec | None:
    """The journal arguments checked: a path (SQLite, one run at a time), a `SharedSpec`
    (PostgreSQL, many workers), or None (no journal).

    `batch_id` and `lease` go with a ``postgresql://`` journal only, which needs both a
    `batch_id` and the psycopg driver (``kolbo-async[postgres]``).
    """
    if isinstance(journal, str) and "://" in journal and (
        journal.partition("://")[0].lower() in _POSTGRES
    ):
        shared = SharedSpec(journal, _batch_id(batch_id), _lease(lease))
        import importlib.util  # only a shared journal asks

        if importlib.util.find_spec("psycopg") is None:
            raise InvalidRequestError(
                "journal",
                "a postgresql:// journal needs the psycopg driver: "
                "pip install 'kolbo-async[postgres]'",
            )
        return shared
    for name, value in (("batch_id", batch_id), ("lease", lease)):
        if value is not None:
            raise InvalidRequestError(
                name,
                "goes with a journal shared by many workers: pass "
                "journal='postgresql://...' with it (a file journal is one run's at a time)",
            )
    return journal_path(journal)


def journal_path(journal: str | os.PathLike[str] | None) -> Path | None:
    """The journal argument as a path (None: no journal).

    A string may be an SQLite URL as SQLAlchemy writes them: ``sqlite:///batch.db`` is
    relative, ``sqlite:////var/batch.db`` absolute. Any other URL is refused here, before
    anything is sent or created.
    """
    if journal is None:
        return None
    if not isinstance(journal, (str, os.PathLike)):
        raise InvalidRequestError(
            "journal", f"must be a path or None, not {type(journal).__name__}"
        )
    if isinstance(journal, str) and _URL.match(journal):
        journal = _sqlite_url_path(journal)
    path = Path(journal)
    if path.is_dir():
        raise InvalidRequestError("journal", f"{str(path)!r} is a directory; name a file")
    return path


def _batch_id(batch_id: object) -> str:
    if batch_id is None:
        raise InvalidRequestError(
            "batch_id",
            "a postgresql:// journal needs batch_id=: the name every worker of the batch "
            "passes (with the same requests)",
        )
    if not isinstance(batch_id, str) or not batch_id.strip():
        raise InvalidRequestError("batch_id", f"must be a non-empty string, not {batch_id!r}")
    if len(batch_id) > MAX_BATCH_ID or not batch_id.isprintable():
        raise InvalidRequestError(
            "batch_id", f"must be printable and at most {MAX_BATCH_ID} characters"
        )
    return batch_id


def _lease(lease: object) -> float:
    if lease is None:
        return DEFAULT_LEASE
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not (
        0 < lease <= MAX_LEASE
    ):
        raise InvalidRequestError(
            "lease", f"must be a number of seconds above 0 and up to {MAX_LEASE:g} (a day), "
            f"not {lease!r}",
        )
    return float(lease)


def _sqlite_url_path(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme != "sqlite":
        raise InvalidRequestError(
            "journal",
            f"{scheme}:// journals are not supported; give a file path, sqlite:///PATH "
            "(relative) or sqlite:////PATH (absolute), or postgresql://... with batch_id= "
            "for a journal shared by many workers",
        )
    if not url.lower().startswith(_SQLITE) or len(url) == len(_SQLITE):
        raise InvalidRequestError(
            "journal",
            "an SQLite URL names a local file: sqlite:///relative.db or "
            "sqlite:////absolute/path.db (no host, and not in memory)",
        )
    path = url[len(_SQLITE) :]
    if "?" in path:
        raise InvalidRequestError(
            "journal", "an SQLite URL with query parameters is not supported; name the file only"
        )
    return path
