"""An exclusive, non-blocking lock on a file, held by one open file at a time.

The operating system drops it when the process dies (``kill -9`` included), so a crashed run
never leaves a journal locked. POSIX uses ``flock`` (per open file, so two batches of one
process exclude each other too); Windows locks one byte with ``msvcrt.locking``, far past the
holder's note so that the note stays readable. Network filesystems may not honour either:
keep journals on a local disk.

A lock either keeps its holder's note in its own file (a sidecar ``PATH.lock``) or, when it
locks a file whose bytes are not its own (the journal database itself), reads the note of the
sidecar beside it for its message.
"""

from __future__ import annotations

import datetime
import errno
import os
import socket
import sys
from pathlib import Path

from ._exceptions import KolboError

__all__ = ["FLOCK_BESIDE_SQLITE", "FileLock"]

#: Whether ``flock`` on an SQLite file leaves SQLite's own locks alone. On Linux they are
#: separate kinds (SQLite takes ``fcntl`` byte-range locks); on the BSDs and macOS the two
#: may conflict, and Windows locks are mandatory: there only the sidecar is locked.
FLOCK_BESIDE_SQLITE = sys.platform.startswith("linux")

# Windows locks are mandatory: the locked byte must not be one a second run reads.
_WINDOWS_LOCK_OFFSET = 1 << 20
_BUSY = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK}


class FileLock:
    """Holds `path` locked from `acquire` until `release` (or the process's end)."""

    def __init__(self, path: Path, what: str, *, note_in: Path | None = None) -> None:
        """`note_in`: the sidecar whose note names the holder, when `path` is a file whose
        content is not the lock's to write (the holder's note is then not written)."""
        self.path = path
        self._what = what  # named in errors: "journal /x/batch.db"
        self._note_in = note_in
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `KolboError` naming who holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise KolboError(
                f"The {self._what} cannot be locked: {self.path} cannot be opened "
                f"({exc.strerror or exc}). Nothing was sent."
            ) from None
        try:
            locked = _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            raise KolboError(
                f"The {self._what} cannot be locked ({self.path}: {exc.strerror or exc}); "
                "keep journals on a local disk. Nothing was sent."
            ) from None
        if not locked:
            holder = _read_note(fd) if self._note_in is None else held_note(self._note_in)
            os.close(fd)
            by = f" by {holder}" if holder else " by another run"
            if not holder and self._note_in is not None:
                by += " (perhaps through another name of the same file: a link)"
            raise KolboError(
                f"The {self._what} is in use{by}: one journal is one run's at a time. Wait "
                f"for that run to end (or stop it), then run again. Nothing was sent."
            )
        self._fd = fd
        if self._note_in is not None:
            return
        note = (
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}\n"
        )
        try:  # only a courtesy for the error above: a failure to write it changes nothing
            os.ftruncate(fd, 0)
            os.write(fd, note.encode())
        except OSError:
            pass

    def release(self) -> None:
        """Let the next run take it (idempotent). The file stays: deleting it would let a
        waiter lock a file that no longer has a name while a third run creates a new one."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if sys.platform == "win32":  # unlock before close, as msvcrt asks
                import msvcrt

                os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in _BUSY:
                return False
            raise
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return False
        raise
    return True


def held_note(path: Path) -> str:
    """The note in lock file `path` while some run holds it, else "" (a stale note, from a
    run that has ended, names nobody)."""
    if sys.platform == "win32":
        return ""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return _read_note(fd) if exc.errno in _BUSY else ""
        return ""  # nobody holds it (our shared lock goes with the close below)
    finally:
        os.close(fd)


def _read_note(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return ""
