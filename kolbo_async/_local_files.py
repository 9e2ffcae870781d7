"""Local files given for media: what one is, its checks, its kind, and its bytes read in chunks.

A medium argument is an http(s) URL (sent as a URL) or a local file: an `os.PathLike`, or a
`str` that is not a URL (`_requests.check_medium` tells them apart). `local_file` checks a file
before anything is sent (it exists, is a regular file, can be read, is not over the size
limit), making it a `LocalFile`: a `str` (its absolute path, so a body holding one stays JSON
for the journal's records) that knows its size, kind and content type, streams its bytes
afresh on every request (a retried request re-reads it from disk) and hashes its content
for the journal.

Size limits are Kolbo's own client's: 500 MiB for a file in general (`MAX_FILE_BYTES`),
200 MiB for an elements part (that route's own upload ceiling), 10 MiB for a frame sent as a
part of ``/generate/first-last-frame``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO, TypeVar

from ._exceptions import InvalidRequestError

__all__ = [
    "CHUNK",
    "check_utf8",
    "ELEMENTS_MAX_BYTES",
    "FRAME_MAX_BYTES",
    "MAX_FILE_BYTES",
    "LocalFile",
    "Medium",
    "OpenedFile",
    "content_type_of",
    "is_url",
    "kind_of",
    "local_file",
    "local_files",
    "media_or_none",
]

MiB = 1024 * 1024
#: The largest local file sent anywhere (Kolbo's client's cap; its upload route's).
MAX_FILE_BYTES = 500 * MiB
#: The largest local file sent as a part of ``/generate/elements`` (that route's ceiling).
ELEMENTS_MAX_BYTES = 200 * MiB
#: The largest frame sent as a part of ``/generate/first-last-frame`` (that route's ceiling).
FRAME_MAX_BYTES = 10 * MiB
#: Bytes read from disk at a time while a file is sent.
CHUNK = MiB

_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
    ".gif": "image/gif", ".bmp": "image/bmp",
    ".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".m4v": "video/mp4",
    ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg", ".m4a": "audio/mp4",
    ".flac": "audio/flac", ".aac": "audio/aac",
}  # fmt: skip


def content_type_of(name: str) -> str:
    """The content type Kolbo's client sends for a file name (by its extension).

    >>> content_type_of("a/b.PNG"), content_type_of("voice.mp3"), content_type_of("x.bin")
    ('image/png', 'audio/mpeg', 'application/octet-stream')
    """
    return _TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def kind_of(name: str) -> str:
    """``"image"``, ``"video"`` or ``"audio"``, by extension (an unknown one is an image, as
    Kolbo's client files it).

    >>> kind_of("clip.MOV"), kind_of("voice.wav"), kind_of("face.jpg"), kind_of("x")
    ('video', 'audio', 'image', 'image')
    """
    kind = content_type_of(name).partition("/")[0]
    return kind if kind in ("video", "audio") else "image"


def is_url(value: str) -> bool:
    """Whether a string names a remote medium (it has a scheme) rather than a local path.

    >>> is_url("https://cdn.example/a.png"), is_url("shots/a.png"), is_url("C:\\\\a.png")
    (True, False, False)
    """
    scheme, sep, _ = value.partition("://")
    return bool(sep) and scheme.isascii() and scheme.isalpha() and len(scheme) > 1


T = TypeVar("T")

#: What a medium argument takes: an http(s) URL or a local path (a `str`), or a local path
#: as an `os.PathLike` (a `pathlib.Path`).
Medium = str | os.PathLike[str]


def media_or_none(value: Sequence[Medium] | None) -> Sequence[Medium] | None:
    """A list of media kept hashable: a list becomes a tuple (anything else is left for the
    check to name)."""
    return tuple(value) if isinstance(value, list) else value


def check_utf8(field: str, value: T) -> T:
    """`value` (text, or a list or mapping holding text), refused when some text in it is
    not valid Unicode: a lone surrogate, as ``os.fsdecode``, ``os.listdir`` and ``sys.argv``
    leave for bytes that are not UTF-8. It could not be encoded into any request.

    >>> check_utf8("prompt", ["caf\u00e9"])
    ['café']
    """
    if isinstance(value, str):
        if not value.isascii():  # the fast path: ASCII is always valid
            try:
                value.encode()
            except UnicodeEncodeError:
                raise InvalidRequestError(
                    field,
                    f"is not valid UTF-8 text: {value[:60]!r} holds bytes that are not "
                    "UTF-8 (a name or argument in another encoding)",
                ) from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_utf8(field, key)
            check_utf8(field, item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_utf8(field, item)
    return value


class LocalFile(str):
    """A checked local file: the `str` is its absolute path.

    Attributes:
        field: the argument it was given as (errors name it).
        size: its size in bytes when it was checked; that many bytes are sent.
    """

    field: str
    size: int
    _digest: str | None

    def __new__(cls, path: str, *, field: str, size: int) -> LocalFile:
        self = super().__new__(cls, path)
        self.field = field
        self.size = size
        self._digest = None
        return self

    @property
    def filename(self) -> str:
        """The file's name, as sent in its part."""
        return os.path.basename(self)

    @property
    def content_type(self) -> str:
        """Its content type, by extension."""
        return content_type_of(self)

    @property
    def kind(self) -> str:
        """``"image"``, ``"video"`` or ``"audio"``, by extension."""
        return kind_of(self)

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """Its bytes, `chunk` at a time, read afresh from disk: exactly `size` of them.

        Raises `InvalidRequestError` naming the argument when the file is gone, unreadable
        or shorter than when it was checked.
        """
        left = self.size
        try:
            with open(self, "rb") as file:
                while left > 0:
                    data = file.read(min(chunk, left))
                    if not data:
                        raise InvalidRequestError(
                            self.field, f"{self!r} shrank while it was being sent"
                        )
                    left -= len(data)
                    yield data
        except OSError as exc:
            raise InvalidRequestError(self.field, f"cannot read {self!r}: {_why(exc)}") from None

    def digest(self) -> str:
        """The SHA-256 of its content (read once, in chunks, then kept): its identity in a
        journal, so an edited file is a new item."""
        if self._digest is None:
            hasher = hashlib.sha256()
            for data in self.chunks():
                hasher.update(data)
            self._digest = hasher.hexdigest()
        return self._digest

    def __reduce__(self) -> tuple[Any, ...]:  # a str subclass with attributes
        return (_rebuild, (str(self), self.field, self.size))


class OpenedFile:
    """An open binary file given to ``media.upload`` (an `open(..., "rb")`, a `BytesIO`):
    sent from where it stood when checked to its end, re-read from there on a retry."""

    __slots__ = ("_file", "_start", "field", "filename", "size")

    def __init__(self, file: BinaryIO, *, field: str, max_bytes: int = MAX_FILE_BYTES) -> None:
        if not all(callable(getattr(file, name, None)) for name in ("read", "seek", "tell")):
            raise InvalidRequestError(
                field, f"must be a path, an http(s) URL or a seekable binary file, not "
                f"{type(file).__name__}",
            )  # fmt: skip
        try:
            # read(0) reads nothing, but says what read() gives: text is not what is sent.
            probe = file.read(0)
        except Exception as exc:  # the caller's own file object: anything may come out
            raise InvalidRequestError(field, f"cannot be read: {_what(exc)}") from None
        if not isinstance(probe, bytes):
            raise InvalidRequestError(
                field, f"must be opened in binary mode ('rb'): {type(file).__name__}.read() "
                f"gives {type(probe).__name__}, not bytes",
            )  # fmt: skip
        try:
            self._start = file.tell()
            self.size = file.seek(0, os.SEEK_END) - self._start
            file.seek(self._start)
        except (OSError, ValueError) as exc:  # closed, or not seekable after all
            raise InvalidRequestError(field, f"cannot be read again: {exc}") from None
        if self.size > max_bytes:
            raise InvalidRequestError(
                field, f"is {self.size:,} bytes; Kolbo takes files up to {max_bytes:,} bytes"
            )
        self._file = file
        self.field = field
        name = getattr(file, "name", None)
        self.filename = os.path.basename(name) if isinstance(name, str) and name else "upload"

    @property
    def content_type(self) -> str:
        """Its content type, by the extension of its name."""
        return content_type_of(self.filename)

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """Its bytes from where it stood, `chunk` at a time: exactly `size` of them."""
        left = self.size
        try:
            self._file.seek(self._start)
            while left > 0:
                data = self._file.read(min(chunk, left))
                if not isinstance(data, bytes):
                    raise InvalidRequestError(self.field, "read() gave no bytes")
                if not data:
                    raise InvalidRequestError(self.field, "shrank while it was being sent")
                left -= len(data)
                yield data
        except InvalidRequestError:
            raise
        except Exception as exc:  # the caller's file object: not the SDK's own fault
            raise InvalidRequestError(self.field, f"cannot be read: {_what(exc)}") from None


def local_files(value: object) -> list[LocalFile]:
    """Every `LocalFile` in `value` (a body, a list, a mapping), in order."""
    if isinstance(value, LocalFile):
        return [value]
    if isinstance(value, Mapping):
        return [file for item in value.values() for file in local_files(item)]
    if isinstance(value, (list, tuple)):
        return [file for item in value for file in local_files(item)]
    return []


def _rebuild(path: str, field: str, size: int) -> LocalFile:
    return LocalFile(path, field=field, size=size)


def local_file(field: str, value: object, max_bytes: int = MAX_FILE_BYTES) -> LocalFile:
    """`value` (an `os.PathLike` or a path `str`) as a checked `LocalFile`.

    A file up to `max_bytes` passes; a missing, unreadable, non-regular or larger one is an
    `InvalidRequestError` naming `field`.
    """
    if isinstance(value, LocalFile):
        return _checked_file(field, str(value), max_bytes)
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        value = os.fsdecode(path) if isinstance(path, bytes) else path
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise InvalidRequestError(field, f"must be an http(s) URL or a local file, not {value!r}")
    # Refused rather than sent under another name: its path goes into the request (a
    # part's file name) and a batch's journal, neither of which takes such text.
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidRequestError(
                field,
                f"{value!r}: its path is not valid UTF-8 (a name in another encoding); "
                "rename the file to send it",
            ) from None
    return _checked_file(field, value, max_bytes)


def _checked_file(field: str, path: str, max_bytes: int) -> LocalFile:
    absolute = os.path.abspath(os.path.expanduser(path))
    try:
        info = os.stat(absolute)
    except OSError as exc:
        raise InvalidRequestError(
            field, f"is not an http(s) URL, nor a file that can be read: {path!r} ({_why(exc)})"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidRequestError(field, f"{path!r} is not a regular file")
    if info.st_size > max_bytes:
        raise InvalidRequestError(
            field,
            f"{path!r} is {info.st_size:,} bytes; Kolbo takes files up to "
            f"{max_bytes:,} bytes here ({max_bytes // MiB} MiB)",
        )
    try:  # readable now (the bytes are read when sent, and again on a retry)
        with open(absolute, "rb"):
            pass
    except OSError as exc:
        raise InvalidRequestError(field, f"cannot read {path!r}: {_why(exc)}") from None
    return LocalFile(absolute, field=field, size=info.st_size)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _what(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
