"""The `kolbo` command's stdout and stderr, made safe to write to whatever state they are in.

A stream can be closed before the process starts (`2>&-`: Python sets it to None), full
(`>/dev/full`), or its reader gone (`| head`). A paid generation's id must survive all of
these, so a write never raises anything but one `BrokenPipeError` for stdout (which ends the
run quietly, naming the id on stderr) and nothing at all for stderr (messages are best-effort,
and the id then goes to stdout instead).
"""

from __future__ import annotations

from typing import Any, TextIO

__all__ = ["Stream"]

_WRITE_ERRORS = (OSError, ValueError, AttributeError)


class Stream:
    """A text stream wrapper that records, instead of spreading, a failed write.

    `strict` (stdout): the first failure is raised as `BrokenPipeError`, whatever it was
    (ENOSPC, a closed file, no stream at all), so that one path handles every way stdout can
    fail; later writes do nothing. Not strict (stderr): failures are swallowed.
    """

    def __init__(self, stream: TextIO | None, *, strict: bool) -> None:
        self._stream = stream
        self._strict = strict
        #: A write or flush failed (or there is no stream): nothing written here is seen.
        self.broken = stream is None
        self._raised = False

    def _failed(self, exc: BaseException | None) -> None:
        self.broken = True
        if self._strict and not self._raised:
            self._raised = True
            raise BrokenPipeError(32, "stdout is closed or cannot be written") from exc

    def write(self, text: str) -> int:
        """Write `text`; see the class docstring for what a failure does."""
        if self.broken:
            self._failed(None)
            return len(text)
        try:
            assert self._stream is not None
            self._stream.write(text)
        except _WRITE_ERRORS as exc:
            self._failed(exc)
        return len(text)

    def flush(self) -> None:
        """Flush; see the class docstring for what a failure does."""
        if self.broken:
            return
        try:
            assert self._stream is not None
            self._stream.flush()
        except _WRITE_ERRORS as exc:
            self._failed(exc)

    def isatty(self) -> bool:
        """Whether the stream is a terminal (never, once broken)."""
        if self.broken or self._stream is None:
            return False
        try:
            return bool(self._stream.isatty())
        except _WRITE_ERRORS:
            return False

    def fileno(self) -> int:
        """The underlying descriptor (`OSError` if there is none)."""
        if self._stream is None:
            raise OSError("no stream")
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        # What `rich` and others ask of a file (encoding, ...), from the real stream.
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)
