"""Splicing a download's answers into one file (`kolbo_async._resume`): plain functions on
plain responses, no event loop, no socket."""

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


def holding(done: int, expected: int | None = None) -> Transfer:
    state = Transfer()
    state.done, state.expected = done, expected
    return state


class TestHeaders:
    def test_first_request_asks_for_the_whole_file_unencoded(self) -> None:
        assert Transfer().headers() == {"Accept-Encoding": "identity"}

    def test_resume_asks_for_the_rest_of_the_same_version(self) -> None:
        state = holding(400, 1000)
        state.if_range = '"v1"'
        assert state.headers() == {
            "Accept-Encoding": "identity",
            "Range": "bytes=400-",
            "If-Range": '"v1"',
        }

    def test_start_over_forgets_the_version(self) -> None:
        state = holding(400, 1000)
        state.if_range = '"v1"'
        state.start_over()
        assert (state.done, state.expected, state.if_range) == (0, None, None)
        assert "Range" not in state.headers()


class TestPlaceOf:
    def test_a_whole_answer_announces_the_size(self) -> None:
        state = Transfer()
        assert place_of(answer(200, content_length="1000"), state, URL) == (0, 1000)
        assert state.expected == 1000

    def test_an_encoded_answer_says_nothing_of_the_size(self) -> None:
        state = Transfer()
        response = answer(200, content_length="10", content_encoding="gzip")
        assert place_of(response, state, URL) == (0, None)
        assert state.expected is None

    def test_the_rest_asked_for(self) -> None:
        state = holding(400, 1000)
        response = answer(206, content_range="bytes 400-999/1000")
        assert place_of(response, state, URL) == (400, 1000)

    def test_a_slice_from_elsewhere_starts_over(self) -> None:
        with pytest.raises(StartOver, match="from 0, not 400"):
            place_of(answer(206, content_range="bytes 0-999/1000"), holding(400, 1000), URL)

    def test_another_size_starts_over(self) -> None:
        with pytest.raises(StartOver, match="2000 bytes for a file of 1000"):
            place_of(answer(206, content_range="bytes 400-999/2000"), holding(400, 1000), URL)

    def test_a_slice_without_any_size_can_never_complete_the_file(self) -> None:
        with pytest.raises(k.APIResponseValidationError, match="without the file's size"):
            place_of(answer(206, content_range="bytes 0-99/*"), Transfer(), URL)


class TestComplete:
    def test_whole(self) -> None:
        assert complete(holding(1000, 1000), 0, 1000) is True

    def test_a_slice_that_moved_the_file_on(self) -> None:
        assert complete(holding(500, 1000), 0, 500) is False

    def test_short_is_a_break_to_resume(self) -> None:
        with pytest.raises(httpx.ReadError, match="after 300 of 1000 bytes"):
            complete(holding(300, 1000), 0, 1000)

    def test_too_much_starts_over(self) -> None:
        with pytest.raises(StartOver, match="more than announced"):
            complete(holding(1200, 1000), 0, None)


class TestCheckVersion:
    def test_the_first_answer_names_the_version(self) -> None:
        state = Transfer()
        check_version(answer(200, etag='"v1"'), state)
        assert state.if_range == '"v1"'

    def test_a_slice_of_another_version_starts_over(self) -> None:
        state = Transfer()
        check_version(answer(200, etag='"v1"'), state)
        state.done = 400
        with pytest.raises(StartOver, match="changed on the CDN"):
            check_version(answer(206, etag='"v2"'), state)

    def test_a_slice_without_validators_is_trusted(self) -> None:
        state = Transfer()
        check_version(answer(200, etag='"v1"'), state)
        state.done = 400
        check_version(answer(206), state)
