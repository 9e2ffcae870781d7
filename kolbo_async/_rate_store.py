"""Where a rate budget lives: the small store interface and the in-process store.

A `RateStore` holds, per budget (a hash of the API key, never the key) and per bucket, a
sliding window of admission times and a 429 cooldown. `admit` is the whole decision in one
atomic step: prune every bucket the request needs, take the longest wait any of them imposes,
and when there is none count the request in all of them (both or neither). Each store times
admissions by one clock of its own (SQLite: the machine's; Redis: the server's ``TIME``), and
only durations leave it, so the clocks of the machines sharing it never meet.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from ._exceptions import InvalidRequestError
from ._window import Window

__all__ = [
    "Buckets",
    "LocalStore",
    "RateStore",
    "StoreUnavailable",
    "budget_name",
    "check_store",
    "redact_store",
]

logger = logging.getLogger("kolbo_async")

#: (bucket name, limit per window) for each bucket a request counts against.
Buckets = Sequence[tuple[str, int]]

class StoreUnavailable(Exception):
    """The store could not be reached, or did not answer in time. The message names the
    store's kind of failure, never a password or the API key."""


class RateStore(Protocol):
    """A rate budget's windows and cooldowns, shared by whoever opens the same store."""

    #: Where it is, for log lines (no password).
    name: str
    #: True when its calls do I/O: they then run in a worker thread.
    blocking: bool

    def admit(self, budget: str, buckets: Buckets, window: float) -> float:
        """0 when one request was admitted into every bucket (counted in each); else the
        seconds until it might be (counted in none). Raises `StoreUnavailable`."""
        ...

    def cool_down(
        self, budget: str, bucket: str, window: float, retry_after: float | None
    ) -> float:
        """Hold `bucket` after a 429 (`Retry-After`, else until its oldest event leaves the
        window, at least 1 s); the seconds held. Raises `StoreUnavailable`."""
        ...

    def close(self) -> None: ...


def budget_name(api_key: str) -> str:
    """The name a key's budget has in a store: a hash of the key, never the key."""
    return hashlib.sha256(b"kolbo-async rate budget\0" + api_key.encode()).hexdigest()[:32]


def redact_store(url: object) -> object:
    """`url` with any ``user:password@`` replaced by ``***@`` (for messages and reprs)."""
    if not isinstance(url, str):
        return url
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if not sep or "@" not in netloc:
        return url
    return f"{scheme}://***@{netloc.rpartition('@')[2]}{slash}{tail}"


def check_store(value: object) -> None:
    """`InvalidRequestError` naming ``store`` unless `value` is None or a store URL we know."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRequestError(
            "store",
            "must be None, 'sqlite:///PATH' or 'redis://HOST:PORT/DB', "
            f"not {type(value).__name__}",
        )
    shown = redact_store(value)
    if value.startswith("sqlite:///"):
        if not value[len("sqlite:///") :].strip():
            raise InvalidRequestError("store", f"names no file: {shown!r} (sqlite:///PATH)")
        return
    if not value.startswith(("redis://", "rediss://")):
        raise InvalidRequestError(
            "store",
            f"must be 'sqlite:///PATH' or 'redis://HOST:PORT/DB' (or rediss://), not {shown!r}",
        )
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        port = parts.port  # a port that is not a number raises here
    except ValueError:
        raise InvalidRequestError("store", f"is not a redis URL: {shown!r}") from None
    db = parts.path.strip("/")
    if not parts.hostname or port == 0:
        raise InvalidRequestError("store", f"needs a host (and a port): {shown!r}")
    if db and not db.isdigit():
        raise InvalidRequestError("store", f"database must be a number: {shown!r}")
    if parts.query or parts.fragment:
        raise InvalidRequestError("store", f"takes no query or fragment: {shown!r}")


class LocalStore:
    """The in-process store: the pacer's own windows, shared by whoever holds this object.

    What a client uses without a `store` is the pacer's windows directly (no store call on
    the hot path); this is the same rule behind the store interface, timed by `now`.
    """

    blocking = False
    name = "in-process"

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._windows: dict[tuple[str, str, float], Window] = {}

    def _window(self, budget: str, bucket: str, limit: int | None, window: float) -> Window:
        key = (budget, bucket, window)
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = Window(limit, window)
        elif limit is not None:
            found.limit = limit
        return found

    def admit(self, budget: str, buckets: Buckets, window: float) -> float:
        now = self._now()
        windows = [self._window(budget, name, limit, window) for name, limit in buckets]
        wait = max(w.delay(now) for w in windows)
        if wait <= 0:
            for w in windows:
                w.record(now)
        return wait

    def cool_down(
        self, budget: str, bucket: str, window: float, retry_after: float | None
    ) -> float:
        return self._window(budget, bucket, None, window).cool_down(self._now(), retry_after)

    def close(self) -> None:
        self._windows.clear()
