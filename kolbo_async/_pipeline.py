"""The one async request path: pace, send, classify, retry, decode, log.

Every API call of every client and handle goes through `Pipeline.call`; nothing else in the
package awaits httpx for the API or sleeps between attempts. Decisions come from
`_retries.py` and `_pacing.py`, so this module only acts on them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar, cast

import anyio
import httpx

from ._clock import Clock
from ._config import Settings
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    KolboError,
    SubmissionOutcomeUnknownError,
    make_status_error,
    rate_limited,
)
from ._models import submitted_id
from ._pacing import GENERATE, REQUEST, Pacer
from ._retries import (
    Attempt,
    Failure,
    capped_retry_after,
    parse_retry_after,
    retry_delay,
    retryable_status,
    waits_too_long,
)
from ._runtime import current_loop, forks, running_asyncio

__all__ = ["Call", "Lifecycle", "Pipeline", "Retryable"]

logger = logging.getLogger("kolbo_async")

T = TypeVar("T")

_REDACTED = "kolbo_live_***"
_NOT_JSON = object()


# Internal classes here are plain slotted classes rather than attrs ones: each attrs class
# costs a fraction of a millisecond at import, and `import kolbo_async` time is measured.


class Call:
    """One API request, before any attempt is made.

    `generation` marks a paid generation POST (retried only when Kolbo cannot have acted on
    it); `url` is the parsed URL when the caller keeps the call for reuse (a handle's status
    poll): parsing it once saves a third of httpx's own per-request cost.
    """

    __slots__ = ("generation", "json", "method", "params", "path", "url")

    def __init__(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        generation: bool = False,
        url: httpx.URL | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.json = json
        self.params = params
        self.generation = generation
        self.url = url


class Lifecycle:
    """Whether the client is closed, and where it runs; shared by a client and its copies.

    `loop` is the event loop (or trio run) of the first request, and `forks` the fork count
    then: the pool, locks and pacing belong to that loop in that process.
    """

    __slots__ = ("closed", "forks", "landed", "loop", "paid_in_flight")

    def __init__(self) -> None:
        self.closed = False
        self.loop: object | None = None
        self.forks = forks()
        #: Generation POSTs on the wire: closing waits for their answers.
        self.paid_in_flight = 0
        #: Set when the last of them lands, for a close that waits.
        self.landed: anyio.Event | None = None

    def bind(self, loop: object | None) -> None:
        """Adopt `loop` on first use; refuse, before anything is sent, a different one."""
        if self.forks != forks():
            raise KolboError(
                "This client was created before os.fork(); its connections belong to the "
                "parent process, so nothing was sent. Create the client in the child "
                "(e.g. in gunicorn's post_fork hook or a Celery worker_process_init handler)."
            )
        if loop is None:
            return
        if self.loop is not None and self.loop is not loop:
            raise KolboError(
                "This AsyncKolbo was first used on another event loop (an earlier "
                "asyncio.run() or trio.run(), or another thread); its connections and locks "
                "belong to that loop, so nothing was sent. Create one client per loop, inside "
                "it (`async with AsyncKolbo() as client:` in your main, or an async fixture), "
                "or use the blocking Kolbo client, which runs its own loop."
            )
        self.loop = loop


class Pipeline:
    """Sends `Call`s for one client; shared by every handle and `with_options` copy."""

    __slots__ = ("clock", "http", "lifecycle", "limiter", "pacer", "rng", "settings")

    def __init__(
        self,
        *,
        settings: Settings,
        http: httpx.AsyncClient,
        pacer: Pacer,
        limiter: anyio.Semaphore,
        clock: Clock,
        rng: random.Random,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.pacer = pacer
        self.limiter = limiter
        self.clock = clock
        self.rng = rng
        self.lifecycle = lifecycle or Lifecycle()

    def with_settings(self, settings: Settings) -> Pipeline:
        """A pipeline with other settings, sharing pool, pacer, limiter, clock and lifecycle."""
        return Pipeline(
            settings=settings,
            http=self.http,
            pacer=self.pacer,
            limiter=self.limiter,
            clock=self.clock,
            rng=self.rng,
            lifecycle=self.lifecycle,
        )

    def prepared(self, method: str, path: str) -> Call:
        """A reusable `Call` with its URL parsed once."""
        return Call(method, path, url=httpx.URL(self.settings.root + path))

    def ensure_open(self) -> None:
        """Raise `KolboError` once the client is closed, or when called from a loop (or a
        forked process) other than the one it runs on: before anything is sent."""
        lifecycle = self.lifecycle
        if lifecycle.closed:
            raise KolboError("This client is closed; create a new one to make requests.")
        loop = current_loop()
        if loop is not lifecycle.loop or lifecycle.forks != forks():
            lifecycle.bind(loop)

    def redact(self, text: str) -> str:
        """`text` with the API key masked, for anything that may reach a log or a user."""
        key = self.settings.api_key
        return text.replace(key, _REDACTED) if key and key in text else text

    def preview(self, body: object) -> str:
        """A short, one-line, key-free view of an answer for a message (masked first, then
        cut, so that a key straddling the cut cannot survive in part)."""
        return _preview(self.redact(body if isinstance(body, str) else repr(body)))

    async def call(
        self,
        call: Call,
        parse: Callable[[dict[str, Any]], T],
        *,
        admitted: bool = False,
    ) -> T:
        """Send `call` until it succeeds or the retry rules give up; return ``parse(json)``.

        Args:
            parse: turns the answer's JSON object into a model; a `ValueError` from it
                becomes `APIResponseValidationError` (not retried).
            admitted: the caller already waited for (and counted) the first attempt in the
                rate windows, outside the part it cannot let be cancelled (a batch's POST).
        """
        bucket = GENERATE if call.generation else REQUEST
        max_retries = self.settings.max_retries
        retries_done = 0
        while True:
            self.ensure_open()
            if admitted:
                admitted = False
            else:
                await self.pacer.admit(bucket)
            try:
                if call.generation:
                    return await self._paid_attempt(call, parse)
                return await self._attempt(call, parse)
            except Retryable as failed:
                error = failed.error
                attempt = failed.attempt
                if attempt.status_code == 429:
                    self.pacer.cool_down(bucket, capped_retry_after(attempt.retry_after))
                delay = retry_delay(
                    attempt,
                    is_generation=call.generation,
                    retries_done=retries_done,
                    max_retries=max_retries,
                    rng=self.rng,
                )
                if delay is None:
                    raise error from failed.__cause__
                if waits_too_long(attempt.retry_after):
                    raise rate_limited(error, attempt.retry_after) from None
                retries_done += 1
                logger.debug(
                    "retrying %s %s in %.2f s (retry %d) after: %s",
                    call.method,
                    call.path,
                    delay,
                    retries_done,
                    error,
                )
                # A 429's cooldown is waited out by the pacer before the next attempt.
                if attempt.status_code != 429:
                    await self.clock.sleep(delay)

    async def _paid_attempt(self, call: Call, parse: Callable[[dict[str, Any]], T]) -> T:
        """One attempt at a generation POST, run to its answer whatever the caller does.

        Once the POST may be on the wire, only its answer tells whether Kolbo charged for
        it; a caller that leaves meanwhile (a timeout, a task group, Ctrl-C) would lose a
        paid generation without a trace. So the attempt runs to its answer (closing the
        client waits for it too), and what lands after its caller left is logged at WARNING:
        the id of the generation, or that its outcome is unknown.
        """
        asyncio = running_asyncio()
        outcome: tuple[T | None, Exception | None]
        if asyncio is not None:
            # asyncio's own cancellation (`wait_for`, `timeout`, `Task.cancel`) goes through
            # an anyio shield; only a task of its own keeps the POST going. The caller leaves
            # at once, and the task reports what became of the POST when it lands.
            abandoned = [False]
            task = asyncio.ensure_future(self._land(call, parse, abandoned))
            try:
                outcome = await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    _log_orphan(call, *task.result())
                else:
                    abandoned[0] = True  # the task reports it when it lands
                raise
        else:
            with anyio.CancelScope(shield=True):
                outcome = await self._land(call, parse)
            try:
                await anyio.lowlevel.checkpoint()
            except anyio.get_cancelled_exc_class():
                _log_orphan(call, *outcome)
                raise
        result, failure = outcome
        if failure is not None:
            raise failure
        return cast(T, result)  # set whenever failure is None

    async def _land(
        self,
        call: Call,
        parse: Callable[[dict[str, Any]], T],
        abandoned: list[bool] | None = None,
    ) -> tuple[T | None, Exception | None]:
        """The paid attempt itself, counted while on the wire; its failure is returned, to
        be judged once we know whether anyone still waits (`abandoned[0]`: nobody does)."""
        lifecycle = self.lifecycle
        lifecycle.paid_in_flight += 1
        outcome: tuple[T | None, Exception | None] | None = None
        try:
            outcome = (await self._attempt(call, parse), None)
        except Exception as exc:
            outcome = (None, exc)
        finally:
            if abandoned is not None and abandoned[0]:
                # None: the loop itself is going away under the POST (its outcome unknown).
                _log_orphan(call, *(outcome or (None, _CUT_SHORT)))
            lifecycle.paid_in_flight -= 1
            if not lifecycle.paid_in_flight and lifecycle.landed is not None:
                lifecycle.landed.set()
        assert outcome is not None  # set unless an exception is on its way out
        return outcome

    async def once(self, call: Call, parse: Callable[[dict[str, Any]], T]) -> T:
        """One attempt at a status poll that the shared poller has already paced.

        A failure the retry rules would retry comes out as `Retryable` (a 429 has started
        its cooldown by then): the poller, not this call, decides when to try again.
        """
        self.ensure_open()
        try:
            return await self._attempt(call, parse)
        except Retryable as failed:
            attempt = failed.attempt
            if attempt.status_code == 429:
                self.pacer.cool_down(REQUEST, capped_retry_after(attempt.retry_after))
            raise

    async def _attempt(self, call: Call, parse: Callable[[dict[str, Any]], T]) -> T:
        settings = self.settings
        timeout = settings.generation_timeout if call.generation else settings.timeout
        # The key goes straight into the request (whose repr hides headers), never into a
        # local of its own: tools that show a traceback's locals (Sentry, pytest -l, rich)
        # would print it.
        request = self.http.build_request(
            call.method,
            call.url or settings.root + call.path,
            json=call.json,
            params=call.params,
            headers={"X-API-Key": settings.api_key, "Accept": "application/json"},
            timeout=timeout,
        )
        started = time.perf_counter()
        try:
            async with self.limiter:
                # Not streamed: httpx reads the whole (small) answer and closes it.
                response = await self.http.send(request, follow_redirects=False)
        except httpx.HTTPError as exc:
            _redact(request)
            self._raise_transport(exc, call, request)
        except RuntimeError as exc:  # httpx's "client has been closed"
            raise KolboError(f"The HTTP client is closed: {exc}") from None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d (%.3f s)",
                call.method,
                request.url.path,
                response.status_code,
                time.perf_counter() - started,
            )
        try:
            body = self._decode(response, call)
            try:
                return parse(body)
            except (ValueError, RecursionError) as exc:
                if call.generation:
                    raise self._unknown(
                        call, response, f"with a body the SDK cannot read ({exc})"
                    ) from None
                raise APIResponseValidationError(
                    f"{call.method} {request.url.path} answered {response.status_code} with a "
                    f"body the SDK cannot read ({exc}): {self.preview(body)}",
                    response=response,
                    body=body,
                ) from None
        except Exception:
            # The error keeps the response, and the response its request: not the key.
            _redact(request)
            raise

    def _raise_transport(
        self, exc: httpx.HTTPError, call: Call, request: httpx.Request
    ) -> NoReturn:
        what = f"{call.method} {request.url.path}"
        detail = self.redact(str(exc) or type(exc).__name__)
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            # The connection was never made: the server cannot have seen the request.
            cls: type[APIConnectionError] = (
                APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
            )
            error: KolboError = cls(f"{what} could not connect: {detail}", request=request)
            raise Retryable(Attempt(Failure.NOT_SENT), error) from self._safe_cause(exc)
        if call.generation:
            error = SubmissionOutcomeUnknownError(
                f"{what} failed after the request may have reached Kolbo ({detail}). "
                "The generation may have been created and charged; it was NOT resubmitted. "
                "Check your Kolbo dashboard before submitting it again.",
                request=request,
            )
        elif isinstance(exc, httpx.TimeoutException):
            error = APITimeoutError(f"{what} timed out: {detail}", request=request)
        else:
            error = APIConnectionError(f"{what} failed: {detail}", request=request)
        raise Retryable(Attempt(Failure.LOST), error) from self._safe_cause(exc)

    def _safe_cause(self, exc: BaseException) -> BaseException | None:
        """`exc` to chain from, or None when its text holds the key: a traceback prints the
        cause, and a transport's error may quote the request's headers."""
        key = self.settings.api_key
        if key in str(exc) or key in repr(exc.args):
            return None
        return exc

    def _decode(self, response: httpx.Response, call: Call) -> dict[str, Any]:
        status = response.status_code
        body: object
        try:
            body = response.json()
        # Not JSON, not UTF-8 (a proxy's page, a truncated answer), or nested deeper than
        # the parser's recursion limit (a hostile or broken server).
        except (ValueError, RecursionError):
            body = _NOT_JSON
        if not isinstance(body, dict):
            # Only an object is the API's envelope; anything else is kept as the raw text
            # (a parsed `null` or `42` would lose what the server actually said).
            if 200 <= status < 300:
                what = "a non-JSON body" if body is _NOT_JSON else "JSON that is not an object"
                if call.generation:
                    raise self._unknown(call, response, f"with {what}")
                raise APIResponseValidationError(
                    f"{call.method} {response.request.url.path} answered {status} with "
                    f"{what}: {self.preview(response.text)}",
                    response=response,
                    body=response.text,
                )
            body = response.text
        elif 200 <= status < 300:
            refused = body.get("success") is False or body.get("status") is False
            # A paid POST whose answer names a generation created it, whatever else it says.
            if refused and not (call.generation and submitted_id(body) is not None):
                raise self._status_error(response, body, _retry_after(response))
            return body
        if call.generation and status >= 500 and not _is_envelope(body):
            # A gateway's 502/504/524 page: Kolbo may have created the generation before
            # the gateway gave up on it. Only Kolbo's own error envelope is a refusal.
            raise self._unknown(call, response, "from a gateway, not from Kolbo")
        retry_after = _retry_after(response)
        error = self._status_error(response, body, retry_after)
        if retryable_status(status):
            # Honoured on every retried answer, not only a 429: a 503 asking for 30 s gets it.
            raise Retryable(Attempt(Failure.STATUS, status, retry_after), error)
        raise error

    def _unknown(
        self, call: Call, response: httpx.Response, how: str
    ) -> SubmissionOutcomeUnknownError:
        request = response.request
        _redact(request)
        return SubmissionOutcomeUnknownError(
            f"{call.method} {request.url.path} was answered {response.status_code} {how}: "
            f"{self.preview(response.text)}. The generation may have been created "
            "and charged; it was NOT resubmitted. Check your Kolbo dashboard before "
            "submitting it again.",
            request=request,
            response=response,
        )

    def _status_error(
        self, response: httpx.Response, body: object, retry_after: float | None
    ) -> APIStatusError:
        if isinstance(body, str):
            # Masked before the message cuts it short: a cut key would no longer be found.
            body = self.redact(body)
        error = make_status_error(response, body, retry_after=retry_after)
        if 300 <= response.status_code < 400:
            location = response.headers.get("location", "?")
            error.message = f"{error.message}: redirect to {location} not followed"
        redacted = self.redact(error.message)
        if redacted != error.message:
            error.message = redacted
        error.args = (error.message,)
        return error


class Retryable(Exception):
    """Internal: a failed attempt that the retry rule gets to judge (the pipeline's, or the
    shared poller's for a status poll)."""

    def __init__(self, attempt: Attempt, error: KolboError) -> None:
        super().__init__(str(error))
        self.attempt = attempt
        self.error = error


_CUT_SHORT = SubmissionOutcomeUnknownError("the event loop stopped while it was on the wire")


def _log_orphan(call: Call, result: object, failure: Exception | None) -> None:
    """Say what became of a paid POST whose caller stopped waiting for it."""
    if failure is None:
        generation_id = getattr(result, "generation_id", None)
        logger.warning(
            "%s %s was answered after its caller stopped waiting: generation %s was created "
            "and charged. Re-attach with client.generations.attach(%r).",
            call.method,
            call.path,
            generation_id,
            generation_id,
        )
        return
    error = failure.error if isinstance(failure, Retryable) else failure
    if isinstance(failure, Retryable) and failure.attempt.failure is Failure.NOT_SENT:
        return  # never reached Kolbo: nothing was charged
    if isinstance(error, (SubmissionOutcomeUnknownError, APIConnectionError)):
        logger.warning(
            "%s %s failed after its caller stopped waiting, and may have created a charged "
            "generation; it was not resubmitted: %s",
            call.method,
            call.path,
            error,
        )


def _is_envelope(body: object) -> bool:
    """Whether an error answer is Kolbo's own ``{success: false, error, code}`` envelope
    (or its 429 form ``{status: false, message}``), rather than a gateway's page."""
    if not isinstance(body, dict):
        return False
    refused = body.get("success") is False or body.get("status") is False
    return refused and any(isinstance(body.get(key), str) for key in ("error", "code", "message"))


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"), now_epoch=time.time())


def _redact(request: httpx.Request) -> None:
    if "X-API-Key" in request.headers:
        request.headers["X-API-Key"] = _REDACTED


def _preview(body: object, limit: int = 120) -> str:
    text = body if isinstance(body, str) else repr(body)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
