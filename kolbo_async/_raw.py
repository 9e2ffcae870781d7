"""Raw responses: ``client.with_raw_response``, each call's HTTP answer beside its result.

The idiom of openai's and anthropic's SDKs: the same calls, returning a `RawResponse` whose
`parse()` gives what the call returns otherwise. Each call runs on a `Pipeline.capturing`
copy of the client's pipeline (same pool, pacing, retries and paid-POST rules), which keeps
the answers it received; the last one is the call's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from ._handles import AsyncGeneration
from ._lazy import DeferredModule, public
from ._namespaces import AsyncAccount, AsyncModels, AsyncVideos
from ._pipeline import Pipeline
from ._poller import Poller
from ._signatures import arguments_of

if TYPE_CHECKING:
    import kolbo_async

    from . import _requests
else:  # the route classes are loaded on a route's first use
    _requests = DeferredModule("_requests")
    kolbo_async = DeferredModule("")  # public annotations: `typing.get_type_hints`

__all__ = ["AsyncWithRawResponse", "RawResponse"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class RawResponse(Generic[T_co]):
    """A call's HTTP answer, and its usual result: what ``client.with_raw_response.X(...)``
    returns (on `AsyncKolbo` and `Kolbo` alike).

    Attributes:
        http_response: the `httpx.Response`, read whole; its request's API key is masked.
            After retries, the answer that succeeded.

    Example:
        >>> raw = await client.with_raw_response.account.credits()      # doctest: +SKIP
        >>> raw.status_code, raw.headers.get("x-request-id")
        >>> credits = raw.parse()                                        # a Credits
    """

    __slots__ = ("_parsed", "http_response")

    def __init__(self, http_response: httpx.Response, parsed: T_co) -> None:
        self.http_response = http_response
        self._parsed = parsed

    @property
    def status_code(self) -> int:
        """The answer's HTTP status (a 2xx: an error answer raises, as without raw)."""
        return self.http_response.status_code

    @property
    def headers(self) -> httpx.Headers:
        """The answer's headers (case-insensitive)."""
        return self.http_response.headers

    def parse(self) -> T_co:
        """What the call returns without ``with_raw_response`` (a handle, a list, ...)."""
        return self._parsed

    def _dropped_by_ctrl_c(self) -> None:
        # The blocking portal's call for a Ctrl-C that came as this answer was returned: the
        # handle inside tells of a generation just charged for.
        dropped = getattr(self._parsed, "_dropped_by_ctrl_c", None)
        if dropped is not None:
            dropped()

    def __repr__(self) -> str:
        request = self.http_response.request
        return f"<RawResponse [{self.status_code}] {request.method} {request.url.path}>"


public(RawResponse)


async def _captured(
    pipeline: Pipeline, call: Callable[[Pipeline], Awaitable[T]]
) -> RawResponse[T]:
    """Run `call` on a capturing copy of `pipeline`; its result beside the last answer."""
    copy = pipeline.capturing()
    value = await call(copy)
    assert copy.answers, "a call that returned has had an answer"
    return RawResponse(copy.answers[-1], value)


class AsyncRawVideos:
    """``client.with_raw_response.videos``: `AsyncVideos`' calls, as `RawResponse`s."""

    __slots__ = ("_handle", "_pipeline", "_poller")

    def __init__(
        self, pipeline: Pipeline, poller: Poller, handle: Callable[..., AsyncGeneration]
    ) -> None:
        self._pipeline = pipeline
        self._poller = poller
        self._handle = handle

    def _videos(self, pipeline: Pipeline) -> AsyncVideos:
        # Handles it returns use the client's own pipeline, not the capturing copy.
        return AsyncVideos(pipeline, self._poller, self._handle)

    @arguments_of(lambda: _requests.TextToVideo)
    async def generate(self, *args: Any, **kwargs: Any) -> RawResponse[AsyncGeneration]:
        """`AsyncVideos.generate`, with its HTTP answer; `parse()` gives the handle."""
        return await _captured(
            self._pipeline, lambda p: self._videos(p).generate(*args, **kwargs)
        )

    @arguments_of(lambda: _requests.ImageToVideo)
    async def from_image(self, *args: Any, **kwargs: Any) -> RawResponse[AsyncGeneration]:
        """`AsyncVideos.from_image`, with its HTTP answer; `parse()` gives the handle."""
        return await _captured(
            self._pipeline, lambda p: self._videos(p).from_image(*args, **kwargs)
        )


class AsyncRawModels:
    """``client.with_raw_response.models``: `AsyncModels`' calls, as `RawResponse`s."""

    __slots__ = ("_pipeline",)

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def list(self, type: str | None = "video") -> RawResponse[list[kolbo_async.Model]]:
        """`AsyncModels.list`, with its HTTP answer; `parse()` gives the models."""
        return await _captured(self._pipeline, lambda p: AsyncModels(p).list(type))


class AsyncRawAccount:
    """``client.with_raw_response.account``: `AsyncAccount`'s calls, as `RawResponse`s."""

    __slots__ = ("_pipeline",)

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def credits(self) -> RawResponse[kolbo_async.Credits]:
        """`AsyncAccount.credits`, with its HTTP answer; `parse()` gives the balance."""
        return await _captured(self._pipeline, lambda p: AsyncAccount(p).credits())


class AsyncWithRawResponse:
    """``client.with_raw_response``: the client's calls that send a request, each returning
    a `RawResponse` (status, headers, the `httpx.Response`) whose `parse()` is the result.

    Example:
        >>> raw = await client.with_raw_response.videos.generate("a cat")  # doctest: +SKIP
        >>> raw.headers["x-ratelimit-remaining"], raw.parse().id
    """

    videos: AsyncRawVideos
    models: AsyncRawModels
    account: AsyncRawAccount

    def __init__(
        self, pipeline: Pipeline, poller: Poller, handle: Callable[..., AsyncGeneration]
    ) -> None:
        self.videos = AsyncRawVideos(pipeline, poller, handle)
        self.models = AsyncRawModels(pipeline)
        self.account = AsyncRawAccount(pipeline)
