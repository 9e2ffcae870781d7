"""The `kolbo` command's own argument checks, all run before anything is paid for.

A generation is charged when its POST is accepted, so a CLI that checks a download path or a
timeout afterwards makes the user pay for a mistake in their command line. Every check here is
a usage error (exit 2) raised before the first request.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from kolbo_async import InvalidRequestError

__all__ = [
    "DownloadTarget",
    "api_key_is_set",
    "batch_directory",
    "bounding_box",
    "duration_seconds",
    "extra_field",
    "journal_file",
    "keyframe",
    "port",
    "positive_count",
    "positive_credits",
    "positive_seconds",
    "positive_speed",
    "sandbox_speed",
]


def _positive_finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    # `not value > 0` also rejects nan, which compares false with everything.
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    return _positive_finite(text, "a positive number of seconds")


def duration_seconds(text: str) -> float:
    """argparse type: a video length of at least 1 s (Kolbo's durations are whole seconds).

    The SDK accepts any positive number; from the command line, `--duration 1e-320` or
    `0.0001` is a typo, and a generation POSTed with it is charged.
    """
    value = _positive_finite(text, "a number of seconds, at least 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, at least 1, not {text!r}")
    return value


def keyframe(text: str) -> tuple[str, float]:
    """argparse type: ``IMAGE@SECONDS``, an image pinned at a time (``pose.png@2.5``).

    Split at the last ``@``, so a URL holding one still reads; the SDK checks the image and
    that the time is finite and not negative.
    """
    image, sep, seconds = text.rpartition("@")
    try:
        value = float(seconds)
    except ValueError:
        value = None
    if not sep or not image or value is None:
        raise argparse.ArgumentTypeError(f"must be IMAGE@SECONDS (pose.png@2.5), not {text!r}")
    return image, value


def bounding_box(text: str) -> tuple[float, float, float, float]:
    """argparse type: ``X,Y,W,H``, four numbers."""
    try:
        x, y, w, h = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be X,Y,W,H (four numbers), not {text!r}") from None
    return x, y, w, h


def extra_field(text: str) -> tuple[str, Any]:
    """argparse type: ``KEY=VALUE``, a field sent as is: VALUE as JSON when it reads as JSON
    (``fps=24``, ``loop=true``, ``tags=["a"]``), else as the text typed."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, not {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def api_key_is_set() -> None:
    """A usage error (exit 2) when ``$KOLBO_API_KEY`` is unset or blank, before any request."""
    if not os.environ.get("KOLBO_API_KEY", "").strip():
        raise InvalidRequestError(
            "KOLBO_API_KEY",
            "is not set: export KOLBO_API_KEY=kolbo_live_... (from your Kolbo dashboard), "
            "or try kolbo --sandbox",
        )


def positive_count(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_credits(text: str) -> float:
    """argparse type: a positive, finite number of credits."""
    return _positive_finite(text, "a positive number of credits")


def positive_speed(text: str) -> float:
    """argparse type: a positive, finite clock speed-up."""
    return _positive_finite(text, "a positive number")


def port(text: str) -> int:
    """argparse type: a TCP port (0 picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, not {value}")
    return value


def sandbox_speed(default: float) -> float:
    """The sandbox clock's speed-up: ``$KOLBO_SANDBOX_SPEED`` when set, else `default`.

    Raises:
        InvalidRequestError: the variable is set to anything but a positive, finite number.
    """
    text = os.environ.get("KOLBO_SANDBOX_SPEED")
    if text is None:
        return default
    try:
        return positive_speed(text)
    except argparse.ArgumentTypeError as exc:
        raise InvalidRequestError("KOLBO_SANDBOX_SPEED", str(exc)) from None


class DownloadTarget:
    """Where a download goes: a file path, or a directory to name the file in by its id.

    Checked when built, before the generation is paid for; `path_for` is only called once the
    id is known.
    """

    def __init__(self, text: str, *, option: str, overwrite: bool) -> None:
        if not text:
            raise InvalidRequestError(option, "must not be empty")
        path = Path(text)
        self.option = option
        self.overwrite = overwrite
        self.directory: Path | None = None
        self.file: Path | None = None
        if path.is_dir():
            self.directory = path
            self._writable(path)
            return
        if text.endswith(("/", os.sep)):
            raise InvalidRequestError(option, f"directory {text!r} does not exist")
        _refuse_special(path, text, option)
        if os.path.lexists(path) and not overwrite:
            raise InvalidRequestError(option, f"{text!r} exists; add --overwrite to replace it")
        parent = path.parent
        if not parent.is_dir():
            raise InvalidRequestError(option, f"directory {str(parent)!r} does not exist")
        self._writable(parent)
        self.file = path

    def _writable(self, directory: Path) -> None:
        # The download writes a temporary file beside its target, so the directory itself
        # must take new files.
        if not os.access(directory, os.W_OK | os.X_OK):
            raise InvalidRequestError(self.option, f"cannot write in {str(directory)!r}")

    def check_numbered(self, count: int) -> None:
        """With a file named, `count` images are saved beside it as ``NAME-0.EXT``, ...:
        none of those may be there (or be anything but a file) unless overwriting."""
        if self.file is None:
            return
        for index in range(count):
            path = self.file.with_name(f"{self.file.stem}-{index}{self.file.suffix}")
            _refuse_special(path, str(path), self.option)
            if os.path.lexists(path) and not self.overwrite:
                raise InvalidRequestError(
                    self.option, f"{str(path)!r} exists; add --overwrite to replace it"
                )

    def path_for(self, generation_id: str, suffix: str) -> Path:
        """The file to write: the path given, or ``{id}{suffix}`` in the directory given."""
        if self.file is not None:
            return self.file
        assert self.directory is not None
        # The id comes from the server: keep it from naming a path outside the directory.
        name = re.sub(r"[^A-Za-z0-9_-]", "_", generation_id) or "generation"
        return self.directory / f"{name}{suffix}"


def _refuse_special(path: Path, text: str, option: str) -> None:
    """Refuse a target that is there and is not a plain file, even with --overwrite.

    A download replaces its target by renaming a finished temporary file over it: that would
    swap a device (as root, even /dev/null), a FIFO or a socket for a regular file, and a
    symbolic link for a copy (the file it points to untouched). None of these is what
    "overwrite the file" means, so they are refused; a link is refused with where it points,
    so that the user can name that file instead.
    """
    try:
        mode = path.lstat().st_mode
    except OSError:
        return  # nothing there (or unreadable: the parent checks below speak for it)
    if stat.S_ISLNK(mode):
        raise InvalidRequestError(
            option,
            f"{text!r} is a symbolic link (to {os.readlink(path)!r}); kolbo does not replace "
            "links: name the file itself",
        )
    if not stat.S_ISREG(mode):
        raise InvalidRequestError(
            option, f"{text!r} exists and is not a regular file; kolbo only replaces files"
        )


def journal_file(text: str, option: str = "--journal") -> Path:
    """A journal path the batch can create or reopen: checked before anything is sent.

    The journal itself (held by another run, another program's database, a corrupt file) is
    checked by the SDK when the batch starts, still before its first POST.
    """
    if not text.strip():
        raise InvalidRequestError(option, "must not be empty")
    path = Path(text)
    if path.is_dir():
        raise InvalidRequestError(option, f"{text!r} is a directory; name a file")
    _refuse_special(path, text, option)
    parent = path.parent
    if not parent.is_dir():
        raise InvalidRequestError(option, f"directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        # SQLite writes its journal files beside the database.
        raise InvalidRequestError(option, f"cannot write in {str(parent)!r}")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise InvalidRequestError(option, f"cannot read and write {text!r}")
    return path


def batch_directory(text: str, *, create: bool, option: str = "--download-dir") -> Path:
    """The directory a batch saves its videos in; made (one level) when missing and `create`.

    Checked before anything is paid for: a video that cannot be saved is a paid loss.
    """
    if not text.strip():
        raise InvalidRequestError(option, "must not be empty")
    path = Path(text)
    if not path.is_dir():
        if os.path.lexists(path):
            raise InvalidRequestError(option, f"{text!r} exists and is not a directory")
        if not path.parent.is_dir():
            raise InvalidRequestError(option, f"directory {str(path.parent)!r} does not exist")
        if not create:
            return path  # a dry run makes nothing
        try:
            path.mkdir()
        except OSError as exc:
            raise InvalidRequestError(option, f"cannot create {text!r}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidRequestError(option, f"cannot write in {text!r}")
    return path
