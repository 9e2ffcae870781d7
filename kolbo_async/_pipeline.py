"""The API side of the send path: pace, send, read, retry, and see a paid POST to its answer.

Every API call of every client and handle goes through `Pipeline.call` (a status poll the
shared poller paces goes through `Pipeline.once`); both send through `_send.send`, the one
send path, and read the answer with `_answers`. Decisions come from `_retries.py` and
`_pacing.py`, so this module only acts on them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import httpx

from ._answers import mask_key, raise_unanswered, read, unreadable
from ._clock import Clock
from ._config import Settings
from ._ctrl_c import beyond_ctrl_c
from ._exceptions import APIConnectionError, KolboError, SubmissionOutcomeUnknownError
from ._pacing import GENERATE, REQUEST, Pacer
from ._retries import Failure
from ._runtime import current_loop, forks, running_asyncio
from ._send import CoolDown, Retries, Retryable, Unanswered, send

if TYPE_CHECKING:
    from ._hooks import Hook
    from ._multipart import Form

__all__ = ["Call", "Lifecycle", "Pipeline", "log_orphan"]

logger = logging.getLogger("kolbo_async")

T = TypeVar("T")


# Internal classes here are plain slotted classes rather than attrs ones: each attrs class
# costs a fraction of a millisecond at import, and `import kolbo_async` time is measured.


class Call:
    """One API request, before any attempt is made.

    `generation` marks a POST of the generation bucket (a paid generation, a media upload),
    retried only when Kolbo cannot have acted on it; `form` a multipart body sent instead of
    `json`; `url` the parsed URL of a call kept for reuse (a handle's status poll): parsing it
    once saves a third of httpx's own per-request cost.
    """

    __slots__ = ("form", "generation", "json", "method", "params", "path", "url")

    def __init__(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        generation: bool = False,
        url: httpx.URL | None = None,
        form: Form | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.json = json
        self.form = form
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

    __slots__ = ("_cool_generate", "_cool_request", "answers", "clock", "hooks", "http",
                 "lifecycle", "limiter", "pacer", "rng", "settings")  # fmt: skip

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
        hooks: tuple[Hook, ...] = (),
    ) -> None:
        self.settings = settings
        self.http = http
        self.pacer = pacer
        self.limiter = limiter
        self.clock = clock
        self.rng = rng
        self.lifecycle = lifecycle or Lifecycle()
        #: Called with each event (`_hooks`); empty: no event is even built.
        self.hooks = hooks
        #: The answers of a `capturing` copy's calls (a raw response's), else None.
        self.answers: list[httpx.Response] | None = None
        # What a 429 cools down: the bucket of the call it answered.
        self._cool_generate: CoolDown = partial(pacer.cool_down, GENERATE)
        self._cool_request: CoolDown = partial(pacer.cool_down, REQUEST)

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
            hooks=self.hooks,
        )

    def capturing(self) -> Pipeline:
        """A copy that keeps each answer it receives in `answers` (its request's key
        masked): one per raw-response call, so concurrent calls never mix theirs."""
        copy = self.with_settings(self.settings)
        copy.answers = []
        return copy

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
        retries: Retries | None = None
        while True:
            self.ensure_open()
            if admitted:
                admitted = False
            else:
                await self.pacer.admit(bucket)
            attempt = 1 if retries is None else retries.done + 1
            try:
                if call.generation:
                    return await self._paid_attempt(call, parse, attempt)
                return await self._attempt(call, parse, attempt)
            except Retryable as failed:
                if retries is None:
                    retries = Retries(
                        max_retries=self.settings.max_retries, rng=self.rng, clock=self.clock,
                        generation=call.generation,
                    )  # fmt: skip
                delay = retries.delay(failed)
                logger.debug(
                    "retrying %s %s in %.2f s (retry %d) after: %s",
                    call.method, call.path, delay, retries.done, failed.error,
                )  # fmt: skip
                if self.hooks:
                    from ._hooks import retrying

                    retrying(self.hooks, call.method, call.path, attempt, delay, failed.error)
                await retries.wait(failed, delay)

    async def _paid_attempt(
        self, call: Call, parse: Callable[[dict[str, Any]], T], attempt: int
    ) -> T:
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
            task = asyncio.ensure_future(self._land(call, parse, attempt, abandoned))
            try:
                outcome = await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    log_orphan(call, *task.result())
                else:
                    abandoned[0] = True  # the task reports it when it lands
                raise
        else:
            # trio: shielded, the caller waits for the answer; Ctrl-C ends only its wait.
            abandoned = [False]

            def left(landed: tuple[T | None, Exception | None] | None) -> None:
                if landed is not None:
                    log_orphan(call, *landed)
                else:
                    abandoned[0] = True  # `_land` reports it when it lands

            with anyio.CancelScope(shield=True):
                outcome = await beyond_ctrl_c(
                    partial(self._land, call, parse, attempt, abandoned), left=left
                )
            from anyio.lowlevel import checkpoint  # not loaded by `import anyio`

            try:
                await checkpoint()
            except BaseException:  # cancelled meanwhile, or trio's Ctrl-C: the id is logged
                log_orphan(call, *outcome)
                raise
        result, failure = outcome
        if failure is not None:
            raise failure
        return cast(T, result)  # set whenever failure is None

    async def _land(
        self,
        call: Call,
        parse: Callable[[dict[str, Any]], T],
        attempt: int,
        abandoned: list[bool] | None = None,
    ) -> tuple[T | None, Exception | None]:
        """The paid attempt itself, counted while on the wire; its failure is returned, to
        be judged once we know whether anyone still waits (`abandoned[0]`: nobody does)."""
        lifecycle = self.lifecycle
        lifecycle.paid_in_flight += 1
        outcome: tuple[T | None, Exception | None] | None = None
        try:
            outcome = (await self._attempt(call, parse, attempt), None)
        except Exception as exc:
            outcome = (None, exc)
        finally:
            if abandoned is not None and abandoned[0]:
                # None: the loop itself is going away under the POST (its outcome unknown).
                log_orphan(call, *(outcome or (None, _CUT_SHORT)))
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
        return await self._attempt(call, parse, 1)

    async def _attempt(self, call: Call, parse: Callable[[dict[str, Any]], T], attempt: int) -> T:
        settings = self.settings
        generation = call.generation
        # The key goes straight into the request (whose repr hides headers), never into a
        # local of its own: tools that show a traceback's locals (Sentry, pytest -l, rich)
        # would print it.
        request = self.http.build_request(
            call.method,
            call.url or settings.root + call.path,
            json=call.json,
            content=call.form,  # a multipart body: its files streamed afresh on each attempt
            params=call.params,
            headers={
                "X-API-Key": settings.api_key,
                "Accept": "application/json",
                **(call.form.headers() if call.form else {}),
            },
            timeout=settings.generation_timeout if generation else settings.timeout,
        )
        started = time.perf_counter()
        try:
            # Not streamed: the whole (small) answer is read and closed.
            answer = await send(
                self.http,
                request,
                self.limiter,
                self._cool_generate if generation else self._cool_request,
            )
        except BaseException as exc:  # no answer: a transport error, cancelled, closed
            if self.hooks:
                from ._hooks import request_done

                why = exc.cause if isinstance(exc, Unanswered) else exc
                request_done(self.hooks, call.method, call.path, attempt, started, None, why)
            if isinstance(exc, Unanswered):
                raise_unanswered(exc, request, generation=generation, settings=settings)
            raise
        response = answer.response
        if self.hooks:
            from ._hooks import request_done

            request_done(self.hooks, call.method, call.path, attempt, started, response)
        if self.answers is not None:
            mask_key(request)
            self.answers.append(response)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d (%.3f s)",
                call.method, request.url.path, response.status_code, time.perf_counter() - started,
            )  # fmt: skip
        try:
            body = read(answer, generation=generation, settings=settings)
            try:
                return parse(body)
            except (ValueError, RecursionError) as exc:
                raise unreadable(
                    response, body, exc, generation=generation, settings=settings
                ) from None
        except Exception:
            # The error keeps the response, and the response its request: not the key.
            mask_key(request)
            raise


_CUT_SHORT = SubmissionOutcomeUnknownError("the event loop stopped while it was on the wire")


def log_orphan(call: Call, result: object, failure: Exception | None) -> None:
    """Say what became of a paid POST whose caller stopped waiting for it: a generation's,
    or an upload's (a file stored in the media library: no generation was created)."""
    where, upload = f"{call.method} {call.path}", call.path.endswith("/media/upload")
    if failure is None:
        if upload:  # `result` is the `Media`: its URL is what to use the file by
            url = getattr(result, "url", None)
            logger.warning(_UPLOADED, where, url)
            return
        generation_id = getattr(result, "generation_id", None)
        logger.warning(_CREATED, where, generation_id, generation_id)
        return
    error = failure.error if isinstance(failure, Retryable) else failure
    if isinstance(failure, Retryable) and failure.attempt.failure is Failure.NOT_SENT:
        return  # never reached Kolbo: nothing was charged
    if isinstance(error, (SubmissionOutcomeUnknownError, APIConnectionError)):
        what = "stored the file in the media library" if upload else "created a charged generation"
        logger.warning(_LOST, where, what, error)


_UPLOADED = (
    "%s was answered after its caller stopped waiting: the file was stored in the media "
    "library as %s (an upload: no generation was created)."
)
_CREATED = (
    "%s was answered after its caller stopped waiting: generation %s was created and "
    "charged. Re-attach with client.generations.attach(%r)."
)
_LOST = "%s failed after its caller stopped waiting, and may have %s; it was not resubmitted: %s"
