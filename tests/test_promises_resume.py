"""Promises of splicing a download (`kolbo_async._resume`) that its mutation run found
untested, as `_download` composes the decisions for each answer (where its bytes go, which
version of the file they are, whether the file is whole): a file that changed on the CDN
between two attempts is taken whole as the new version, whatever size it has; a whole-file
answer that comes short is never taken for the file; a break says how far it got.
"""

from __future__ import annotations

import httpx
import pytest

import kolbo_async as k
from kolbo_async._resume import StartOver, Transfer, check_version, complete, place_of

URL = httpx.URL("https://cdn.kolbo.test/v.mp4")


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, headers={name.replace("_", "-"): value for name, value in headers.items()}
    )


def take(state: Transfer, response: httpx.Response, received: int) -> bool:
    """One answer as `_download._take` handles it: True when the file is whole."""
    start, stop = place_of(response, state, URL)
    if start != state.done:  # a 200 to a resume: the file is written again from its start
        state.done = 0
    check_version(response, state)
    state.done += received
    return complete(state, start, stop)


def broken_first_attempt() -> Transfer:
    """Version "A" of 1000 bytes, cut after 400."""
    state = Transfer()
    with pytest.raises(httpx.ReadError):
        take(state, answer(200, etag='"A"', content_length="1000"), 400)
    assert state.headers()["If-Range"] == '"A"'
    return state


def test_a_new_version_without_a_length_is_taken_whole() -> None:
    """The CDN answers the resume with the whole new version ("B", 1500 bytes, chunked): the
    old version's size no longer applies."""
    state = broken_first_attempt()
    assert take(state, answer(200, etag='"B"'), 1500)
    assert (state.done, state.expected) == (1500, None)


def test_a_new_version_encoded_is_taken_whole() -> None:
    """Its Content-Length counts encoded bytes; the decoded file is longer."""
    state = broken_first_attempt()
    new = answer(200, etag='"B"', content_encoding="gzip", content_length="300")
    assert take(state, new, 1500)


def test_the_same_version_answered_short_is_not_the_file() -> None:
    """A CDN ignoring the Range with a 200 of the same version, without a length, that
    stops at 600 bytes: the file is still 1000 bytes, so this is a break, not the file."""
    state = broken_first_attempt()
    with pytest.raises(httpx.ReadError, match="got 600 of 1000 bytes"):
        take(state, answer(200, etag='"A"'), 600)


def test_a_break_says_how_far_the_answer_got() -> None:
    state = Transfer()
    state.done, state.expected = 700, 1000
    with pytest.raises(httpx.ReadError, match=r"^the answer broke after 300 of 600 bytes$"):
        complete(state, 400, 1000)


def test_an_answer_of_unknown_length_short_of_the_file_is_a_break() -> None:
    """Not a slice that moved the file on (which would be fetched on without counting a
    retry): a break, counted against the retries, so a CDN that keeps cutting ends."""
    state = Transfer()
    state.done, state.expected = 600, 1000
    with pytest.raises(httpx.ReadError, match=r"^got 600 of 1000 bytes$"):
        complete(state, 400, None)


def test_an_encoded_slice_is_refused_saying_why() -> None:
    """A 206 in an encoding cannot be spliced (its offsets count encoded bytes): refused with
    the answer, naming the file and the reason."""
    state = Transfer()
    state.done, state.expected = 400, 1000
    sliced = answer(206, content_encoding="gzip", content_range="bytes 400-999/1000")
    with pytest.raises(k.APIResponseValidationError) as refused:
        place_of(sliced, state, URL)
    assert refused.value.response is sliced
    assert str(refused.value) == (
        f"The CDN answered part of {URL} (206) in an encoding (its offsets are the encoded "
        "ones); it cannot be saved as the whole file"
    )


class TestSlices:
    """A 206's place in the file, from what it and earlier answers announced."""

    @staticmethod
    def holding(done: int, expected: int | None) -> Transfer:
        state = Transfer()
        state.done, state.expected = done, expected
        return state

    def test_a_slice_without_content_range_is_the_rest_asked_for(self) -> None:
        """RFC 9110 requires Content-Range; without it, the body is the range asked for,
        checked against the size an earlier answer announced."""
        with_length = answer(206, content_length="600")
        assert place_of(with_length, self.holding(400, 1000), URL) == (400, 1000)
        assert place_of(answer(206), self.holding(400, 1000), URL) == (400, None)

    def test_a_slice_of_unknown_total_takes_the_size_announced_before(self) -> None:
        state = self.holding(400, 1000)
        assert place_of(answer(206, content_range="bytes 400-999/*"), state, URL) == (400, 1000)
        assert state.expected == 1000

    @pytest.mark.parametrize("headers", [{}, {"content_range": "bytes 0-99/*"}])
    def test_a_slice_with_no_size_anywhere_is_refused_saying_why(
        self, headers: dict[str, str]
    ) -> None:
        sliced = answer(206, **headers)
        with pytest.raises(k.APIResponseValidationError) as refused:
            place_of(sliced, Transfer(), URL)
        assert refused.value.response is sliced
        assert str(refused.value) == (
            f"The CDN answered part of {URL} (206) without the file's size; it cannot be "
            "saved as the whole file"
        )

    def test_an_unreadable_content_range_is_quoted_short(self) -> None:
        header = "bytes " + "9" * 100
        with pytest.raises(StartOver) as restart:
            place_of(answer(206, content_range=header), self.holding(0, None), URL)
        assert str(restart.value) == f"the CDN answered an unreadable Content-Range {header[:60]!r}"
