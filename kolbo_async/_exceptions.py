"""Every error kolbo-async raises, and the table that maps an API answer onto one.

```
KolboError
├── InvalidRequestError             bad input, caught before any byte goes out (also ValueError)
├── APIConnectionError              no usable answer: DNS, refused, reset, TLS, closed client
│   ├── APITimeoutError             connect/read/write/pool timeout of one request
│   └── SubmissionOutcomeUnknownError
│                                   a generation POST failed after it may have reached Kolbo
├── APIResponseValidationError      a 2xx answer that is not what the API documents
├── APIStatusError                  a non-2xx answer (.status_code, .code, .body, .response)
│   ├── BadRequestError             400/422: MISSING_FIELDS, MODEL_NOT_FOUND, ...
│   ├── AuthenticationError         401: INVALID_API_KEY
│   ├── InsufficientCreditsError    INSUFFICIENT_CREDITS, whatever the status, or 402
│   ├── PermissionDeniedError       403
│   ├── NotFoundError               404
│   ├── ConflictError               409
│   ├── RateLimitError              429: RATE_LIMITED (.retry_after)
│   └── InternalServerError         5xx: GENERATION_ERROR
├── GenerationFailedError           the generation ended failed (.status, .generation_id)
│   └── GenerationCancelledError    ... or cancelled
└── GenerationTimeoutError          a handle call's deadline passed (also TimeoutError)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from ._models import GenerationStatus

__all__ = [
    "outcome_error",
    "rate_limited",
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GenerationCancelledError",
    "GenerationFailedError",
    "GenerationTimeoutError",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidRequestError",
    "KolboError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "SubmissionOutcomeUnknownError",
]


class KolboError(Exception):
    """Base class of every error kolbo-async raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt without `__init__`, whose arguments differ per class, so an error crosses
        # processes (multiprocessing, concurrent.futures) whole, attributes included.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(cls: type[KolboError], args: tuple[Any, ...]) -> KolboError:
    return cls.__new__(cls, *args)


_E = TypeVar("_E", bound=BaseException)

#: Set on an error raised before a generation's POST left (an upload first, a file that
#: could not be read whole): Kolbo cannot have charged for it, so it may be sent again.
_NOTHING_SENT = "_kolbo_nothing_sent"


def nothing_sent(error: _E) -> _E:
    """Mark `error` (and return it) as raised before the generation's POST left whole."""
    setattr(error, _NOTHING_SENT, True)
    return error


def was_nothing_sent(error: BaseException) -> bool:
    """Whether `error` was marked by `nothing_sent`: its generation certainly not charged."""
    return getattr(error, _NOTHING_SENT, False) is True


class InvalidRequestError(KolboError, ValueError):
    """An argument was rejected before any request was sent.

    Example:
        >>> InvalidRequestError("duration", "must be a positive number, not -1")
        InvalidRequestError('duration: must be a positive number, not -1')
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class APIConnectionError(KolboError):
    """No usable answer came back: the connection failed, broke, or the client is closed."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    """One HTTP request ran past its `timeout` (connect, read, write or pool)."""


class SubmissionOutcomeUnknownError(APIConnectionError):
    """A generation POST failed after it may have reached Kolbo.

    Kolbo may have created (and charged for) the generation; the SDK does not resubmit,
    because the API has no idempotency key. Check your Kolbo dashboard before retrying.
    Raised for a lost answer (timeout, dropped connection), a gateway's 5xx page, a 2xx
    whose body cannot be read, and a client used where it cannot run.

    Attributes:
        response: the answer that could not be trusted (a gateway's 504 page, an unreadable
            200), or None when no answer came.
    """

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.response = response


class APIResponseValidationError(KolboError):
    """A 2xx answer that is not what the API documents (not JSON, no `state`, ...)."""

    def __init__(self, message: str, *, response: httpx.Response, body: object) -> None:
        super().__init__(message)
        self.response = response
        self.body = body
        self.status_code = response.status_code


class APIStatusError(KolboError):
    """The API answered with a non-2xx status.

    Attributes:
        status_code: the HTTP status.
        code: the body's `code` (e.g. ``"MODEL_NOT_FOUND"``) or None.
        body: the parsed JSON body, or the raw text when it was not JSON.
        response: the `httpx.Response`.
    """

    def __init__(
        self, message: str, *, response: httpx.Response, body: object, code: str | None
    ) -> None:
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code
        self.body = body
        self.code = code


class BadRequestError(APIStatusError):
    """400/422: the server rejected the request (MISSING_FIELDS, MODEL_NOT_FOUND, ...)."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, malformed, revoked or expired."""


class InsufficientCreditsError(APIStatusError):
    """The account has too few credits for this generation (documented as 400, seen as 402).

    Deliberately not a `BadRequestError`: the fix is topping up, not changing the request.
    """


class PermissionDeniedError(APIStatusError):
    """403: the key lacks the permission for this call."""


class NotFoundError(APIStatusError):
    """404: no such generation (or route) for this key."""


class ConflictError(APIStatusError):
    """409: e.g. cancelling a generation that has already finished."""


class RateLimitError(APIStatusError):
    """429: too many requests. `retry_after` is the server's advice in seconds, if any."""

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        body: object,
        code: str | None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, response=response, body=body, code=code)
        self.retry_after = retry_after


class InternalServerError(APIStatusError):
    """5xx: Kolbo (or a proxy in front of it) failed."""


class GenerationFailedError(KolboError):
    """The generation ended without a usable video.

    Attributes:
        status: the terminal `GenerationStatus` (its `failure` says why).
        generation_id: the generation's id.
    """

    def __init__(self, message: str, *, status: GenerationStatus) -> None:
        super().__init__(message)
        self.status = status
        self.generation_id = status.generation_id


class GenerationCancelledError(GenerationFailedError):
    """The generation was cancelled before it finished."""


class GenerationTimeoutError(KolboError, TimeoutError):
    """A handle call's whole deadline passed; the generation goes on server-side.

    Re-attach later with ``client.generations.attach(err.generation_id)``.
    """

    def __init__(
        self, message: str, *, generation_id: str, last_status: GenerationStatus | None = None
    ) -> None:
        super().__init__(message)
        self.generation_id = generation_id
        self.last_status = last_status


# The body's `code` decides first: it is the API's own statement of what happened, while a
# status can be bent by proxies and by Kolbo's docs disagreeing with its clients (400 vs 402).
_BY_CODE: dict[str, type[APIStatusError]] = {
    "INSUFFICIENT_CREDITS": InsufficientCreditsError,
    "INVALID_API_KEY": AuthenticationError,
    "MISSING_FIELDS": BadRequestError,
    "MODEL_NOT_FOUND": BadRequestError,
    "WRONG_MODEL_TYPE": BadRequestError,
    "RATE_LIMITED": RateLimitError,
    "GENERATION_ERROR": InternalServerError,
}

_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def status_error_class(status_code: int, code: str | None) -> type[APIStatusError]:
    """The exception class for an error answer: by `code` first, then by status."""
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    if status_code >= 500:
        return InternalServerError
    return APIStatusError


def make_status_error(
    response: httpx.Response, body: object, *, retry_after: float | None
) -> APIStatusError:
    """Build the `APIStatusError` for a non-2xx answer (or a 2xx with ``success: false``)."""
    code: str | None = None
    text: str | None = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, str) else None
        for key in ("error", "message"):
            value: Any = body.get(key)
            if isinstance(value, str) and value:
                text = value
                break
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                text = value["message"]
                break
    cls = status_error_class(response.status_code, code)
    reason = response.reason_phrase or "error"
    message = f"{response.status_code} {reason}"
    if code:
        message += f" [{code}]"
    if text:
        message += f": {text}"
    elif isinstance(body, str) and body.strip():
        message += f": {_snippet(body)}"
    if cls is RateLimitError:
        return RateLimitError(
            message, response=response, body=body, code=code, retry_after=retry_after
        )
    return cls(message, response=response, body=body, code=code)


def rate_limited(error: KolboError, retry_after: float | None) -> RateLimitError:
    """The error for a server asking to wait longer than the SDK sleeps (`retry_after`
    seconds): raised at once, so the caller decides what to do with an hour's wait."""
    if isinstance(error, RateLimitError):
        return error
    assert isinstance(error, APIStatusError)
    return RateLimitError(
        f"{error.message} (Retry-After: {retry_after:g} s, longer than the SDK waits)",
        response=error.response,
        body=error.body,
        code=error.code,
        retry_after=retry_after,
    )


def outcome_error(status: GenerationStatus) -> GenerationFailedError | None:
    """Why a terminal `status` gave no video, or None when it did."""
    if status.state == "cancelled":
        return GenerationCancelledError(
            f"Generation {status.generation_id} was cancelled", status=status
        )
    if status.state == "failed":
        return GenerationFailedError(_failure_message(status), status=status)
    if status.result is None or not status.result.urls:
        return GenerationFailedError(
            f"Generation {status.generation_id} completed without any video URL "
            "(a content filter or an upstream failure removed the output)",
            status=status,
        )
    return None


def _failure_message(status: GenerationStatus) -> str:
    reason = status.error or (status.failure.message if status.failure else None)
    message = f"Generation {status.generation_id} failed"
    if status.failure is not None and status.failure.code:
        message += f" [{status.failure.code}]"
    return f"{message}: {reason}" if reason else message


def _snippet(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
