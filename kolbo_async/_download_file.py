"""The file side of a download: a temporary file beside the target, written off the event
loop, put in place only when whole.

The target never holds half a video: the bytes grow in a temporary file in the target's
directory, and the finished file takes the target's name in one step that, without
``overwrite``, cannot replace a file that appeared meanwhile. What arrives over HTTP, and
whether it is the whole file, is `_download`'s concern.
"""

from __future__ import annotations

import errno
import os
import queue
import secrets
import threading
from pathlib import Path
from typing import IO

import anyio

from ._exceptions import KolboError

__all__ = ["TargetExistsError", "Writer", "finish", "open_temp", "place", "rewind"]

_BINARY = getattr(os, "O_BINARY", 0)  # Windows

#: Bytes gathered before they are handed to the writer thread.
BATCH = 1024 * 1024


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


async def open_temp(target: Path) -> tuple[Path, IO[bytes]]:
    """A new, empty temporary file beside `target`: its path and the file, open to write.

    Raises `KolboError` when the directory cannot take it.
    """
    directory = target.parent if str(target.parent) else Path(".")
    temp = directory / f".{target.name}.{secrets.token_hex(6)}.part"
    try:
        # Not tempfile.mkstemp: its 0600 mode would stick to the video; this honours the umask.
        fd = await anyio.to_thread.run_sync(
            lambda: os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o666)
        )
    except OSError as exc:
        raise KolboError(f"Cannot write the download beside {str(target)!r}: {exc}") from exc
    return temp, os.fdopen(fd, "wb")


def place(temp: Path, target: Path, overwrite: bool) -> None:
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


class Writer:
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
        if self._size >= BATCH:
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
        try:
            if self._batch:
                await self._hand_over()  # raises a disk error the thread met
        finally:
            # The thread ends whatever happened (else it would wait on its queue for good).
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._queue.put, None)
                await anyio.to_thread.run_sync(self._thread.join)
            self._thread = None
        self._check()


def rewind(file: IO[bytes]) -> None:
    """Empty `file`, to write the download again from its first byte."""
    file.seek(0)
    file.truncate()


def finish(file: IO[bytes]) -> None:
    """Flush and close the finished file."""
    # No fsync: the rename already guarantees that readers never see half a file, and an
    # fsync of a 200 MB video costs a third of the transfer time on a local disk.
    file.flush()
    file.close()
