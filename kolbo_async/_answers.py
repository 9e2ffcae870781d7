"""Reading the API's answers: Kolbo's envelope, the error each failure becomes, the key masked.

The send path (`_send`) says what came back; this module says what it means for an API call:
the JSON object of a success, the `APIStatusError` of a refusal (`Retryable` when the retry
rule gets to judge it), `SubmissionOutcomeUnknownError` when a paid POST may have created a
generation that its answer does not name. Every message is masked: the API key never reaches
an error, a log or a traceback's cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import httpx

from ._config import Settings
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    KolboError,
    SubmissionOutcomeUnknownError,
    make_status_error,
)
from ._retries import Failure
from ._send import Answer, Retryable, Unanswered

__all__ = [
    "mask_key",
    "outcome_unknown",
    "preview",
    "raise_unanswered",
    "read",
    "redact",
    "submitted_id",
    "unreadable",
]

REDACTED = "kolbo_live_***"
_NOT_JSON = object()


def redact(text: str, settings: Settings) -> str:
    """`text` with the API key masked, for anything that may reach a log or a user."""
    # Never the key in a local of its own: a traceback's locals are shown by some tools.
    if settings.api_key and settings.api_key in text:
        return text.replace(settings.api_key, REDACTED)
    return text


def preview(body: object, settings: Settings) -> str:
    """A short, one-line, key-free view of an answer for a message (masked first, then
    cut, so that a key straddling the cut cannot survive in part)."""
    return _preview(redact(body if isinstance(body, str) else repr(body), settings))


def mask_key(request: httpx.Request) -> None:
    """Mask the key in `request`'s headers: an error keeps its response, and that its request."""
    if "X-API-Key" in request.headers:
        request.headers["X-API-Key"] = REDACTED


def raise_unanswered(
    lost: Unanswered, request: httpx.Request, *, generation: bool, settings: Settings
) -> NoReturn:
    """Raise the `Retryable` for an API call that got no answer, with the error it becomes.

    A paid POST that may have been sent becomes `SubmissionOutcomeUnknownError`: only its
    answer could have told whether Kolbo created (and charged) the generation.
    """
    mask_key(request)
    exc = lost.cause
    what = f"{request.method} {request.url.path}"
    detail = redact(lost.reason(), settings)
    error: KolboError
    if lost.attempt.failure is Failure.NOT_SENT:
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        error = cls(f"{what} could not connect: {detail}", request=request)
    elif generation:
        error = SubmissionOutcomeUnknownError(
            f"{what} failed after the request may have reached Kolbo ({detail}). "
            + _may_exist(request),
            request=request,
        )
    elif isinstance(exc, httpx.TimeoutException):
        error = APITimeoutError(f"{what} timed out: {detail}", request=request)
    else:
        error = APIConnectionError(f"{what} failed: {detail}", request=request)
    raise Retryable(lost.attempt, error) from _safe_cause(exc, settings)


def _safe_cause(exc: BaseException, settings: Settings) -> BaseException | None:
    """`exc` to chain from, or None when its text holds the key: a traceback prints the
    cause, and a transport's error may quote the request's headers."""
    if settings.api_key in str(exc) or settings.api_key in repr(exc.args):
        return None
    return exc


def read(answer: Answer, *, generation: bool, settings: Settings) -> dict[str, Any]:
    """The JSON object of a successful answer; raise what any other answer means.

    `generation`: the answer is to a paid generation POST.
    """
    response = answer.response
    status = response.status_code
    body: object
    try:
        body = response.json()
    # Not JSON, not UTF-8 (a proxy's page, a truncated answer), or nested deeper than
    # the parser's recursion limit (a hostile or broken server).
    except (ValueError, RecursionError):
        body = _NOT_JSON
    if not isinstance(body, dict):
        # Only an object is the API's envelope; anything else is kept as the raw text
        # (a parsed `null` or `42` would lose what the server actually said).
        if 200 <= status < 300:
            what = "a non-JSON body" if body is _NOT_JSON else "JSON that is not an object"
            if generation:
                raise outcome_unknown(response, f"with {what}", settings)
            raise APIResponseValidationError(
                f"{response.request.method} {response.request.url.path} answered {status} "
                f"with {what}: {preview(response.text, settings)}",
                response=response,
                body=response.text,
            )
        body = response.text
    elif 200 <= status < 300:
        refused = body.get("success") is False or body.get("status") is False
        # A paid POST whose answer names a generation created it, whatever else it says.
        if refused and not (generation and submitted_id(body) is not None):
            raise _status_error(response, body, answer.retry_after, settings)
        return body
    if generation and status >= 500 and not _is_envelope(body):
        # A gateway's 502/504/524 page: Kolbo may have created the generation before
        # the gateway gave up on it. Only Kolbo's own error envelope is a refusal.
        raise outcome_unknown(response, "from a gateway, not from Kolbo", settings)
    error = _status_error(response, body, answer.retry_after, settings)
    if answer.retry is not None:
        raise Retryable(answer.retry, error)
    raise error


def unreadable(
    response: httpx.Response,
    body: dict[str, Any],
    exc: Exception,
    *,
    generation: bool,
    settings: Settings,
) -> KolboError:
    """The error for a success whose object the SDK cannot read (`exc` from its parser)."""
    if generation:
        return outcome_unknown(response, f"with a body the SDK cannot read ({exc})", settings)
    request = response.request
    return APIResponseValidationError(
        f"{request.method} {request.url.path} answered {response.status_code} with a "
        f"body the SDK cannot read ({exc}): {preview(body, settings)}",
        response=response,
        body=body,
    )


def outcome_unknown(
    response: httpx.Response, how: str, settings: Settings
) -> SubmissionOutcomeUnknownError:
    """The error for a paid POST answered `how`: it may have created a generation."""
    request = response.request
    mask_key(request)
    return SubmissionOutcomeUnknownError(
        f"{request.method} {request.url.path} was answered {response.status_code} {how}: "
        f"{preview(response.text, settings)}. " + _may_exist(request),
        request=request,
        response=response,
    )


def _may_exist(request: httpx.Request) -> str:
    # What a POST whose outcome is unknown may have left behind: a media upload (the other
    # POST counted in the generation bucket) a file, a generation POST a charge.
    if request.url.path.endswith("/v1/media/upload"):
        return (
            "The file may have been stored in your media library; it was NOT sent again. "
            "Check your Kolbo media library before uploading it again."
        )
    return (
        "The generation may have been created and charged; it was NOT resubmitted. "
        "Check your Kolbo dashboard before submitting it again."
    )


def _status_error(
    response: httpx.Response, body: object, retry_after: float | None, settings: Settings
) -> APIStatusError:
    if isinstance(body, str):
        # Masked before the message cuts it short: a cut key would no longer be found.
        body = redact(body, settings)
    error = make_status_error(response, body, retry_after=retry_after)
    if 300 <= response.status_code < 400:
        location = response.headers.get("location", "?")
        error.message = f"{error.message}: redirect to {location} not followed"
    redacted = redact(error.message, settings)
    if redacted != error.message:
        error.message = redacted
    error.args = (error.message,)
    return error


def _is_envelope(body: object) -> bool:
    """Whether an error answer is Kolbo's own ``{success: false, error, code}`` envelope
    (or its 429 form ``{status: false, message}``), rather than a gateway's page."""
    if not isinstance(body, dict):
        return False
    refused = body.get("success") is False or body.get("status") is False
    return refused and any(isinstance(body.get(key), str) for key in ("error", "code", "message"))


def _preview(body: object, limit: int = 120) -> str:
    text = body if isinstance(body, str) else repr(body)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def submitted_id(answer: Mapping[str, Any]) -> str | None:
    """The id of the generation a POST's answer names: a non-empty string, or a number (still
    the id of a generation that was created and charged); None when it names none.

    Example:
        >>> submitted_id({"generation_id": 42}), submitted_id({"generation_id": ""})
        ('42', None)
    """
    generation_id = answer.get("generation_id")
    if isinstance(generation_id, str):
        return generation_id or None
    if isinstance(generation_id, int) and not isinstance(generation_id, bool):
        return str(generation_id)
    return None
