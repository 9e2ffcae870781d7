"""Reading a CDN's answer before its bytes are taken for the media: pure functions, no I/O.

A CDN in front of result files can answer with a sign-in page, an XML or JSON error, a body in
an encoding nobody asked for, or a slice of the file. These decide, from headers and the first
bytes of a body, whether an answer can be the media and which part of the file it carries.
Headers are parsed with ASCII-only patterns: ``str.isdigit()`` accepts ``"²"``, which ``int()``
then refuses.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from typing import NamedTuple

import httpx

try:  # httpx's own table: "br" and "zstd" appear there only when their decoder is installed
    from httpx._decoders import SUPPORTED_DECODERS as _HTTPX_DECODERS

    _DECODABLE = frozenset(_HTTPX_DECODERS)
except ImportError:  # pragma: no cover - a future httpx that moved it
    _DECODABLE = frozenset({"identity", "gzip", "deflate"})

__all__ = [
    "SNIFF_BYTES",
    "Span",
    "Validators",
    "content_length",
    "content_range",
    "continuation_document_kind",
    "document_kind",
    "is_encoded",
    "refused_type",
    "undecodable_encoding",
]

#: How much of a body's start is looked at before it is taken for the media.
SNIFF_BYTES = 512

# Longer numbers are no real size; the bound also keeps int() clear of its digit limit.
_NUMBER = re.compile(r"[0-9]{1,30}", re.ASCII)
_CONTENT_RANGE = re.compile(
    r"bytes[ \t]+([0-9]{1,30})-([0-9]{1,30})/([0-9]{1,30}|\*)", re.ASCII | re.IGNORECASE
)


class Span(NamedTuple):
    """What a ``Content-Range`` says: bytes `start` to `stop` (exclusive) of `total`."""

    start: int
    stop: int
    total: int | None  # None: "*", the CDN does not say


def content_length(response: httpx.Response) -> int | None:
    """The ``Content-Length`` as a number, or None when absent or not a plain number."""
    match = _NUMBER.fullmatch(response.headers.get("content-length", "").strip())
    return int(match[0]) if match else None


def content_range(value: str) -> Span | None:
    """Parse ``bytes 400-999/1000``; None when it is not a range this client can splice."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None
    start, last = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if last < start or (total is not None and last >= total):
        return None
    return Span(start, last + 1, total)


def _encodings(response: httpx.Response) -> list[str]:
    values = response.headers.get_list("content-encoding", split_commas=True)
    return [value.strip().lower() for value in values if value.strip()]


def is_encoded(response: httpx.Response) -> bool:
    """Whether the body comes in an encoding, so its lengths count encoded bytes."""
    return any(value != "identity" for value in _encodings(response))


def undecodable_encoding(response: httpx.Response) -> str | None:
    """The ``Content-Encoding`` httpx cannot undo, if any.

    httpx passes an encoding it has no decoder for (``br`` without brotli, ``zstd`` without
    zstandard, anything made up) through untouched, so the encoded bytes would be saved as
    the media.
    """
    unknown = [value for value in _encodings(response) if value not in _DECODABLE]
    return ", ".join(unknown) if unknown else None


def refused_type(response: httpx.Response) -> tuple[str, str] | None:
    """(what it is, media type) when the declared type can never be the media."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return "a web page", kind
    if kind.startswith("text/"):
        return "a text document", kind
    if kind == "application/json" or kind.endswith("+json"):
        return "a JSON document", kind
    if kind == "application/xml" or (kind.endswith("+xml") and not kind.startswith("image/")):
        return "an XML document", kind
    return None


_PAGE_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")
_MARKUP = re.compile(rb"<[!?A-Za-z]")
# Bytes no text document holds; every media format has some in its first bytes (an MP4 box
# header's size and version fields, a WebM header, a GIF's screen descriptor).
_CONTROL = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D} | {0x7F}


def document_kind(head: bytes, response: httpx.Response) -> str | None:
    """What `head`, the first bytes of `response`'s body, is when it is a document, not media.

    Only text that opens as markup or JSON is refused: no video or image format starts with
    ``<`` or ``{`` followed by printable text (MP4 opens with a box header, JPEG with FF D8,
    PNG with 89 50 4E 47, WebM with 1A 45 DF A3, GIF with "GIF8", WebP with "RIFF"), so real
    media is never refused. SVG, the one image written as markup, is let through.
    """
    if "svg" in response.headers.get("content-type", "").lower():
        return None
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n\f")
    if not text or _CONTROL.intersection(text):
        return None
    lowered = text.lower()
    if lowered.startswith(_PAGE_STARTS):
        return "a web page"
    if _MARKUP.match(text):
        return None if b"svg" in lowered else "an XML document"
    if text[:1] in (b"{", b"["):
        return "a JSON document"
    return None


_DOCUMENT_OPENINGS = (
    (b"<!doctype html", "a web page"),
    (b"<html", "a web page"),
    (b"<?xml", "an XML document"),
)


def continuation_document_kind(head: bytes, response: httpx.Response) -> str | None:
    """What `head`, the first bytes of a slice that continues the file, is when it is a page.

    The middle of a video can hold any bytes, ``<`` or ``{`` followed by text included, so
    the first-answer sniff would refuse real media here. Only what a document must open with
    and media practically never holds at a slice's first byte counts: ``<!doctype html``,
    ``<html`` or ``<?xml`` (any case, after an optional BOM and whitespace), with no control
    byte in the window (a page's first bytes are text; a video's rarely run 512 bytes without
    one). JSON is recognised only by its label here: ``{"`` is too short a sign.
    """
    if "svg" in response.headers.get("content-type", "").lower():
        return None
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n\f")
    if not text or _CONTROL.intersection(text):
        return None
    lowered = text.lower()
    for opening, what in _DOCUMENT_OPENINGS:
        if lowered.startswith(opening):
            return what
    return None


class Validators(NamedTuple):
    """What identifies one version of the file: its ``ETag`` and ``Last-Modified``."""

    etag: str | None
    last_modified: str | None

    @classmethod
    def of(cls, response: httpx.Response) -> Validators:
        """The validators `response` carries (None for each it lacks)."""
        etag = response.headers.get("etag", "").strip() or None
        modified = response.headers.get("last-modified", "").strip() or None
        return cls(etag, modified)

    def if_range(self, response_date: str | None) -> str | None:
        """The ``If-Range`` value for a resume, or None when there is no strong validator.

        RFC 9110 13.1.5 forbids a weak ETag there, and allows a date only when it is strong:
        at least a second before the ``Date`` of the answer that carried it (a file changed
        within that second would otherwise pass as unchanged).
        """
        if self.etag is not None and not self.etag.startswith("W/"):
            return self.etag
        if self.etag is None and self.last_modified is not None and response_date:
            try:
                modified = parsedate_to_datetime(self.last_modified)
                date = parsedate_to_datetime(response_date)
                if (date - modified).total_seconds() >= 1:
                    return self.last_modified
            except (TypeError, ValueError):
                return None
        return None

    def changed(self, later: Validators) -> str | None:
        """How `later` (a slice's validators) shows another version of the file, if it does.

        A validator the slice does not carry proves nothing (some CDNs drop them on 206s);
        ETags are compared without their weak mark, since only a change of version matters.
        """
        if self.etag is not None and later.etag is not None:
            if self.etag.removeprefix("W/") != later.etag.removeprefix("W/"):
                return f"ETag {later.etag[:60]!r}, not {self.etag[:60]!r}"
            return None
        if self.last_modified is None or later.last_modified is None:
            return None
        if self.last_modified != later.last_modified:
            return f"Last-Modified {later.last_modified[:40]!r}, not {self.last_modified[:40]!r}"
        return None
