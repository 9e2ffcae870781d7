"""Promises of reading the API's answers (`kolbo_async._answers`) that its mutation run found
untested: the error each failure becomes (and the request it names), the key masked in every
message and never chained as a cause, a gateway's page told from Kolbo's own refusal, and the
short preview of a body that a message quotes.
"""

from __future__ import annotations

from typing import Any, NoReturn

import httpx
import pytest

import kolbo_async as k
from kolbo_async import AsyncKolbo
from kolbo_async._answers import (
    REDACTED,
    preview,
    raise_unanswered,
    read,
    redact,
    unreadable,
)
from kolbo_async._config import Settings
from kolbo_async._retries import Attempt, Failure
from kolbo_async._send import Answer, Retryable, Unanswered

KEY = "kolbo_live_" + "3d" * 20
API = "https://api.kolbo.ai"
POST_PATH = "/api/v1/generate/video"
SETTINGS = Settings(api_key=KEY, base_url=httpx.URL(API), timeout=httpx.Timeout(10), max_retries=0)


def post_request() -> httpx.Request:
    return httpx.Request("POST", API + POST_PATH, headers={"X-API-Key": KEY}, json={"p": 1})


def unanswered(exc: httpx.HTTPError, failure: Failure, *, generation: bool) -> Retryable:
    request = post_request()
    with pytest.raises(Retryable) as raised:
        raise_unanswered(Unanswered(Attempt(failure), exc), request, generation=generation,
                         settings=SETTINGS)  # fmt: skip
    error = raised.value.error
    assert getattr(error, "request", None) is request  # the request it failed, key masked
    assert request.headers["X-API-Key"] == REDACTED
    return raised.value


def answered(status: int, *, json: Any = None, text: str | None = None, **kw: Any) -> Answer:
    response = httpx.Response(status, json=json, text=text, request=post_request(), **kw)
    return Answer(response, None)


def read_error(answer: Answer, *, generation: bool) -> k.KolboError:
    with pytest.raises(k.KolboError) as raised:
        read(answer, generation=generation, settings=SETTINGS)
    return raised.value


class TestNoAnswer:
    """What an API call that got no answer raises, by how it failed."""

    def test_never_connected_by_timeout(self) -> None:
        failed = unanswered(httpx.ConnectTimeout("slow dns"), Failure.NOT_SENT, generation=True)
        assert type(failed.error) is k.APITimeoutError
        assert str(failed.error) == f"POST {POST_PATH} could not connect: slow dns"

    def test_never_connected_by_refusal(self) -> None:
        """A refused connection is an APIConnectionError, not a timeout (a paid POST that
        never left is a plain connection error: nothing was created)."""
        failed = unanswered(httpx.ConnectError("refused"), Failure.NOT_SENT, generation=True)
        assert type(failed.error) is k.APIConnectionError
        assert str(failed.error) == f"POST {POST_PATH} could not connect: refused"

    def test_a_paid_post_that_may_have_left_is_outcome_unknown(self) -> None:
        failed = unanswered(httpx.ReadTimeout("read"), Failure.LOST, generation=True)
        assert type(failed.error) is k.SubmissionOutcomeUnknownError
        assert str(failed.error) == (
            f"POST {POST_PATH} failed after the request may have reached Kolbo (read). "
            "The generation may have been created and charged; it was NOT resubmitted. "
            "Check your Kolbo dashboard before submitting it again."
        )

    def test_a_lost_read_times_out(self) -> None:
        failed = unanswered(httpx.ReadTimeout("read"), Failure.LOST, generation=False)
        assert type(failed.error) is k.APITimeoutError
        assert str(failed.error) == f"POST {POST_PATH} timed out: read"

    def test_a_lost_connection_fails(self) -> None:
        failed = unanswered(httpx.RemoteProtocolError("eof"), Failure.LOST, generation=False)
        assert type(failed.error) is k.APIConnectionError
        assert str(failed.error) == f"POST {POST_PATH} failed: eof"

    def test_an_error_without_text_is_named_by_its_type(self) -> None:
        failed = unanswered(httpx.ReadError(""), Failure.LOST, generation=False)
        assert str(failed.error) == f"POST {POST_PATH} failed: ReadError"


class Quoting(httpx.TransportError):
    """A transport's error whose text and arguments differ (a custom transport's)."""

    def __init__(self, args: tuple[object, ...], text: str) -> None:
        super().__init__(text)
        self.args = args
        self.text = text

    def __str__(self) -> str:
        return self.text


class TestKeyNeverChained:
    """A traceback prints the cause: an error that quotes the key is not chained."""

    def test_an_error_without_the_key_stays_the_cause(self) -> None:
        cause = httpx.ReadError("connection reset")
        assert unanswered(cause, Failure.LOST, generation=False).__cause__ is cause

    def test_the_key_in_its_text_only(self) -> None:
        cause = Quoting(("no key here",), f"header X-API-Key: {KEY}")
        failed = unanswered(cause, Failure.LOST, generation=False)
        assert failed.__cause__ is None
        assert KEY not in str(failed.error)

    def test_the_key_in_its_arguments_only(self) -> None:
        cause = Quoting(("sent", {"X-API-Key": KEY}), "sent")
        assert unanswered(cause, Failure.LOST, generation=False).__cause__ is None


class TestGatewayOrKolbo:
    """A paid POST's 5xx is a refusal only in Kolbo's own envelope; a gateway's page may hide
    a created generation, so it is outcome-unknown."""

    @pytest.mark.parametrize(
        "body",
        [
            {"status": False, "message": "overloaded"},  # Kolbo's 429 form
            {"success": False, "error": "overloaded"},
            {"success": False, "code": "OVERLOADED"},
            {"success": False, "message": "overloaded"},
        ],
    )
    def test_kolbos_envelope_is_a_refusal(self, body: dict[str, Any]) -> None:
        error = read_error(answered(503, json=body), generation=True)
        assert isinstance(error, k.APIStatusError)
        assert not isinstance(error, k.SubmissionOutcomeUnknownError)

    @pytest.mark.parametrize(
        "body",
        [
            {"status": True, "error": "bad gateway"},
            {"success": False, "error": {"detail": "x"}},
            {"message": "bad gateway"},
        ],
    )
    def test_anything_else_may_have_created_it(self, body: dict[str, Any]) -> None:
        error = read_error(answered(502, json=body), generation=True)
        assert isinstance(error, k.SubmissionOutcomeUnknownError)


class TestStatusErrors:
    @pytest.mark.parametrize("status", [300, 301, 302, 307, 308, 399])
    def test_a_redirect_says_where_and_that_it_was_not_followed(self, status: int) -> None:
        answer = answered(status, text="moved", headers={"Location": "https://elsewhere/x"})
        error = read_error(answer, generation=False)
        assert str(error).endswith(": redirect to https://elsewhere/x not followed")

    def test_a_redirect_without_location(self) -> None:
        error = read_error(answered(302, text=""), generation=False)
        assert str(error).endswith(": redirect to ? not followed")

    @pytest.mark.parametrize("status", [299, 400])
    def test_other_statuses_say_nothing_of_redirects(self, status: int) -> None:
        answer = answered(status, json={"success": False, "error": "bad"})
        assert "redirect" not in str(read_error(answer, generation=False))

    def test_the_key_echoed_in_kolbos_error_is_masked(self) -> None:
        answer = answered(400, json={"success": False, "error": f"bad key {KEY}"})
        error = read_error(answer, generation=False)
        assert isinstance(error, k.APIStatusError)
        assert error.message == f"400 Bad Request: bad key {REDACTED}"
        assert error.args == (error.message,)


class TestOutcomeUnknownAnswers:
    def test_a_gateway_page_is_quoted_masked_with_its_request(self) -> None:
        answer = answered(502, text=f"<html>upstream sent {KEY}</html>")
        error = read_error(answer, generation=True)
        assert isinstance(error, k.SubmissionOutcomeUnknownError)
        assert error.request is answer.response.request
        assert error.request.headers["X-API-Key"] == REDACTED
        assert str(error) == (
            f"POST {POST_PATH} was answered 502 from a gateway, not from Kolbo: "
            f"<html>upstream sent {REDACTED}</html>. The generation may have been created "
            "and charged; it was NOT resubmitted. Check your Kolbo dashboard before "
            "submitting it again."
        )

    def test_an_unreadable_paid_answer_names_the_parser_error(self) -> None:
        response = answered(200, json={"generation_id": 5}).response
        error = unreadable(response, {"generation_id": 5}, ValueError("not a string"),
                           generation=True, settings=SETTINGS)  # fmt: skip
        assert isinstance(error, k.SubmissionOutcomeUnknownError)
        assert "with a body the SDK cannot read (not a string)" in str(error)

    def test_an_unreadable_answer_keeps_and_quotes_its_body(self) -> None:
        body = {"state": 7, "echo": KEY}
        response = answered(200, json=body).response
        error = unreadable(response, body, ValueError("bad state"), generation=False,
                           settings=SETTINGS)  # fmt: skip
        assert isinstance(error, k.APIResponseValidationError)
        assert error.body is body
        assert str(error) == (
            f"POST {POST_PATH} answered 200 with a body the SDK cannot read (bad state): "
            f"{{'state': 7, 'echo': '{REDACTED}'}}"
        )


class TestPreview:
    def test_text_is_quoted_as_is_and_objects_by_repr(self) -> None:
        assert preview("plain  text\n here", SETTINGS) == "plain text here"
        assert preview({"a": KEY}, SETTINGS) == f"{{'a': '{REDACTED}'}}"
        assert preview(42, SETTINGS) == "42"

    def test_a_long_body_is_cut_to_120_characters(self) -> None:
        assert preview("x" * 120, SETTINGS) == "x" * 120
        assert preview("x" * 121, SETTINGS) == "x" * 119 + "…"

    def test_a_key_straddling_the_cut_does_not_survive_in_part(self) -> None:
        shown = preview("y" * 100 + KEY, SETTINGS)
        assert KEY[:20] not in shown and shown.startswith("y" * 100 + "kolbo_live_***")

    def test_redact_leaves_keyless_text_alone(self) -> None:
        assert redact("nothing secret", SETTINGS) == "nothing secret"


@pytest.mark.anyio
async def test_a_transport_error_quoting_the_key_reaches_no_output() -> None:
    """End to end: a transport whose error quotes the request's headers; the error the
    caller gets, its message, its cause chain and its request hold no key."""

    def answer(request: httpx.Request) -> NoReturn:
        raise Quoting((dict(request.headers),), f"failed sending {dict(request.headers)}")

    async with AsyncKolbo(KEY, _transport=httpx.MockTransport(answer), rate_limits=None,
                          max_retries=0) as client:  # fmt: skip
        with pytest.raises(k.APIConnectionError) as raised:
            await client.account.credits()
    error: BaseException | None = raised.value
    while error is not None:
        assert KEY not in str(error) and KEY not in repr(error.args)
        error = error.__cause__
    assert raised.value.request is not None
    assert KEY not in str(raised.value.request.headers)


class TestNotAnObject:
    """A 2xx whose body is not Kolbo's JSON object: said as such, the text kept."""

    @pytest.mark.parametrize(
        ("text", "what"),
        [("<html>maintenance</html>", "a non-JSON body"), ("[1, 2]", "JSON that is not an object")],
    )
    def test_a_read_says_what_came(self, text: str, what: str) -> None:
        error = read_error(answered(200, text=text), generation=False)
        assert isinstance(error, k.APIResponseValidationError)
        assert str(error) == f"POST {POST_PATH} answered 200 with {what}: {text}"
        assert error.body == text

    @pytest.mark.parametrize(
        ("text", "what"),
        [("<html>maintenance</html>", "a non-JSON body"), ("null", "JSON that is not an object")],
    )
    def test_a_paid_post_is_outcome_unknown(self, text: str, what: str) -> None:
        error = read_error(answered(201, text=text), generation=True)
        assert isinstance(error, k.SubmissionOutcomeUnknownError)
        assert str(error).startswith(f"POST {POST_PATH} was answered 201 with {what}: {text}. ")

    def test_a_refusals_text_is_kept_masked(self) -> None:
        error = read_error(answered(400, text=f"bad key {KEY}"), generation=False)
        assert isinstance(error, k.APIStatusError)
        assert error.body == f"bad key {REDACTED}"
        assert KEY not in str(error)


class TestEnvelopeEdges:
    def test_a_500_page_on_a_paid_post_may_have_created_it(self) -> None:
        """A 500 is a 5xx too: a page that is not Kolbo's envelope is outcome-unknown."""
        error = read_error(
            answered(500, text="<html>Internal Server Error</html>"), generation=True
        )
        assert isinstance(error, k.SubmissionOutcomeUnknownError)

    def test_a_300_is_not_a_success(self) -> None:
        answer = answered(300, json={"success": True, "generation_id": "g"})
        assert isinstance(read_error(answer, generation=False), k.APIStatusError)

    def test_kolbos_429_form_in_a_2xx_is_a_refusal(self) -> None:
        """``{status: false, message}`` answered 200 is Kolbo refusing, not a success."""
        answer = answered(200, json={"status": False, "message": "slow down"})
        error = read_error(answer, generation=False)
        assert isinstance(error, k.APIStatusError) and "slow down" in str(error)

    def test_a_true_status_is_a_success(self) -> None:
        body = {"status": True, "message": "ok", "credits": 3}
        assert read(answered(200, json=body), generation=False, settings=SETTINGS) == body


def test_an_upload_that_may_have_landed_says_where_to_look() -> None:
    """A media upload is the other POST that may leave something behind: a stored file."""
    request = httpx.Request("POST", API + "/api/v1/media/upload", headers={"X-API-Key": KEY})
    lost = Unanswered(Attempt(Failure.LOST), httpx.ReadTimeout("read"))
    with pytest.raises(Retryable) as raised:
        raise_unanswered(lost, request, generation=True, settings=SETTINGS)
    assert str(raised.value.error).endswith(
        "(read). The file may have been stored in your media library; it was NOT sent again. "
        "Check your Kolbo media library before uploading it again."
    )
