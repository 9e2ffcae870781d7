"""Streaming a result file from the CDN to disk, atomically, without the API key.

The file grows in a temporary file beside the target and is renamed into place only when it
is complete and of the announced length, so the target never holds half a video. A transfer
that breaks is resumed with a ``Range`` request where the CDN allows it.
"""

from __future__ import annotations

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

from ._exceptions import APIConnectionError, APIStatusError, make_status_error
from ._retries import Attempt, Failure, retry_delay

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = ["download_to"]

_BINARY = getattr(os, "O_BINARY", 0)  # Windows

logger = logging.getLogger("kolbo_async")



async def download_to(
    pipeline: Pipeline,
    url: str,
    target: Path,
    *,
    on_progress: Callable[[int, int | None], object] | None,
    timeout: float | None,
) -> Path:
    """Stream `url` to `target`; `timeout` bounds the whole transfer (None: no bound).

    Raises `DeadlineExceeded` when `timeout` passes, `APIStatusError` for an error answer,
    `APIConnectionError` when the transfer keeps breaking.
    """
    from ._pipeline import DeadlineExceeded

    directory = target.parent if str(target.parent) else Path(".")
    temp = directory / f".{target.name}.{secrets.token_hex(6)}.part"
    # Not tempfile.mkstemp: its 0600 mode would stick to the video; this honours the umask.
    fd = await anyio.to_thread.run_sync(
        lambda: os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o666)
    )
    file = os.fdopen(fd, "wb")
    try:
        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            await _fetch(pipeline, url, file, on_progress)
        if scope.cancelled_caught:
            raise DeadlineExceeded
        await anyio.to_thread.run_sync(_finish, file)
        await anyio.to_thread.run_sync(os.replace, temp, target)
    except BaseException:
        file.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: temp.unlink(missing_ok=True))
        raise
    logger.debug("downloaded %s to %s", httpx.URL(url).copy_with(query=None), target)
    return target


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
    url: str,
    file: IO[bytes],
    on_progress: Callable[[int, int | None], object] | None,
) -> None:
    http = pipeline.http
    done = 0
    total: int | None = None
    retries_done = 0
    while True:
        headers = {"Accept-Encoding": "identity"}
        if done:
            headers["Range"] = f"bytes={done}-"
        # No key here, ever: result URLs live on a CDN, often signed, that must not see it.
        request = http.build_request("GET", url, headers=headers)
        try:
            response = await http.send(request, stream=True, follow_redirects=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(response)
                if done and response.status_code != 206:
                    # The CDN ignored the Range: start over rather than append a second copy.
                    await anyio.to_thread.run_sync(_rewind, file)
                    done = 0
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
                finally:
                    # Whatever arrived is on disk before a resume asks for the rest.
                    with anyio.CancelScope(shield=True):
                        await writer.finish()
            finally:
                await response.aclose()
            if total is not None and done != total:
                raise httpx.ReadError(f"got {done} of {total} bytes")
            return
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
                    f"Download of {httpx.URL(url).copy_with(query=None)} failed: {exc}"
                ) from exc
            retries_done += 1
            logger.debug("download broke at %d bytes (%s); resuming in %.2f s", done, exc, delay)
            await pipeline.clock.sleep(delay)


def _total(response: httpx.Response, offset: int) -> int | None:
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    if response.headers.get("content-encoding", "identity") != "identity":
        return None  # the length counts encoded bytes; what we write is decoded
    return offset + int(length) if response.status_code == 206 else int(length)


def _status_error(response: httpx.Response) -> APIStatusError:
    return make_status_error(response, response.text, retry_after=None)
