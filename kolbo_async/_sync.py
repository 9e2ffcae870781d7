"""`Kolbo` and its namespaces: the blocking client, forwarding to the async core.

Each client owns one event loop (`_runner.Runner`); every method is one call onto it, run in
the calling thread when nothing else is using the loop. No request, retry, pacing, polling or
validation logic lives here: an ``if`` in this module would be a second copy of the async
core.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from ._client import _UNSET, AsyncKolbo
from ._config import RateLimits
from ._lazy import DeferredModule, public
from ._namespaces import (
    AsyncAccount,
    AsyncGenerations,
    AsyncImages,
    AsyncMediaLibrary,
    AsyncModels,
    AsyncVideos,
)
from ._runner import Runner as _Runner
from ._signatures import arguments_of, parameters_of
from ._sync_handles import Batch, Generation

if TYPE_CHECKING:
    import kolbo_async

    from . import _requests, _routes_image, _routes_video
    from ._sync_raw import WithRawResponse
else:  # the route classes are loaded on a route's first use
    _requests = DeferredModule("_requests")
    _routes_image = DeferredModule("_routes_image")
    _routes_video = DeferredModule("_routes_video")
    kolbo_async = DeferredModule("")  # public annotations: `typing.get_type_hints`

__all__ = ["Kolbo"]


class Kolbo:
    """The blocking Kolbo client: the same names, arguments and behaviour as `AsyncKolbo`.

    It runs the async core on its own event loop: in the calling thread when no other call is
    using it (no thread hand-off), else in the client's daemon thread. So it works from plain
    scripts, from many threads at once (one client may be shared), and from inside a running
    event loop (a notebook cell, an async framework's sync hook). Close it with `close()` or
    a ``with`` block; an unclosed client is closed at interpreter exit and never delays it.

    Args:
        api_key: a ``kolbo_live_...`` key; defaults to ``$KOLBO_API_KEY``.
        base_url: defaults to ``$KOLBO_BASE_URL``, ``$KOLBO_API_URL``, ``$KOLBO_API_BASE``, then
            ``https://api.kolbo.ai``. A trailing ``/api`` or ``/api/v1`` is accepted.
        timeout: per HTTP request, in seconds or as an `httpx.Timeout`.
        max_retries: retries of one request on transient failures.
        http_client: an `httpx.AsyncClient` (not an `httpx.Client`: the wrapper runs it on
            its own loop); it is left open on close.
        rate_limits: client-side pacing, `RateLimits()` by default; None turns it off.
        max_concurrent_requests: requests in flight at once, across every handle and thread.
        hooks: callables called with every `Event`, as `AsyncKolbo`'s (on the thread running
            the client's loop: yours when no other call is using it).

    Raises:
        TypeError: `http_client` is not an `httpx.AsyncClient`.

    Example:
        >>> with Kolbo() as client:                                      # doctest: +SKIP
        ...     gen = client.videos.generate("A drone over snowy peaks")
        ...     for update in gen.progress():
        ...         print(update.state, update.progress)
        ...     print(gen.download("drone.mp4"))
    """

    videos: Videos
    images: Images
    media: MediaLibrary
    models: Models
    generations: Generations
    account: Account

    @arguments_of(lambda: AsyncKolbo)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The parameters are AsyncKolbo's (one declaration); the client is built on its loop.
        # Bound here first, so a wrong argument names this class, and no thread is started.
        try:
            inspect.signature(AsyncKolbo).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"Kolbo(): {exc}") from None
        http_client = kwargs.get("http_client")
        # Checked here too, with the blocking-specific hint, so no thread is started for it.
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                "http_client must be an httpx.AsyncClient (the blocking client runs it on its "
                f"own event loop), not {type(http_client).__name__}"
            )

        async def build() -> AsyncKolbo:
            return AsyncKolbo(*args, **kwargs)

        runner = _Runner(build)
        self._setup(runner, runner.client, runner.close)

    def _setup(self, runner: _Runner, inner: AsyncKolbo, close: Callable[[], object]) -> None:
        self._runner = runner
        self._async = inner
        self._close = close
        self.videos = Videos(runner, inner.videos)
        self.images = Images(runner, inner.images)
        self.media = MediaLibrary(runner, inner.media)
        self.models = Models(runner, inner.models)
        self.generations = Generations(runner, inner.generations)
        self.account = Account(runner, inner.account)

    @property
    def with_raw_response(self) -> WithRawResponse:
        """The calls that send a request, each returning a `RawResponse`: the HTTP answer's
        ``status_code`` and ``headers``, and `parse()` for the call's usual result.

        Same as `AsyncKolbo.with_raw_response`; ``videos.generate`` parses to a `Generation`.
        """
        from ._sync_raw import WithRawResponse  # loaded on first use: import time counts

        return WithRawResponse(self._runner, self._async.with_raw_response)

    @property
    def base_url(self) -> httpx.URL:
        """The API root the client calls. Same as `AsyncKolbo.base_url`."""
        return self._async.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """The per-request timeout. Same as `AsyncKolbo.timeout`."""
        return self._async.timeout

    @property
    def max_retries(self) -> int:
        """Retries of one request on transient failures. Same as `AsyncKolbo.max_retries`."""
        return self._async.max_retries

    @property
    def rate_limits(self) -> RateLimits | None:
        """Client-side pacing, or None when off. Same as `AsyncKolbo.rate_limits`."""
        return self._async.rate_limits

    def with_options(
        self, *, timeout: float | httpx.Timeout | None = _UNSET, max_retries: int = _UNSET
    ) -> Kolbo:
        """A client for a few calls with other settings.

        Same as `AsyncKolbo.with_options`: it shares this client's event loop thread,
        connection pool and rate limiter; its `close()` forwards to the async copy's and
        leaves the thread running. Close the original.
        """
        inner = self._async.with_options(timeout=timeout, max_retries=max_retries)
        copy = object.__new__(Kolbo)
        copy._setup(self._runner, inner, partial(_close_copy, self._runner, inner))
        return copy

    def close(self) -> None:
        """Close the connection pool the client opened (never a user-supplied one).

        Same as `AsyncKolbo.aclose`, and it also stops the client's event loop thread;
        calls still waiting in other threads raise `KolboError`. Idempotent.
        """
        self._close()

    def __enter__(self) -> Kolbo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<Kolbo" + repr(self._async).removeprefix("<AsyncKolbo")


def _close_copy(runner: _Runner, inner: AsyncKolbo) -> None:
    if not runner.closed:  # the original closed first: nothing is left to close
        runner.call(inner.aclose)


class Videos:
    """``client.videos``: submit generations. Same as `AsyncVideos`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncVideos) -> None:
        self._runner = runner
        self._inner = inner

    @arguments_of(lambda: _requests.TextToVideo)
    def generate(self, *args: Any, **kwargs: Any) -> Generation:
        """Submit a text-to-video generation and return its handle.

        Same as `AsyncVideos.generate`: credits are charged now, and the POST is never
        resubmitted once it may have reached Kolbo.
        """
        return Generation(
            self._runner, self._runner.call(partial(self._inner.generate, *args, **kwargs))
        )

    @arguments_of(lambda: _requests.ImageToVideo)
    def from_image(self, *args: Any, **kwargs: Any) -> Generation:
        """Submit an image-to-video generation (animate `image_url`) and return its handle.

        Same as `AsyncVideos.from_image`.
        """
        return Generation(
            self._runner, self._runner.call(partial(self._inner.from_image, *args, **kwargs))
        )

    @arguments_of(lambda: _routes_video.FramesToVideo)
    def from_frames(self, *args: Any, **kwargs: Any) -> Generation:
        """Submit a video from `first_frame` to `last_frame` and return its handle.

        Same as `AsyncVideos.from_frames`.
        """
        return Generation(
            self._runner, self._runner.call(partial(self._inner.from_frames, *args, **kwargs))
        )

    @arguments_of(lambda: _routes_video.VideoToVideo)
    def from_video(self, *args: Any, **kwargs: Any) -> Generation:
        """Submit a video-to-video generation (restyle `video`) and return its handle.

        Same as `AsyncVideos.from_video`.
        """
        return Generation(
            self._runner, self._runner.call(partial(self._inner.from_video, *args, **kwargs))
        )

    @arguments_of(lambda: _routes_video.Lipsync)
    def lipsync(self, *args: Any, **kwargs: Any) -> Generation:
        """Submit a lip-sync of `face` to `audio` and return its handle.

        Same as `AsyncVideos.lipsync`.
        """
        return Generation(
            self._runner, self._runner.call(partial(self._inner.lipsync, *args, **kwargs))
        )

    @arguments_of(lambda: _routes_video.ElementsToVideo)
    def from_elements(self, *args: Any, **kwargs: Any) -> Generation:
        """Submit one scene made of `prompt` and reference media; return its handle.

        Same as `AsyncVideos.from_elements`.
        """
        return Generation(
            self._runner, self._runner.call(partial(self._inner.from_elements, *args, **kwargs))
        )

    @parameters_of(lambda: AsyncVideos.generate_many)
    def generate_many(self, *args: Any, **kwargs: Any) -> Batch:
        """Submit many generations; yield a `BatchOutcome` for each as it finishes.

        Same as `AsyncVideos.generate_many`, as a plain iterator whose outcomes hold
        blocking `Generation` handles. Work happens inside each ``next()``.

        Example:
            >>> for outcome in client.videos.generate_many(requests):   # doctest: +SKIP
            ...     if outcome.error is None:
            ...         outcome.generation.download(f"video-{outcome.index}.mp4")
        """
        return Batch(self._runner, self._inner.generate_many(*args, **kwargs))


class Images:
    """``client.images``: submit image generations. Same as `AsyncImages`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncImages) -> None:
        self._runner = runner
        self._inner = inner

    @arguments_of(lambda: _routes_image.TextToImage)
    def generate(self, *args: Any, **kwargs: Any) -> Generation:
        """Submit a text-to-image generation and return its handle.

        Same as `AsyncImages.generate`; the handle's `result()` is an `ImageResult`.
        """
        return Generation(
            self._runner, self._runner.call(partial(self._inner.generate, *args, **kwargs))
        )

    @arguments_of(lambda: _routes_image.ImageEdit)
    def edit(self, *args: Any, **kwargs: Any) -> Generation:
        """Submit an edit of `images` (http(s) URLs) as `prompt` says; return its handle.

        Same as `AsyncImages.edit`.
        """
        return Generation(
            self._runner, self._runner.call(partial(self._inner.edit, *args, **kwargs))
        )


class MediaLibrary:
    """``client.media``: upload files to Kolbo's media library. Same as `AsyncMediaLibrary`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncMediaLibrary) -> None:
        self._runner = runner
        self._inner = inner

    @parameters_of(lambda: AsyncMediaLibrary.upload)
    def upload(self, *args: Any, **kwargs: Any) -> kolbo_async.Media:
        """Upload `file` to the media library and return its `Media` (its Kolbo URL).

        Same as `AsyncMediaLibrary.upload`.
        """
        return self._runner.call(partial(self._inner.upload, *args, **kwargs))


class Models:
    """``client.models``: the model catalog. Same as `AsyncModels`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncModels) -> None:
        self._runner = runner
        self._inner = inner

    def list(self, type: str | None = "video") -> list[kolbo_async.Model]:
        """List the models for `type` (None: every model).

        Same as `AsyncModels.list`: ``"video"``, ``"video_from_image"`` or any of Kolbo's
        catalog types, one per route.
        """
        return self._runner.call(self._inner.list, type)


class Generations:
    """``client.generations``: handles for generations submitted elsewhere or earlier.

    Same as `AsyncGenerations`.
    """

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncGenerations) -> None:
        self._runner = runner
        self._inner = inner

    def attach(self, generation_id: str) -> Generation:
        """A handle from an id alone; no request is made.

        Same as `AsyncGenerations.attach`.
        """
        return Generation(self._runner, self._inner.attach(generation_id))


class Account:
    """``client.account``: the account's balance. Same as `AsyncAccount`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncAccount) -> None:
        self._runner = runner
        self._inner = inner

    def credits(self) -> kolbo_async.Credits:
        """The credit balance (plan, packs and redemptions; 1 credit = US$0.01).

        Same as `AsyncAccount.credits`.
        """
        return self._runner.call(self._inner.credits)


public(Kolbo)
