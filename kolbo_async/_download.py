"""Streaming a result file from the CDN to disk, atomically, without the API key.

The file grows in a temporary file beside the target and is put in place only when it is
complete and of the announced length, so the target never holds half a video; without
``overwrite`` the last step cannot replace a file that appeared meanwhile. A transfer that
breaks is resumed with a ``Range`` request where the CDN allows it. CDN transfers have their
own connections and their own cap (`Transfers`), so API calls never wait behind them.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import anyio
import httpx

from ._cdn_checks import (
    SNIFF_BYTES,
    Validators,
    content_length,
    content_range,
    continuation_document_kind,
    document_kind,
    is_encoded,
    refused_type,
    undecodable_encoding,
)
from ._clock import Clock
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    KolboError,
    make_status_error,
)
from ._pipeline import Pipeline
from ._retries import Attempt, Failure, retry_delay

__all__ = ["DeadlineExceeded", "TargetExistsError", "Transfers", "download_to"]

_BINARY = getattr(os, "O_BINARY", 0)  # Windows

logger = logging.getLogger("kolbo_async")


class DeadlineExceeded(Exception):
    """Internal: a download's deadline passed; the handle turns it into
    `GenerationTimeoutError` with the id to re-attach."""


class TargetExistsError(KolboError, FileExistsError):
    """A file appeared at a download's target while it ran, and ``overwrite`` was False.

    The file found there is left untouched and nothing of the download stays on disk.
    """

    def __init__(self, target: Path) -> None:
        message = (
            f"{str(target)!r} appeared while the download ran and was left untouched; "
            "pass overwrite=True to replace it"
        )
        KolboError.__init__(self, message)
        self.errno = errno.EEXIST
        self.strerror = message
        self.filename = str(target)

    def __str__(self) -> str:
        return self.message


class Transfers:
    """The CDN side of one client: its own connections and its own cap.

    API calls and downloads never share a connection pool, so slow downloads cannot make an
    API call wait for a pool slot. The SDK's client is made on the first download (most
    programs never download) and closed with the client. With a user's `http_client`,
    downloads go through that client instead (its proxies, certificates and mocks apply),
    still under their own cap; sizing its pool for both is then the user's call.
    """

    __slots__ = ("_closed", "_http", "_limit", "_owned", "_transport", "limiter")

    def __init__(
        self,
        *,
        limit: int,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._limit = limit
        self._transport = transport
        self._http = http_client
        self._owned = http_client is None
        self._closed = False
        # Downloads past the cap wait for a slot; their wait counts against their deadline.
        self.limiter = anyio.Semaphore(limit, fast_acquire=True)

    def client(self) -> httpx.AsyncClient:
        """The client that fetches CDN files, made on first use."""
        if self._closed:
            raise KolboError("This client is closed; create a new one to download.")
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                limits=httpx.Limits(
                    max_connections=self._limit, max_keepalive_connections=self._limit
                ),
            )
        return self._http

    async def aclose(self) -> None:
        """Close the connections the SDK opened for downloads (never a user's client)."""
        self._closed = True
        if self._owned and self._http is not None:
            await self._http.aclose()


async def download_to(
    pipeline: Pipeline,
    transfers: Transfers,
    url: str,
    target: Path,
    *,
    overwrite: bool,
    on_progress: Callable[[int, int | None], object] | None,
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
    directory = target.parent if str(target.parent) else Path(".")
    temp = directory / f".{target.name}.{secrets.token_hex(6)}.part"
    try:
        # Not tempfile.mkstemp: its 0600 mode would stick to the video; this honours the umask.
        fd = await anyio.to_thread.run_sync(
            lambda: os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o666)
        )
    except OSError as exc:
        raise KolboError(f"Cannot write the download beside {str(target)!r}: {exc}") from exc
    file = os.fdopen(fd, "wb")
    try:
        # The clock's deadline is checked at every step of the transfer (so time a virtual
        # clock jumps counts); the scope also stops a transfer stuck between steps.
        with anyio.move_on_after(remaining if remaining is not None else float("inf")) as scope:
            await _fetch(pipeline, transfers, where, file, on_progress, deadline)
        if scope.cancelled_caught:
            raise DeadlineExceeded
        await anyio.to_thread.run_sync(_finish, file)
        await anyio.to_thread.run_sync(_place, temp, target, overwrite)
    except BaseException as exc:
        file.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: temp.unlink(missing_ok=True))
        if isinstance(exc, OSError) and not isinstance(exc, KolboError):
            raise KolboError(f"Download to {str(target)!r} failed: {exc}") from exc
        raise
    logger.debug("downloaded %s to %s", where.copy_with(query=None), target)
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


def _place(temp: Path, target: Path, overwrite: bool) -> None:
    """Put the finished `temp` at `target`; without `overwrite`, never replace a file."""
    if overwrite:
        os.replace(temp, target)
        return
    link = getattr(os, "link", None)
    try:
        if link is None:
            raise NotImplementedError
        # A hard link fails when the name is taken, atomically: what appeared at `target`
        # since the check before the wait stays as it is.
        link(temp, target)
    except FileExistsError:
        raise TargetExistsError(target) from None
    except (OSError, NotImplementedError):
        _place_without_link(temp, target)
        return
    temp.unlink(missing_ok=True)


def _place_without_link(temp: Path, target: Path) -> None:
    # A filesystem without hard links (FAT, exFAT, some network shares).
    if os.name == "nt":
        # Windows' rename never replaces: it fails when the name is taken.
        try:
            os.rename(temp, target)
        except FileExistsError:
            raise TargetExistsError(target) from None
        return
    # POSIX rename replaces, so the name is claimed first with O_EXCL (which fails when
    # anything is there), then the finished file is renamed onto that empty claim. Readers
    # may see an empty file for that instant, never half a video.
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o666)
    except FileExistsError:
        raise TargetExistsError(target) from None
    os.close(fd)
    try:
        os.replace(temp, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


#: Bytes gathered before they are handed to the writer thread.
_BATCH = 1024 * 1024


class _Writer:
    """Writes batches in a thread of its own while the loop goes on reading.

    Off the loop, so a slow disk never stalls other requests; overlapped, so disk and network
    work at once; bounded (one batch written, one queued, one filling), so memory stays flat
    whatever the file size.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._batch: list[bytes] = []
        self._size = 0
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    async def add(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._size += len(chunk)
        if self._size >= _BATCH:
            await self._hand_over()

    async def _hand_over(self) -> None:
        batch, self._batch, self._size = self._batch, [], 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kolbo-download", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            await anyio.to_thread.run_sync(self._queue.put, batch)
        self._check()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._file.writelines(batch)
                except BaseException as exc:  # reported on the loop side
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def finish(self) -> None:
        """Write what is left and wait until every byte is in the file."""
        if self._thread is None:
            if self._batch:
                await anyio.to_thread.run_sync(self._file.writelines, self._batch)
                self._batch = []
            return
        if self._batch:
            await self._hand_over()
        await anyio.to_thread.run_sync(self._queue.put, None)
        await anyio.to_thread.run_sync(self._thread.join)
        self._thread = None
        self._check()


def _rewind(file: IO[bytes]) -> None:
    file.seek(0)
    file.truncate()


def _finish(file: IO[bytes]) -> None:
    # No fsync: the rename already guarantees that readers never see half a file, and an
    # fsync of a 200 MB video costs a third of the transfer time on a local disk.
    file.flush()
    file.close()


class _Transfer:
    """What the temporary file holds so far, and what it must hold to be the whole file."""

    __slots__ = ("done", "expected", "if_range", "validators")

    def __init__(self) -> None:
        self.done = 0
        # The whole file's size as the CDN announced it (a 200's Content-Length, the total in
        # a Content-Range): a file shorter than that is never placed.
        self.expected: int | None = None
        # The version of the file the bytes so far come from, as the answer that started the
        # file named it: a slice of another version is never spliced on.
        self.validators: Validators | None = None
        self.if_range: str | None = None

    def start_over(self) -> None:
        """Forget the bytes so far and the version they came from."""
        self.done, self.expected = 0, None
        self.validators, self.if_range = None, None


class _StartOver(Exception):
    """The answer cannot be spliced onto what the file holds: fetch the file again, whole."""


async def _fetch(
    pipeline: Pipeline,
    transfers: Transfers,
    url: httpx.URL,
    file: IO[bytes],
    on_progress: Callable[[int, int | None], object] | None,
    deadline: float | None,
) -> None:
    pipeline.ensure_open()
    http = transfers.client()
    clock = pipeline.clock
    shown = url.copy_with(query=None)  # signed URLs carry secrets in their query
    state = _Transfer()
    retries_done = 0
    while True:
        headers = {"Accept-Encoding": "identity"}
        if state.done:
            headers["Range"] = f"bytes={state.done}-"
            if state.if_range is not None:
                # The CDN then answers the rest only if the file is still the same version,
                # else the whole new file (a 200), never a slice of it.
                headers["If-Range"] = state.if_range
        # No key here, ever: result URLs live on a CDN, often signed, that must not see it.
        request = http.build_request("GET", url, headers=headers, timeout=pipeline.settings.timeout)
        try:
            async with transfers.limiter:
                _check_deadline(clock, deadline)
                response = await _send(http, request, shown)
                try:
                    _check_deadline(clock, deadline)
                    await _check_answer(response, shown)
                    try:
                        start, stop = _place_of(response, state, shown)
                        if start != state.done:
                            # A 200 to a resume: start over rather than append a second copy.
                            await anyio.to_thread.run_sync(_rewind, file)
                            state.done = 0
                        _check_version(response, state)
                        await _receive(response, file, state, on_progress, clock, deadline, shown)
                        whole = _complete(state, start, stop)
                    except _StartOver as exc:
                        # Bytes from elsewhere in the file, or too many, would corrupt it.
                        await anyio.to_thread.run_sync(_rewind, file)
                        state.start_over()
                        raise httpx.ReadError(str(exc)) from None
                finally:
                    await response.aclose()
            if whole:
                if state.done == 0:
                    raise APIResponseValidationError(
                        f"The CDN answered {response.status_code} for {shown} with an empty "
                        "body, not the media",
                        response=response,
                        body=b"",
                    )
                return
            # A CDN that serves a large file in capped slices: each slice came whole and
            # moved the file on, so the next is asked for at once, costing no retry.
            logger.debug(
                "download has %d of %s bytes; asking for the rest", state.done, state.expected
            )
        except httpx.UnsupportedProtocol as exc:
            # A redirect to file:// or another scheme: no retry can change that.
            raise KolboError(f"Download of {shown} was redirected to a non-http(s) URL") from exc
        except httpx.TooManyRedirects as exc:
            raise APIConnectionError(
                f"Download of {shown} was redirected too many times (a redirect loop?)",
                request=request,
            ) from exc
        except (httpx.TransportError, APIStatusError) as exc:
            status = exc.status_code if isinstance(exc, APIStatusError) else None
            attempt = Attempt(Failure.STATUS if status else Failure.LOST, status)
            delay = retry_delay(
                attempt,
                is_generation=False,
                retries_done=retries_done,
                max_retries=pipeline.settings.max_retries,
                rng=pipeline.rng,
            )
            if delay is None:
                if isinstance(exc, APIStatusError):
                    raise
                raise APIConnectionError(
                    f"Download of {shown} failed: {exc}", request=request
                ) from exc
            if deadline is not None and clock.now() + delay >= deadline:
                raise DeadlineExceeded from exc  # the retry could not finish in time
            retries_done += 1
            logger.debug(
                "download broke at %d bytes (%s); resuming in %.2f s", state.done, exc, delay
            )
            await clock.sleep(delay)
        except httpx.HTTPError as exc:
            raise APIConnectionError(f"Download of {shown} failed: {exc}", request=request) from exc
        except RuntimeError as exc:  # httpx's "client has been closed"
            pipeline.ensure_open()
            raise KolboError(f"Download of {shown} failed: {exc}") from exc


async def _send(
    http: httpx.AsyncClient, request: httpx.Request, shown: httpx.URL
) -> httpx.Response:
    """Send `request`, following redirects here so that each target is checked first.

    httpx gives a ``file:///x`` Location the current host and sends it on; a CDN that
    answers everything then looks like a redirect loop. Here a non-http(s) target ends the
    download before anything is sent to it.
    """
    for _ in range(http.max_redirects + 1):
        response = await http.send(request, stream=True, follow_redirects=False)
        following = response.next_request
        if following is None:
            return response
        await response.aclose()
        if following.url.scheme not in ("http", "https"):
            raise KolboError(f"Download of {shown} was redirected to a non-http(s) URL")
        request = following
    raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=request)


def _place_of(
    response: httpx.Response, state: _Transfer, shown: httpx.URL
) -> tuple[int, int | None]:
    """Where `response`'s body goes in the file: (start, stop; None when it does not say).

    Updates `state.expected` from what the answer announces. Raises `_StartOver` when the
    answer cannot be spliced onto what the file holds, `APIResponseValidationError` when
    no answer of this kind could ever complete it.
    """
    if response.status_code != 206:
        if is_encoded(response):
            return 0, None  # its length counts encoded bytes; what we write is decoded
        length = content_length(response)
        if length is not None:
            state.expected = length
        return 0, length
    if is_encoded(response):
        raise _unusable(response, shown, "in an encoding (its offsets are the encoded ones)")
    header = response.headers.get("content-range")
    if header is None:
        # RFC 9110 requires Content-Range on a 206; without it the body is taken as the
        # range asked for, which only the size an earlier answer announced can check.
        if state.expected is None:
            raise _unusable(response, shown, "without the file's size")
        length = content_length(response)
        return state.done, None if length is None else state.done + length
    span = content_range(header)
    if span is None:
        raise _StartOver(f"the CDN answered an unreadable Content-Range {header[:60]!r}")
    if span.start != state.done:
        raise _StartOver(f"the CDN answered bytes from {span.start}, not {state.done}")
    total = span.total if span.total is not None else state.expected
    if total is None:
        raise _unusable(response, shown, "without the file's size")
    if state.expected is not None and total != state.expected:
        raise _StartOver(f"the CDN announced {total} bytes for a file of {state.expected}")
    state.expected = total
    return span.start, span.stop


def _check_version(response: httpx.Response, state: _Transfer) -> None:
    """Note the version of the file an answer that starts it carries; raise `_StartOver`
    for a slice of another version (the file changed on the CDN during the download).

    A CDN that names no version (no ETag, no Last-Modified) is trusted as before.
    """
    now = Validators.of(response)
    if state.done == 0:
        old = state.validators
        if response.status_code != 206 and old is not None and old.changed(now):
            # The whole of a new version: the size the old one announced is not its own.
            state.expected = None if is_encoded(response) else content_length(response)
        state.validators = now
        state.if_range = now.if_range(response.headers.get("date"))
        return
    if state.validators is not None:
        change = state.validators.changed(now)
        if change is not None:
            raise _StartOver(f"the file changed on the CDN during the download ({change})")


def _unusable(response: httpx.Response, shown: httpx.URL, how: str) -> APIResponseValidationError:
    return APIResponseValidationError(
        f"The CDN answered part of {shown} (206) {how}; it cannot be saved as the whole file",
        response=response,
        body=None,
    )


def _complete(state: _Transfer, start: int, stop: int | None) -> bool:
    """Whether the file is whole; False for a slice that came whole and moved the file on.

    Raises `httpx.ReadError` for a transfer that broke (resumed within the retry budget),
    `_StartOver` for one that brought more than announced.
    """
    done, expected = state.done, state.expected
    if (stop is not None and done > stop) or (expected is not None and done > expected):
        raise _StartOver(f"got {done} bytes, more than announced")
    if stop is not None and done < stop:
        raise httpx.ReadError(f"the answer broke after {done - start} of {stop - start} bytes")
    if expected is None or done == expected:
        return True
    if stop is None or done == start:
        raise httpx.ReadError(f"got {done} of {expected} bytes")
    return False


async def _receive(
    response: httpx.Response,
    file: IO[bytes],
    state: _Transfer,
    on_progress: Callable[[int, int | None], object] | None,
    clock: Clock,
    deadline: float | None,
    shown: httpx.URL,
) -> None:
    """Append `response`'s body to `file`, counting it in `state` as it arrives."""
    if on_progress is not None:
        on_progress(state.done, state.expected)
    # A body that starts the file is sniffed in full; a slice that continues it can hold any
    # bytes, so only the unmistakable openings of a page count there.
    sniff = document_kind if state.done == 0 else continuation_document_kind
    head: bytearray | None = bytearray()
    refusal: APIResponseValidationError | None = None
    drained = 0
    writer = _Writer(file)
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
            if on_progress is not None:
                on_progress(state.done, state.expected)
            _check_deadline(clock, deadline)
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


async def _check_answer(response: httpx.Response, shown: httpx.URL) -> None:
    """Raise unless `response` can be the media: a 2xx that is not a document, in an
    encoding httpx can undo."""
    if response.url.scheme not in ("http", "https"):
        raise KolboError(f"Download of {shown} was redirected to a non-http(s) URL")
    if response.status_code >= 300:
        await response.aread()
        raise _status_error(response)
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


def _status_error(response: httpx.Response) -> APIStatusError:
    return make_status_error(response, response.text, retry_after=None)
