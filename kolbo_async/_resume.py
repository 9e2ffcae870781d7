"""Splicing a download's answers into one file: pure decisions, no I/O.

A transfer that breaks is resumed with a ``Range`` request; a CDN may also serve a large file
in capped slices, or change the file between two of them. `Transfer` is what the temporary
file holds so far; these functions decide where an answer's bytes go in it, whether they may
be spliced on at all (`StartOver` when not), and whether the file is whole.
"""

from __future__ import annotations

import httpx

from ._cdn_checks import Validators, content_length, content_range, is_encoded
from ._exceptions import APIResponseValidationError

__all__ = ["StartOver", "Transfer", "check_version", "complete", "place_of"]


class Transfer:
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

    def headers(self) -> dict[str, str]:
        """The headers of the next request: the rest of this version of the file."""
        headers = {"Accept-Encoding": "identity"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
            if self.if_range is not None:
                # The CDN then answers the rest only if the file is still the same version,
                # else the whole new file (a 200), never a slice of it.
                headers["If-Range"] = self.if_range
        return headers


class StartOver(Exception):
    """The answer cannot be spliced onto what the file holds: fetch the file again, whole."""


def place_of(response: httpx.Response, state: Transfer, shown: httpx.URL) -> tuple[int, int | None]:
    """Where `response`'s body goes in the file: (start, stop; None when it does not say).

    Updates `state.expected` from what the answer announces. Raises `StartOver` when the
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
        raise StartOver(f"the CDN answered an unreadable Content-Range {header[:60]!r}")
    if span.start != state.done:
        raise StartOver(f"the CDN answered bytes from {span.start}, not {state.done}")
    total = span.total if span.total is not None else state.expected
    if total is None:
        raise _unusable(response, shown, "without the file's size")
    if state.expected is not None and total != state.expected:
        raise StartOver(f"the CDN announced {total} bytes for a file of {state.expected}")
    state.expected = total
    return span.start, span.stop


def check_version(response: httpx.Response, state: Transfer) -> None:
    """Note the version of the file an answer that starts it carries; raise `StartOver`
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
            raise StartOver(f"the file changed on the CDN during the download ({change})")


def _unusable(response: httpx.Response, shown: httpx.URL, how: str) -> APIResponseValidationError:
    return APIResponseValidationError(
        f"The CDN answered part of {shown} (206) {how}; it cannot be saved as the whole file",
        response=response,
        body=None,
    )


def complete(state: Transfer, start: int, stop: int | None) -> bool:
    """Whether the file is whole; False for a slice that came whole and moved the file on.

    Raises `httpx.ReadError` for a transfer that broke (resumed within the retry budget),
    `StartOver` for one that brought more than announced.
    """
    done, expected = state.done, state.expected
    if (stop is not None and done > stop) or (expected is not None and done > expected):
        raise StartOver(f"got {done} bytes, more than announced")
    if stop is not None and done < stop:
        raise httpx.ReadError(f"the answer broke after {done - start} of {stop - start} bytes")
    if expected is None or done == expected:
        return True
    if stop is None or done == start:
        raise httpx.ReadError(f"got {done} of {expected} bytes")
    return False
