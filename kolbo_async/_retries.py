"""Pure decisions: what failed, whether to try again, how long to wait.

Nothing here awaits, sleeps or touches a socket; `_send.Retries` and `_poll_plan` act on these
answers, so each rule can be tested as a plain function.
"""

from __future__ import annotations

import enum
import math
import random
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "DEFAULT_POLL_INTERVAL",
    "MAX_RETRY_AFTER",
    "POLL_BACKOFF_CAP",
    "POLL_BUDGET_SHARE",
    "shared_poll_interval",
    "Attempt",
    "Failure",
    "backoff",
    "capped_retry_after",
    "parse_retry_after",
    "poll_delay",
    "retry_delay",
    "retryable_status",
    "waits_too_long",
]

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
#: Inside `progress()`/`wait()` a transient failure is retried until the deadline, backing off
#: up to 30 s between tries, as Kolbo's own client does.
POLL_BACKOFF_CAP = 30.0
DEFAULT_POLL_INTERVAL = 8.0
MIN_POLL_INTERVAL = 0.05
MAX_POLL_HINT = 120.0

RETRYABLE_STATUSES = frozenset({408, 425, 429})

#: The longest ``Retry-After`` the SDK sleeps through. A longer one (a day, a date far ahead,
#: ``1e308``) is handed to the caller as `RateLimitError` at once rather than freezing every
#: request of the client in that bucket.
MAX_RETRY_AFTER = 60.0


class Failure(enum.Enum):
    """How one attempt went wrong, as far as the retry decision cares."""

    #: The connection was never made (refused, DNS, connect timeout, no pool slot):
    #: the server cannot have seen the request.
    NOT_SENT = "not_sent"
    #: The request went out (or may have) and no complete answer came back.
    LOST = "lost"
    #: The server answered with a status.
    STATUS = "status"


class Attempt(NamedTuple):
    """What the retry rule needs to know about a failed attempt."""

    failure: Failure
    status_code: int | None = None
    retry_after: float | None = None


def retryable_status(status_code: int) -> bool:
    """Whether an answer with `status_code` may be worth another try: 408, 425, 429, 5xx.

    >>> [code for code in (400, 404, 408, 425, 429, 500, 503) if retryable_status(code)]
    [408, 425, 429, 500, 503]
    """
    return status_code in RETRYABLE_STATUSES or status_code >= 500


def retry_delay(
    attempt: Attempt,
    *,
    is_generation: bool,
    retries_done: int,
    max_retries: int | None,
    rng: random.Random,
    cap: float = BACKOFF_CAP,
) -> float | None:
    """Seconds to wait before the next try, or None to give up.

    A generation POST is retried only when Kolbo cannot have acted on it: the connection was
    never made, or a 429 (rejected before any charge). Other calls are also retried after a
    lost answer and on 408, 425 and any 5xx. `max_retries=None` means "until the caller's deadline".
    """
    if max_retries is not None and retries_done >= max_retries:
        return None
    if attempt.failure is Failure.NOT_SENT:
        safe = True
    elif attempt.failure is Failure.LOST:
        safe = not is_generation
    else:
        code = attempt.status_code
        safe = code == 429 or (
            not is_generation
            and code is not None
            and retryable_status(code)
        )
    if not safe:
        return None
    delay = backoff(retries_done, rng=rng, cap=cap)
    if attempt.retry_after is not None:
        delay = max(delay, attempt.retry_after)
    return delay


def waits_too_long(retry_after: float | None) -> bool:
    """Whether a server's ``Retry-After`` asks for more than the SDK will sleep
    (`MAX_RETRY_AFTER`).

    Example:
        >>> waits_too_long(30), waits_too_long(86400), waits_too_long(None)
        (False, True, False)
    """
    return retry_after is not None and retry_after > MAX_RETRY_AFTER


def capped_retry_after(retry_after: float | None) -> float | None:
    """`retry_after` capped at what the SDK sleeps through, for a shared 429 cooldown: a
    server asking for a day must not freeze every request of the bucket.

    Example:
        >>> capped_retry_after(86400), capped_retry_after(2.5), capped_retry_after(None)
        (60.0, 2.5, None)
    """
    return None if retry_after is None else min(retry_after, MAX_RETRY_AFTER)


def backoff(retries_done: int, *, rng: random.Random, cap: float = BACKOFF_CAP) -> float:
    """Capped exponential backoff with jitter: ``min(0.5 * 2**n, cap) * U[0.75, 1]``.

    The jitter keeps a fleet of retrying handles from coming back in lock-step.
    """
    base = min(BACKOFF_BASE * (2.0 ** min(retries_done, 16)), cap)
    return base * rng.uniform(0.75, 1.0)


def parse_retry_after(value: str | None, *, now_epoch: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date.

    Returns None for a missing or unreadable header, and never a negative number.

    Example:
        >>> parse_retry_after("2.5", now_epoch=0)
        2.5
        >>> parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now_epoch=10)
        20.0
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_epoch
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def poll_delay(hint: Any) -> float:
    """Seconds between status polls for a server `poll_interval_hint`.

    The hint is honoured when it is a number in (0, 120]; anything else (absent, zero,
    negative, absurd, not a number) means the documented 8 s. Never below 50 ms.

    Example:
        >>> poll_delay(3), poll_delay(0), poll_delay("soon"), poll_delay(0.001)
        (3.0, 8.0, 8.0, 0.05)
    """
    if isinstance(hint, bool) or not isinstance(hint, (int, float)):
        return DEFAULT_POLL_INTERVAL
    if not (0 < hint <= MAX_POLL_HINT):  # also false for NaN
        return DEFAULT_POLL_INTERVAL
    return max(MIN_POLL_INTERVAL, float(hint))


#: Share of `requests_per_minute` the shared poller plans to spend on status polls; the rest
#: is headroom for generation POSTs and the caller's own calls (catalog, credits, cancel).
POLL_BUDGET_SHARE = 0.9


def shared_poll_interval(hint: float, *, load: float, budget: float | None) -> float:
    """Seconds between polls of one generation when `load` polls/s are wanted in total.

    `load` is the sum of ``1 / hint`` over every watched generation and `budget` the polls
    per second the client may spend (None: unlimited). Within budget each generation is
    polled at its own hint; over it, every interval is stretched by the same factor, so the
    total is the budget and no generation is starved.

    Example:
        >>> shared_poll_interval(8.0, load=1000 / 8, budget=5.0)   # 1,000 handles, 300/min
        200.0
        >>> shared_poll_interval(8.0, load=1.0, budget=5.0)
        8.0
    """
    if budget is None or load <= budget:
        return hint
    return hint * (load / budget)
