"""The one send path: every HTTP exchange of the SDK goes out through `send` or `stream`.

API calls, status polls and cancels (`send`, the whole answer read) and CDN downloads
(`stream`, the body handed on while it arrives) are sent here under the limiter of the
connections they use, which the caller passes in with the client: the API's and the CDN's are
not the same. Each outcome is classified here once, from `_retries`' rules:

- no answer (a transport error): `Unanswered`, with `Failure.NOT_SENT` when the connection was
  never made and `Failure.LOST` when the request may have gone out;
- an answer: an `Answer`, whose ``retry`` is the `Attempt` the retry rule judges when the
  status may be worth another try (``Retry-After`` parsed once, here), and a 429 starts the
  cooldown the caller named (a pacing bucket of the API, a CDN host of the downloads).

What an answer means (the API's envelope, a media file) is the caller's to read; how long to
wait before the next try, and when to give up, is `Retries`'.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import httpx

from ._clock import Clock
from ._exceptions import KolboError, rate_limited
from ._retries import (
    Attempt,
    Failure,
    capped_retry_after,
    parse_retry_after,
    retry_delay,
    retryable_status,
    waits_too_long,
)

__all__ = [
    "Answer",
    "CoolDown",
    "Retries",
    "Retryable",
    "Unanswered",
    "failure_of",
    "retry_after_of",
    "send",
    "stream",
]

T = TypeVar("T")

#: Starts a 429's cooldown: called with the ``Retry-After`` (capped, None when absent).
CoolDown = Callable[[float | None], object]

_UNREAD = -1.0  # an Answer's Retry-After before anyone asked for it


class Retryable(Exception):
    """A failed attempt for the retry rule to judge: `attempt` is what the rule reads,
    `error` what the caller gets when the rule gives up."""

    def __init__(self, attempt: Attempt, error: KolboError) -> None:
        super().__init__(str(error))
        self.attempt = attempt
        self.error = error


class Unanswered(Exception):
    """An exchange that brought no (whole) answer: `attempt` says whether the request may
    have reached the server; `cause` is httpx's error, for the caller to word and mask."""

    def __init__(self, attempt: Attempt, cause: httpx.HTTPError) -> None:
        super().__init__(type(cause).__name__)
        self.attempt = attempt
        self.cause = cause

    def reason(self) -> str:
        """The cause's text, else the first text down its chain, else its type's name.

        On trio a failed TLS handshake reaches httpx as an empty `ConnectError` over an empty
        `BrokenResourceError`; only the `ssl` error beneath says the certificate was refused.
        """
        below: BaseException | None = self.cause
        for _ in range(8):  # bounded: a chain can loop back on itself
            if below is None:
                break
            text = str(below)
            if text:
                return text if below is self.cause else f"{type(self.cause).__name__}: {text}"
            # Even a suppressed context: httpcore raises its ConnectError `from None`.
            below = below.__cause__ or below.__context__
        return type(self.cause).__name__


class Answer:
    """A response as the send path classified it.

    `retry` is set when the status is one the retry rule may retry (408, 425, 429, 5xx);
    `retry_after` is the answer's ``Retry-After`` in seconds (read once, on first use).
    """

    __slots__ = ("_retry_after", "response", "retry")

    def __init__(self, response: httpx.Response, retry: Attempt | None) -> None:
        self.response = response
        self.retry = retry
        self._retry_after = _UNREAD if retry is None else retry.retry_after

    @property
    def retry_after(self) -> float | None:
        if self._retry_after == _UNREAD:
            self._retry_after = retry_after_of(self.response)
        return self._retry_after


def failure_of(exc: httpx.HTTPError) -> Failure:
    """How an exchange that raised `exc` failed, for the retry rule.

    >>> failure_of(httpx.ConnectError("refused")), failure_of(httpx.ReadTimeout("slow"))
    (<Failure.NOT_SENT: 'not_sent'>, <Failure.LOST: 'lost'>)
    """
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        # The connection was never made: the server cannot have seen the request.
        return Failure.NOT_SENT
    return Failure.LOST


def retry_after_of(response: httpx.Response) -> float | None:
    """`response`'s ``Retry-After`` in seconds (None when absent or unreadable)."""
    return parse_retry_after(response.headers.get("retry-after"), now_epoch=time.time())


async def send(
    http: httpx.AsyncClient,
    request: httpx.Request,
    limiter: anyio.Semaphore,
    cool_down: CoolDown,
) -> Answer:
    """Send `request` with one slot of `limiter`, read its whole answer, follow no redirect.

    Raises `Unanswered` when no answer came, `KolboError` when `http` is closed.
    """
    try:
        async with limiter:
            response = await http.send(request, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise _unanswered(exc) from exc
    except RuntimeError as exc:  # httpx's "client has been closed"
        if not http.is_closed:  # anything else (a body's own error) is not a closed client
            raise
        raise _closed(exc) from None
    return _classified(response, cool_down)


async def stream(
    http: httpx.AsyncClient,
    request: httpx.Request,
    limiter: anyio.Semaphore,
    cool_down: CoolDown,
    receive: Callable[[Answer], Awaitable[T]],
) -> T:
    """Send `request` and hand its answer, streamed, to `receive`; return what it returns.

    The slot of `limiter` is held until `receive` is done and the answer closed. Redirects
    are followed here, each target checked first: httpx would give a ``file:///x`` target
    the current host and send it on. A transport error while `receive` reads the body is
    classified as one at sending is (`Unanswered`). Raises `httpx.UnsupportedProtocol` for a
    redirect to anything but http(s), `httpx.TooManyRedirects`, and `KolboError` when
    `http` is closed.
    """
    async with limiter:
        for _ in range(http.max_redirects + 1):
            response = await _send_streamed(http, request)
            following = response.next_request
            if following is None:
                break
            await response.aclose()
            if following.url.scheme not in ("http", "https"):
                raise httpx.UnsupportedProtocol("redirected to a non-http(s) URL")
            request = following
        else:
            raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=request)
        try:
            return await receive(_classified(response, cool_down))
        except httpx.HTTPError as exc:
            raise _unanswered(exc) from exc
        finally:
            await response.aclose()


async def _send_streamed(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    try:
        return await http.send(request, stream=True, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise _unanswered(exc) from exc
    except RuntimeError as exc:  # httpx's "client has been closed"
        if not http.is_closed:  # anything else (a body's own error) is not a closed client
            raise
        raise _closed(exc) from None


def _unanswered(exc: httpx.HTTPError) -> Unanswered:
    return Unanswered(Attempt(failure_of(exc)), exc)


def _closed(exc: RuntimeError) -> KolboError:
    return KolboError(f"The HTTP client is closed: {exc}")


def _classified(response: httpx.Response, cool_down: CoolDown) -> Answer:
    status = response.status_code
    if not retryable_status(status):
        return Answer(response, None)
    # Honoured on every retried answer, not only a 429: a 503 asking for 30 s gets it.
    retry_after = retry_after_of(response)
    if status == 429:
        cool_down(capped_retry_after(retry_after))
    return Answer(response, Attempt(Failure.STATUS, status, retry_after))


class Retries:
    """The retries of one exchange: how many were made, and the wait before the next.

    `generation` marks a paid generation POST, retried only when Kolbo cannot have acted on
    it (`_retries.retry_delay`).
    """

    __slots__ = ("clock", "done", "generation", "max_retries", "rng")

    def __init__(
        self, *, max_retries: int | None, rng: random.Random, clock: Clock, generation: bool
    ) -> None:
        self.max_retries = max_retries
        self.rng = rng
        self.clock = clock
        self.generation = generation
        self.done = 0

    def delay(self, failed: Retryable) -> float:
        """Seconds until `failed`'s exchange may be tried again, counted as a retry.

        Raises `failed.error` when the rule gives up, and `RateLimitError` at once when the
        server asks for a longer wait than the SDK sleeps.
        """
        attempt = failed.attempt
        delay = retry_delay(
            attempt,
            is_generation=self.generation,
            retries_done=self.done,
            max_retries=self.max_retries,
            rng=self.rng,
        )
        if delay is None:
            raise failed.error from failed.__cause__
        if waits_too_long(attempt.retry_after):
            raise rate_limited(failed.error, attempt.retry_after) from None
        self.done += 1
        return delay

    async def wait(self, failed: Retryable, delay: float) -> None:
        """Sleep `delay` before the next try, unless `failed` was a 429: its cooldown is
        waited out where the next try is admitted, with every other request it holds."""
        if failed.attempt.status_code != 429:
            await self.clock.sleep(delay)
