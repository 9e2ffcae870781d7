"""The ``journal=`` argument of `generate_many`: a path, or an SQLite URL as SQLAlchemy writes
them, checked before anything is sent or created."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._exceptions import InvalidRequestError

__all__ = ["journal_path"]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SQLITE = "sqlite:///"


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


def _sqlite_url_path(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme != "sqlite":
        raise InvalidRequestError(
            "journal",
            f"{scheme}:// journals are not supported; give a file path, or sqlite:///PATH "
            "(relative) or sqlite:////PATH (absolute)",
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
