"""``Kolbo.with_raw_response``: the blocking client's raw responses, forwarding to the async
client's (`_raw`), with blocking `Generation` handles in place of async ones."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from ._lazy import DeferredModule
from ._raw import (
    AsyncRawAccount,
    AsyncRawModels,
    AsyncRawVideos,
    AsyncWithRawResponse,
    RawResponse,
)
from ._runner import Runner as _Runner
from ._signatures import arguments_of
from ._sync_handles import Generation

if TYPE_CHECKING:
    import kolbo_async

    from . import _requests
else:  # the route classes are loaded on a route's first use
    _requests = DeferredModule("_requests")
    kolbo_async = DeferredModule("")  # public annotations: `typing.get_type_hints`

__all__ = ["WithRawResponse"]


class RawVideos:
    """``client.with_raw_response.videos``. Same as `AsyncRawVideos`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncRawVideos) -> None:
        self._runner = runner
        self._inner = inner

    @arguments_of(lambda: _requests.TextToVideo)
    def generate(self, *args: Any, **kwargs: Any) -> RawResponse[Generation]:
        """`Videos.generate`, with its HTTP answer; `parse()` gives the handle."""
        raw = self._runner.call(partial(self._inner.generate, *args, **kwargs))
        return RawResponse(raw.http_response, Generation(self._runner, raw.parse()))

    @arguments_of(lambda: _requests.ImageToVideo)
    def from_image(self, *args: Any, **kwargs: Any) -> RawResponse[Generation]:
        """`Videos.from_image`, with its HTTP answer; `parse()` gives the handle."""
        raw = self._runner.call(partial(self._inner.from_image, *args, **kwargs))
        return RawResponse(raw.http_response, Generation(self._runner, raw.parse()))


class RawModels:
    """``client.with_raw_response.models``. Same as `AsyncRawModels`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncRawModels) -> None:
        self._runner = runner
        self._inner = inner

    def list(self, type: str | None = "video") -> RawResponse[list[kolbo_async.Model]]:
        """`Models.list`, with its HTTP answer; `parse()` gives the models."""
        return self._runner.call(self._inner.list, type)


class RawAccount:
    """``client.with_raw_response.account``. Same as `AsyncRawAccount`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncRawAccount) -> None:
        self._runner = runner
        self._inner = inner

    def credits(self) -> RawResponse[kolbo_async.Credits]:
        """`Account.credits`, with its HTTP answer; `parse()` gives the balance."""
        return self._runner.call(self._inner.credits)


class WithRawResponse:
    """``client.with_raw_response`` of the blocking client. Same as `AsyncWithRawResponse`:
    each call returns a `RawResponse` whose `parse()` is the call's usual result.

    Example:
        >>> raw = client.with_raw_response.models.list()               # doctest: +SKIP
        >>> raw.status_code, [m.identifier for m in raw.parse()]
    """

    videos: RawVideos
    models: RawModels
    account: RawAccount

    def __init__(self, runner: _Runner, inner: AsyncWithRawResponse) -> None:
        self.videos = RawVideos(runner, inner.videos)
        self.models = RawModels(runner, inner.models)
        self.account = RawAccount(runner, inner.account)
