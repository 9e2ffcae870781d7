"""What the `kolbo` command shows while it waits: a live bar on a terminal, lines elsewhere.

The bar is drawn by `rich` when it is installed (``pip install 'kolbo-async[cli]'``); it is
imported here only, so ``import kolbo_async`` never pays for it.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, TextIO

from kolbo_async import GenerationStatus

__all__ = ["Reporter", "reporter"]


class Reporter(Protocol):
    def status(self, status: GenerationStatus) -> None: ...

    def bytes(self, done: int, total: int | None) -> None: ...

    def done(self) -> None: ...


def reporter(stream: TextIO, *, quiet: bool) -> Reporter:
    """A live bar when `stream` is a terminal, one line per change otherwise, or nothing."""
    if quiet:
        return _Quiet()
    if stream.isatty():
        try:
            return _RichBar(stream)
        except ImportError:
            return _Line(stream, live=True)
    return _Line(stream, live=False)


class _Quiet:
    def status(self, status: GenerationStatus) -> None:
        pass

    def bytes(self, done: int, total: int | None) -> None:
        pass

    def done(self) -> None:
        pass


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


class _Line:
    """Plain text: a line per change (pipes, CI), or one rewritten line on a bare terminal."""

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self._stream = stream
        self._live = live
        self._start = time.monotonic()
        self._download_start: float | None = None
        self._last_percent = -1
        self._dirty = False

    def _emit(self, text: str) -> None:
        if self._live:
            self._stream.write("\r\x1b[2K" + text)
            self._dirty = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def status(self, status: GenerationStatus) -> None:
        elapsed = time.monotonic() - self._start
        self._emit(f"{status.state:<10} {status.progress:3d}%  {elapsed:5.1f}s")

    def bytes(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self._download_start is None:
            self._download_start = now
        percent = int(done * 100 / total) if total else -1
        if not self._live and percent == self._last_percent and done != total:
            return
        if not self._live and total and percent % 10 != 0 and done != total:
            return
        self._last_percent = percent
        speed = done / max(now - self._download_start, 1e-6)
        of = f" of {_size(total)}" if total else ""
        self._emit(f"download   {_size(done)}{of}  {_size(speed)}/s")

    def done(self) -> None:
        if self._dirty:
            self._stream.write("\n")
            self._stream.flush()
            self._dirty = False
        self._download_start = None
        self._last_percent = -1


class _RichBar:
    """A live bar with state, percent and elapsed time; bytes and speed while downloading."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self._console = Console(file=stream)
        self._columns: dict[str, Any] = {
            "generate": (
                TextColumn("[bold]{task.description:<10}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
            ),
            "download": (
                TextColumn("[bold]{task.description:<10}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
            ),
        }
        self._progress_cls = Progress
        self._progress: Any = None
        self._task: Any = None
        self._kind = ""

    def _ensure(self, kind: str, total: float | None) -> None:
        if self._progress is not None and self._kind == kind:
            return
        self.done()
        self._kind = kind
        self._progress = self._progress_cls(
            *self._columns[kind], console=self._console, transient=False
        )
        self._progress.start()
        self._task = self._progress.add_task(kind, total=total)

    def status(self, status: GenerationStatus) -> None:
        self._ensure("generate", 100)
        self._progress.update(self._task, completed=status.progress, description=status.state)

    def bytes(self, done: int, total: int | None) -> None:
        self._ensure("download", total)
        self._progress.update(self._task, completed=done, total=total)

    def done(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
