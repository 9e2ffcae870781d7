"""Downloading a result file from the CDN: the HTTP side, without the API key.

Each request goes out through the one send path (`_send.stream`) with the CDN's own
connections and cap (`Transfers`), so API calls never wait behind downloads. A transfer that
breaks is resumed with a ``Range`` request where the CDN allows it (`_resume` decides where
an answer's bytes go), and an answer that is not the media (a sign-in page, an error
document) is refused before a byte of it is kept. The bytes land in a temporary file that is
put in place only when whole (`_download_file`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import IO

import anyio
import httpx

from ._cdn_checks import (
    SNIFF_BYTES,
    content_length,
    continuation_document_kind,
    document_kind,
    refused_type,
    undecodable_encoding,
)
from ._clock import Clock
from ._download_file import Writer, finish, open_temp, place, rewind
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    KolboError,
    make_status_error,
    rate_limited,
)
from ._pipeline import Pipeline
from ._resume import StartOver, Transfer, check_version, complete, place_of
from ._send import Answer, Retries, Retryable, Unanswered, stream
from ._transfers import Transfers

__all__ = ["DeadlineExceeded", "download_to"]

logger = logging.getLogger("kolbo_async")

ProgressCallback = Callable[[int, int | None], object]


class DeadlineExceeded(Exception):
    """Internal: a download's deadline passed; the handle turns it into
    `GenerationTimeoutError` with the id to re-attach."""


async def download_to(
    pipeline: Pipeline,
    transfers: Transfers,
    url: str,
    target: Path,
    *,
    overwrite: bool,
    on_progress: ProgressCallback | None,
    deadline: float | None,
) -> Path:
    """Stream `url` to `target` before `deadline` (on the pipeline's clock; None: no bound).

    Raises `DeadlineExceeded` when the deadline passes, `TargetExistsError` when a file
    appeared at `target` and `overwrite` is False, `APIStatusError` for an error answer,
    `APIResponseValidationError` for an answer that is not the media, `APIConnectionError`
    when the transfer keeps breaking, `KolboError` for a URL that is not http(s) or a disk
    error. Whatever happens, nothing but the finished file is left behind.
    """
    where = _checked_url(url)
    clock = pipeline.clock
    remaining = None if deadline is None else deadline - clock.now()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded
    temp, file = await open_temp(target)
    try:
        # The clock's deadline is checked at every step of the transfer (so time a virtual
        # clock jumps counts); the scope also stops a transfer stuck between steps.
        with anyio.move_on_after(remaining if remaining is not None else float("inf")) as scope:
            await _Fetch(pipeline, transfers, where, file, on_progress, deadline, target).run()
        if scope.cancelled_caught:
            raise DeadlineExceeded
        await anyio.to_thread.run_sync(finish, file)
        await anyio.to_thread.run_sync(place, temp, target, overwrite)
    except BaseException as exc:
        file.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: temp.unlink(missing_ok=True))
        if isinstance(exc, OSError) and not isinstance(exc, KolboError):
            raise KolboError(f"Download to {str(target)!r} failed: {exc}") from exc
        raise
    logger.debug("downloaded %s to %s", where.copy_with(query=None, userinfo=b""), target)
    return target


def _checked_url(url: str) -> httpx.URL:
    # A result URL comes from the server: anything but http(s) is refused before any
    # request, since retrying it could never help.
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise KolboError(f"The result URL {url[:80]!r} is not a valid URL; not fetched") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        shown = parsed.copy_with(query=None, fragment=None)
        raise KolboError(f"The result URL {str(shown)[:80]!r} is not an http(s) URL; not fetched")
    return parsed


class _Fetch:
    """One download's requests: the file, then the rest of it after each break, until whole."""

    __slots__ = ("clock", "deadline", "file", "on_progress", "pipeline", "shown", "state",
                 "target", "transfers", "url")  # fmt: skip

    def __init__(
        self,
        pipeline: Pipeline,
        transfers: Transfers,
        url: httpx.URL,
        file: IO[bytes],
        on_progress: ProgressCallback | None,
        deadline: float | None,
        target: Path,
    ) -> None:
        self.pipeline = pipeline
        self.target = target  # named in the hooks' DownloadProgress
        self.transfers = transfers
        self.url = url
        self.file = file
        self.on_progress = on_progress
        self.deadline = deadline
        self.clock = pipeline.clock
        self.shown = url.copy_with(query=None)  # signed URLs carry secrets in their query
        self.state = Transfer()

    async def run(self) -> None:
        pipeline, clock, deadline = self.pipeline, self.clock, self.deadline
        retries = Retries(
            max_retries=pipeline.settings.max_retries,
            rng=pipeline.rng,
            clock=clock,
            generation=False,
        )
        while True:
            pipeline.ensure_open()
            http = self.transfers.client()
            await self._admit()
            # No key here, ever: result URLs live on a CDN, often signed, that must not see it.
            request = http.build_request(
                "GET", self.url, headers=self.state.headers(), timeout=pipeline.settings.timeout
            )
            try:
                if await self._attempt(http, request):
                    return
                # A CDN that serves a large file in capped slices: each slice came whole and
                # moved the file on, so the next is asked for at once, costing no retry.
                logger.debug(
                    "download has %d of %s bytes; asking for the rest",
                    self.state.done,
                    self.state.expected,
                )
            except Retryable as failed:
                delay = retries.delay(failed)
                if deadline is not None and clock.now() + delay >= deadline:
                    asked = failed.attempt
                    if asked.status_code == 429 and asked.retry_after is not None:
                        # The CDN asked for longer than the caller has: its advice, as polling
                        # gives it, rather than a timeout that has not happened yet.
                        raise rate_limited(failed.error, asked.retry_after) from None
                    raise DeadlineExceeded from failed.error  # the retry could not finish in time
                logger.debug(
                    "download broke at %d bytes (%s); resuming in %.2f s",
                    self.state.done,
                    failed.error,
                    delay,
                )
                if pipeline.hooks:
                    from ._hooks import retrying

                    attempt = retries.done  # counted by delay(): the attempt that failed
                    retrying(pipeline.hooks, "GET", self.shown.path, attempt, delay, failed.error)
                await retries.wait(failed, delay)

    async def _admit(self) -> None:
        """Wait out a 429's cooldown of the CDN host, unless it outlasts the deadline."""
        clock, deadline = self.clock, self.deadline
        wait = self.transfers.delay(self.url.host, clock.now())
        if wait > 0:
            if deadline is not None and clock.now() + wait >= deadline:
                raise DeadlineExceeded
            await clock.sleep(wait)
        _check_deadline(clock, deadline)

    def _cool_down(self, retry_after: float | None) -> None:
        host, now = self.url.host, self.clock.now()
        self.transfers.cool_down(host, now, retry_after)
        if self.pipeline.hooks:
            from ._hooks import CooldownStarted, emit

            seconds = self.transfers.delay(host, now)
            emit(self.pipeline.hooks, CooldownStarted(None, host, seconds))

    async def _attempt(self, http: httpx.AsyncClient, request: httpx.Request) -> bool:
        """One request; True when the file is whole. Raises `Retryable` for what the retry
        rule judges (no answer, a transfer that broke, a 5xx, a 429, ...)."""
        shown = self.shown
        try:
            return await stream(http, request, self.transfers.limiter, self._cool_down, self._take)
        except Unanswered as lost:
            failed = f"Download of {shown} failed: {lost.reason()}"
            error = APIConnectionError(failed, request=request)
            raise Retryable(lost.attempt, error) from lost.cause
        except httpx.UnsupportedProtocol as exc:
            # A redirect to file:// or another scheme: no retry can change that.
            raise KolboError(f"Download of {shown} was redirected to a non-http(s) URL") from exc
        except httpx.TooManyRedirects as exc:
            raise APIConnectionError(
                f"Download of {shown} was redirected too many times (a redirect loop?)",
                request=request,
            ) from exc
        except RuntimeError as exc:
            self.pipeline.ensure_open()
            raise KolboError(f"Download of {shown} failed: {exc}") from exc

    async def _take(self, answer: Answer) -> bool:
        """Take `answer`'s body into the file; True when the file is whole."""
        response, state, file = answer.response, self.state, self.file
        _check_deadline(self.clock, self.deadline)
        await _check_answer(answer, self.shown)
        try:
            start, stop = place_of(response, state, self.shown)
            if start != state.done:
                # A 200 to a resume: start over rather than append a second copy.
                await anyio.to_thread.run_sync(rewind, file)
                state.done = 0
            check_version(response, state)
            await self._receive(response)
            whole = complete(state, start, stop)
        except StartOver as exc:
            # Bytes from elsewhere in the file, or too many, would corrupt it.
            await anyio.to_thread.run_sync(rewind, file)
            state.start_over()
            raise httpx.ReadError(str(exc)) from None
        if whole and state.done == 0:
            raise APIResponseValidationError(
                f"The CDN answered {response.status_code} for {self.shown} with an empty "
                "body, not the media",
                response=response,
                body=b"",
            )
        return whole

    async def _receive(self, response: httpx.Response) -> None:
        """Append `response`'s body to the file, counting it in `state` as it arrives."""
        state, on_progress, shown = self.state, self.on_progress, self.shown
        hooks = self.pipeline.hooks
        if hooks:
            from ._hooks import DownloadProgress, emit

            path = str(self.target)
            emit(hooks, DownloadProgress(path, state.done, state.expected))
        if on_progress is not None:
            on_progress(state.done, state.expected)
        # A body that starts the file is sniffed in full; a slice that continues it can hold
        # any bytes, so only the unmistakable openings of a page count there.
        sniff = document_kind if state.done == 0 else continuation_document_kind
        head: bytearray | None = bytearray()
        refusal: APIResponseValidationError | None = None
        drained = 0
        writer = Writer(self.file)
        try:
            async for chunk in response.aiter_bytes():
                if head is not None:
                    head += chunk[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:
                        refusal, head = _document_error(sniff, bytes(head), response, shown), None
                if refusal is not None:
                    # A refused page is read to its end while it is small: leaving httpx's
                    # stream half-read abandons its generators to the GC (a ResourceWarning).
                    drained += len(chunk)
                    if drained > _DRAIN:
                        raise refusal
                    continue
                state.done += len(chunk)
                await writer.add(chunk)
                if hooks:
                    emit(hooks, DownloadProgress(path, state.done, state.expected))
                if on_progress is not None:
                    on_progress(state.done, state.expected)
                _check_deadline(self.clock, self.deadline)
            if head is not None:
                refusal = _document_error(sniff, bytes(head), response, shown)
            if refusal is not None:
                raise refusal
        except httpx.DecodingError as exc:
            raise APIResponseValidationError(
                f"The CDN's answer for {shown} cannot be decoded "
                f"(Content-Encoding {response.headers.get('content-encoding')!r}): {exc}",
                response=response,
                body=None,
            ) from exc
        finally:
            # Whatever arrived is on disk before a resume asks for the rest.
            with anyio.CancelScope(shield=True):
                await writer.finish()


#: How much of a refused page is read to its end rather than abandoned half-read.
_DRAIN = 256 * 1024


def _document_error(
    sniff: Callable[[bytes, httpx.Response], str | None],
    head: bytes,
    response: httpx.Response,
    shown: httpx.URL,
) -> APIResponseValidationError | None:
    """The error for a body that opens with `head`, when `sniff` finds a document there."""
    what = sniff(head, response)
    if what is None:
        return None
    text = head.decode("utf-8", "replace")
    return APIResponseValidationError(
        f"The CDN answered {response.status_code} for {shown} with {what}, not the media: "
        f"{' '.join(text.split())[:120]}",
        response=response,
        body=text,
    )


def _check_deadline(clock: Clock, deadline: float | None) -> None:
    if deadline is not None and clock.now() >= deadline:
        raise DeadlineExceeded


async def _check_answer(answer: Answer, shown: httpx.URL) -> None:
    """Raise unless `answer` can be the media: a 2xx that is not a document, in an encoding
    httpx can undo. An error answer the retry rule judges comes out as `Retryable`."""
    response = answer.response
    if response.status_code >= 300:
        await response.aread()
        error = make_status_error(response, response.text, retry_after=answer.retry_after)
        if answer.retry is not None:
            raise Retryable(answer.retry, error)
        raise error
    refused = refused_type(response)
    if refused is not None:
        # A sign-in page or an XML/JSON error served with 200 would otherwise be saved as
        # the video.
        what, kind = refused
        page = await _peek(response)
        raise APIResponseValidationError(
            f"The CDN answered {response.status_code} for {shown} with {what} "
            f"({kind}), not the media: {' '.join(page.split())[:120]}",
            response=response,
            body=page,
        )
    encoding = undecodable_encoding(response)
    if encoding is not None:
        # httpx passes an encoding it cannot undo through as is: the file would hold the
        # encoded bytes. The SDK asked for identity, so no retry will help.
        raise APIResponseValidationError(
            f"The CDN's answer for {shown} cannot be decoded (Content-Encoding {encoding!r})",
            response=response,
            body=None,
        )


async def _peek(response: httpx.Response, limit: int = 64 * 1024) -> str:
    # Read only a small page whose size is announced: a big body mislabelled as HTML is not
    # worth holding, and stopping a stream half-way leaves httpx's iterators to the GC.
    length = content_length(response)
    if length is None or length > limit:
        return ""
    try:
        return (await response.aread()).decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""  # the page is only quoted in the error
