"""What the SDK tells a hook: the events, as frozen attrs classes, and how a hook is called.

A hook is any callable taking one `Event`, given to ``AsyncKolbo(hooks=[...])`` (or
``Kolbo(hooks=[...])``). It is called inline, in the task (and thread) where the event
happens, so it must be quick and must not block; what it returns is ignored, and an exception
it raises is logged (WARNING, logger ``kolbo_async``) and never reaches the SDK's caller.
No event carries the API key, a request's headers or a signed URL's query.

Not imported by ``import kolbo_async``: attrs classes cost import time, and only a client with
hooks needs them (the emitting modules import this one when they have a hook to call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import attrs

from ._lazy import public

__all__ = [
    "CooldownStarted",
    "DownloadProgress",
    "Event",
    "GenerationSubmitted",
    "Hook",
    "PacingWait",
    "RequestDone",
    "Retrying",
    "StateChanged",
    "emit",
    "request_done",
    "retrying",
]

logger = logging.getLogger("kolbo_async")


@attrs.frozen
class Event:
    """The base of every event a hook receives (``isinstance(event, Event)``).

    Events are frozen attrs classes: compare them, ``match`` on them, ``attrs.asdict`` them.
    """


#: What ``AsyncKolbo(hooks=[...])`` takes: a callable of one `Event`.
Hook = Callable[[Event], object]


@attrs.frozen
class RequestDone(Event):
    """One HTTP attempt at an API call came back (or did not).

    Attributes:
        method: ``"GET"``, ``"POST"``.
        path: the API path, e.g. ``/api/v1/generate/<id>/status``.
        attempt: 1 for the first try of a call, 2 for its first retry, ...; a status poll
            the shared poller sends is always 1 (a failed poll is planned again, not
            retried).
        status_code: the answer's HTTP status; None when no answer came (see `error`).
        seconds: from sending to the answer's status line (or the failure).
        error: why no answer came, as the exception's class name: httpx's for a transport
            error (``"ConnectError"``, ``"ReadTimeout"``), ``"CancelledError"`` (asyncio) or
            ``"Cancelled"`` (trio) when the caller left; None when answered.
    """

    method: str
    path: str
    attempt: int
    status_code: int | None
    seconds: float
    error: str | None = None


@attrs.frozen
class Retrying(Event):
    """A failed attempt will be tried again after `delay` seconds.

    Attributes:
        method, path: the call, as in `RequestDone` (a download's `path` is the CDN path,
            without its query).
        attempt: the attempt that failed (1 for the first try).
        delay: seconds before the next attempt (a 429's wait is its bucket's cooldown).
        reason: ``"HTTP 503"`` for an answer, else the error's class name
            (``"APIConnectionError"``, ``"APITimeoutError"``).
    """

    method: str
    path: str
    attempt: int
    delay: float
    reason: str


@attrs.frozen
class PacingWait(Event):
    """A request waits for the client's rate windows (``RateLimits``) before it is sent.

    Attributes:
        bucket: ``"generate"`` (generation POSTs) or ``"request"`` (every API call).
        seconds: how long it waits now (it may wait again if the window is still full).
    """

    bucket: str
    seconds: float


@attrs.frozen
class CooldownStarted(Event):
    """A 429 started a cooldown: requests of its bucket (or to its CDN host) wait it out.

    Attributes:
        bucket: ``"generate"`` or ``"request"`` for the API; None for a CDN.
        host: the CDN host for a download's 429; None for the API.
        seconds: the cooldown (the ``Retry-After``, capped; 1 s without one).
    """

    bucket: str | None
    host: str | None
    seconds: float


@attrs.frozen
class GenerationSubmitted(Event):
    """A generation POST was answered: Kolbo created (and charged) a generation.

    Attributes:
        generation_id: its id.
        route: the API path it was posted to (``/api/v1/generate/video``, ...).
        model: the model Kolbo reports using (``"auto"`` with Smart Select), else the one
            asked for; None when neither is known.
        credits: credits charged, as Kolbo reported them (None when it did not say).
        seconds: the whole submission, pacing and retries included.
    """

    generation_id: str
    route: str
    model: str | None
    credits: float | None
    seconds: float


@attrs.frozen
class StateChanged(Event):
    """A status poll found a generation in a new state or at a new progress.

    Sent by the client's shared poller (``progress()``, ``wait()``, ``result()``,
    ``download()``, batches); a direct ``status()`` call sends none.

    Attributes:
        generation_id: the generation.
        state: ``"pending"``, ``"processing"``, ``"completed"``, ``"failed"``, ...
        progress: 0 to 100.
    """

    generation_id: str
    state: str
    progress: int


@attrs.frozen
class DownloadProgress(Event):
    """Bytes of a download arrived: once as each transfer (or resume) starts, then per
    chunk; the last has ``received == total`` when the CDN announced the size.

    Attributes:
        path: the file being written (the path given to ``download()``).
        received: bytes of the file received so far.
        total: the file's size when the CDN announced it, else None.
    """

    path: str
    received: int
    total: int | None


public(Event, RequestDone, Retrying, PacingWait, CooldownStarted, GenerationSubmitted,
       StateChanged, DownloadProgress)  # fmt: skip


def emit(hooks: Sequence[Hook], event: Event) -> None:
    """Call each hook with `event`; a hook's exception is logged and goes no further."""
    for hook in hooks:
        try:
            hook(event)
        except Exception:
            logger.warning(
                "hook %r raised on %s; the SDK goes on", hook, type(event).__name__, exc_info=True
            )


def request_done(
    hooks: Sequence[Hook],
    method: str,
    path: str,
    attempt: int,
    started: float,
    response: object,
    failure: BaseException | None = None,
) -> None:
    """Emit `RequestDone` for an attempt sent at `started` (``time.perf_counter()``) and
    answered with `response` (an httpx.Response), or not because of `failure`."""
    seconds = time.perf_counter() - started
    status = getattr(response, "status_code", None)
    error = None if failure is None else type(failure).__name__
    emit(hooks, RequestDone(method, path, attempt, status, seconds, error))


def retrying(
    hooks: Sequence[Hook], method: str, path: str, attempt: int, delay: float, error: Exception
) -> None:
    """Emit `Retrying` for `attempt`, which failed with `error` (an API status error reads
    as its status)."""
    status = getattr(error, "status_code", None)
    reason = f"HTTP {status}" if isinstance(status, int) else type(error).__name__
    emit(hooks, Retrying(method, path, attempt, delay, reason))
