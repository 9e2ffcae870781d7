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
from typing import IO, TYPE_CHECKING

import anyio
import httpx

from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    KolboError,
    make_status_error,
)
from ._retries import Attempt, Failure, retry_delay

if TYPE_CHECKING:
    from ._clock import Clock
    from ._pipeline import Pipeline

__all__ = ["TargetExistsError", "Transfers", "download_to"]

_BINARY = getattr(os, "O_BINARY", 0)  # Windows

#: Media types that mean "a web page", never the media: a CDN's sign-in or error page.
_PAGE_TYPES = ("text/html", "application/xhtml+xml")

logger = logging.getLogger("kolbo_async")


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
    from ._pipeline import DeadlineExceeded

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
            await _fetch(pipeline, where, file, on_progress, deadline)
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


async def _fetch(
    pipeline: Pipeline,
    url: httpx.URL,
    file: IO[bytes],
    on_progress: Callable[[int, int | None], object] | None,
    deadline: float | None,
) -> None:
    pipeline.ensure_open()
    transfers = pipeline.transfers
    http = transfers.client()
    clock = pipeline.clock
    shown = url.copy_with(query=None)  # signed URLs carry secrets in their query
    done = 0
    total: int | None = None
    retries_done = 0
    while True:
        headers = {"Accept-Encoding": "identity"}
        if done:
            headers["Range"] = f"bytes={done}-"
        # No key here, ever: result URLs live on a CDN, often signed, that must not see it.
        request = http.build_request(
            "GET", url, headers=headers, timeout=pipeline.settings.timeout
        )
        try:
            async with transfers.limiter:
                _check_deadline(clock, deadline)
                response = await http.send(request, stream=True, follow_redirects=True)
                try:
                    _check_deadline(clock, deadline)
                    await _check_answer(response, shown)
                    if done and response.status_code != 206:
                        # The CDN ignored the Range: start over rather than append a second copy.
                        await anyio.to_thread.run_sync(_rewind, file)
                        done = 0
                    start = _range_start(response) if response.status_code == 206 else None
                    if start is not None and start != done:
                        # Bytes from elsewhere in the file would corrupt it: ask again, whole.
                        await anyio.to_thread.run_sync(_rewind, file)
                        done = 0
                        raise httpx.ReadError("the CDN answered another range than asked")
                    total = _total(response, done)
                    if on_progress is not None:
                        on_progress(done, total)
                    writer = _Writer(file)
                    try:
                        async for chunk in response.aiter_bytes():
                            done += len(chunk)
                            await writer.add(chunk)
                            if on_progress is not None:
                                on_progress(done, total)
                            _check_deadline(clock, deadline)
                    except httpx.DecodingError as exc:
                        raise APIResponseValidationError(
                            f"The CDN's answer for {shown} cannot be decoded "
                            f"(Content-Encoding {response.headers.get('content-encoding')!r}): "
                            f"{exc}",
                            response=response,
                            body=None,
                        ) from exc
                    finally:
                        # Whatever arrived is on disk before a resume asks for the rest.
                        with anyio.CancelScope(shield=True):
                            await writer.finish()
                finally:
                    await response.aclose()
            if total is not None and done != total:
                raise httpx.ReadError(f"got {done} of {total} bytes")
            return
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
                from ._pipeline import DeadlineExceeded

                raise DeadlineExceeded from exc  # the retry could not finish in time
            retries_done += 1
            logger.debug("download broke at %d bytes (%s); resuming in %.2f s", done, exc, delay)
            await clock.sleep(delay)
        except httpx.HTTPError as exc:
            raise APIConnectionError(f"Download of {shown} failed: {exc}", request=request) from exc
        except RuntimeError as exc:  # httpx's "client has been closed"
            pipeline.ensure_open()
            raise KolboError(f"Download of {shown} failed: {exc}") from exc


def _check_deadline(clock: Clock, deadline: float | None) -> None:
    if deadline is not None and clock.now() >= deadline:
        from ._pipeline import DeadlineExceeded

        raise DeadlineExceeded


async def _check_answer(response: httpx.Response, shown: httpx.URL) -> None:
    """Raise unless `response` can be the media: a 2xx that is not a web page."""
    if response.url.scheme not in ("http", "https"):
        raise KolboError(f"Download of {shown} was redirected to a non-http(s) URL")
    if response.status_code >= 300:
        await response.aread()
        raise _status_error(response)
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in _PAGE_TYPES:
        # A sign-in or error page served with 200 would otherwise be saved as the video.
        page = await _peek(response)
        raise APIResponseValidationError(
            f"The CDN answered {response.status_code} for {shown} with a web page "
            f"({kind}), not the media: {' '.join(page.split())[:120]}",
            response=response,
            body=page,
        )


async def _peek(response: httpx.Response, limit: int = 64 * 1024) -> str:
    # Read only a small page whose size is announced: a big body mislabelled as HTML is not
    # worth holding, and stopping a stream half-way leaves httpx's iterators to the GC.
    length = response.headers.get("content-length", "")
    if not length.isdigit() or int(length) > limit:
        return ""
    try:
        return (await response.aread()).decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""  # the page is only quoted in the error


def _range_start(response: httpx.Response) -> int | None:
    # "bytes 400-999/1000" -> 400; None when the header is missing or malformed.
    unit, _, span = response.headers.get("content-range", "").partition(" ")
    start = span.partition("-")[0]
    return int(start) if unit.strip().lower() == "bytes" and start.isdigit() else None


def _total(response: httpx.Response, offset: int) -> int | None:
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    if response.headers.get("content-encoding", "identity") != "identity":
        return None  # the length counts encoded bytes; what we write is decoded
    return offset + int(length) if response.status_code == 206 else int(length)


def _status_error(response: httpx.Response) -> APIStatusError:
    return make_status_error(response, response.text, retry_after=None)
