"""`Kolbo` and `Generation`: the blocking client, forwarding to the async core.

Each client owns one event loop in a daemon thread, behind an anyio blocking portal; every
method is one call across it. No request, retry, pacing, polling or validation logic lives
here: an ``if`` in this module would be a second copy of the async core.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx

from ._client import (
    _UNSET,
    DEFAULT_RATE_LIMITS,
    AsyncAccount,
    AsyncGenerations,
    AsyncKolbo,
    AsyncModels,
    AsyncVideos,
)
from ._clock import Clock
from ._config import DEFAULT_TIMEOUT, RateLimits
from ._exceptions import KolboError
from ._handles import DEFAULT_WAIT, AsyncGeneration, GenerationProgress, ProgressCallback
from ._models import Credits, GenerationStatus, Model, Submission, VideoResult

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

__all__ = ["Generation", "Kolbo"]

T = TypeVar("T")


class _Runner:
    """One event loop in a daemon thread, and the portal into it.

    A daemon thread, not anyio's `start_blocking_portal` (a thread pool worker): forgetting to
    close the client must never make the interpreter wait at exit.
    """

    def __init__(self) -> None:
        # Imported here: anyio.from_thread costs ~7 ms that `import kolbo_async` should not.
        from concurrent.futures import CancelledError, Future

        from anyio.from_thread import BlockingPortal

        ready: Future[BlockingPortal] = Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # pragma: no cover - loop failed to start
                if not ready.done():
                    ready.set_exception(exc)

        self._thread = threading.Thread(target=run, name="kolbo-blocking", daemon=True)
        self._thread.start()
        self.portal = ready.result()
        self.closed = False
        self._cancelled = CancelledError

    def call(self, func: Callable[..., Awaitable[T]], /, *args: Any) -> T:
        """Run ``func(*args)`` on the loop and wait for it; Ctrl-C cancels it there."""
        if self.closed:
            raise KolboError("This Kolbo client is closed; create a new one to make requests.")
        if threading.current_thread() is self._thread:
            raise KolboError(
                "The blocking client cannot be called from its own callbacks (on_progress)."
            )
        future = self.portal.start_task_soon(func, *args)
        try:
            return future.result()
        except self._cancelled:
            if self.closed:  # another thread closed the client under this call
                raise KolboError(
                    "The Kolbo client was closed while this call was running."
                ) from None
            raise
        except BaseException:
            # KeyboardInterrupt (or any interruption) while waiting: stop the work on the
            # loop too, so nothing keeps polling behind the caller's back.
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError):  # already stopped
            self.portal.call(self.portal.stop, True)
        self._thread.join(timeout=10)


def _shutdown(runner: _Runner, client: AsyncKolbo) -> None:
    if runner.closed:
        return
    try:
        runner.call(client.aclose)
    finally:
        runner.stop()


class Kolbo:
    """The blocking Kolbo client: the same names and behaviour as `AsyncKolbo`.

    It runs the async core on its own event loop thread, so it works from plain scripts,
    from threads (one client may be shared by many), and from inside a running event loop
    (a notebook cell). Close it with `close()` or a ``with`` block.

    Example:
        >>> with Kolbo() as client:                                      # doctest: +SKIP
        ...     gen = client.videos.generate("A drone over snowy peaks")
        ...     for update in gen.progress():
        ...         print(update.state, update.progress)
        ...     print(gen.download("drone.mp4"))
    """

    videos: Videos
    models: Models
    generations: Generations
    account: Account

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        http_client: httpx.AsyncClient | None = None,
        rate_limits: RateLimits | None = DEFAULT_RATE_LIMITS,
        max_concurrent_requests: int = 32,
        _clock: Clock | None = None,
        _transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                "http_client must be an httpx.AsyncClient (the blocking client runs it on its "
                f"own event loop), not {type(http_client).__name__}"
            )
        runner = _Runner()

        async def build() -> AsyncKolbo:
            # Built on the loop it will run on, so its locks and pool belong to that loop.
            return AsyncKolbo(
                api_key,
                base_url=base_url,
                timeout=timeout,
                max_retries=max_retries,
                http_client=http_client,
                rate_limits=rate_limits,
                max_concurrent_requests=max_concurrent_requests,
                _clock=_clock,
                _transport=_transport,
            )

        try:
            inner = runner.call(build)
        except BaseException:
            runner.stop()
            raise
        self._setup(runner, inner)
        self._finalizer = weakref.finalize(self, _shutdown, runner, inner)

    def _setup(self, runner: _Runner, inner: AsyncKolbo) -> None:
        self._runner = runner
        self._async = inner
        self.videos = Videos(runner, inner.videos)
        self.models = Models(runner, inner.models)
        self.generations = Generations(runner, inner.generations)
        self.account = Account(runner, inner.account)

    @property
    def base_url(self) -> httpx.URL:
        """The API root the client calls."""
        return self._async.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """The per-request timeout."""
        return self._async.timeout

    @property
    def max_retries(self) -> int:
        """Retries of one request on transient failures."""
        return self._async.max_retries

    @property
    def rate_limits(self) -> RateLimits | None:
        """Client-side pacing, or None when off."""
        return self._async.rate_limits

    def with_options(
        self, *, timeout: float | httpx.Timeout | None = _UNSET, max_retries: int = _UNSET
    ) -> Kolbo:
        """A client for a few calls with other settings. Same as `AsyncKolbo.with_options`.

        It shares this client's loop, connection pool and rate limiter; close the original.
        """
        copy = object.__new__(Kolbo)
        inner = self._async.with_options(timeout=timeout, max_retries=max_retries)
        copy._setup(self._runner, inner)
        return copy

    def close(self) -> None:
        """Close the connection pool and stop the client's event loop thread."""
        self._finalizer()

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


class Videos:
    """``client.videos``: submit generations. Same as `AsyncVideos`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncVideos) -> None:
        self._runner = runner
        self._inner = inner

    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        duration: float | None = None,
        enhance_prompt: bool | None = None,
        visual_dna_ids: Sequence[str] | None = None,
        reference_images: Sequence[str] | None = None,
        resolution: str | None = None,
        sound_enabled: bool | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> Generation:
        """Submit a text-to-video generation and return its handle.

        Same as `AsyncVideos.generate`: charged now, never resubmitted once it may have
        reached Kolbo.
        """
        inner = self._runner.call(partial(
            self._inner.generate, prompt, model=model, aspect_ratio=aspect_ratio,
            duration=duration, enhance_prompt=enhance_prompt, visual_dna_ids=visual_dna_ids,
            reference_images=reference_images, resolution=resolution,
            sound_enabled=sound_enabled, extra_body=extra_body,
        ))
        return Generation(self._runner, inner)

    def from_image(
        self,
        image_url: str,
        *,
        prompt: str | None = None,
        model: str | None = None,
        aspect_ratio: str | None = None,
        duration: float | None = None,
        enhance_prompt: bool | None = None,
        visual_dna_ids: Sequence[str] | None = None,
        reference_images: Sequence[str] | None = None,
        resolution: str | None = None,
        sound_enabled: bool | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> Generation:
        """Submit an image-to-video generation. Same as `AsyncVideos.from_image`."""
        inner = self._runner.call(partial(
            self._inner.from_image, image_url, prompt=prompt, model=model,
            aspect_ratio=aspect_ratio, duration=duration, enhance_prompt=enhance_prompt,
            visual_dna_ids=visual_dna_ids, reference_images=reference_images,
            resolution=resolution, sound_enabled=sound_enabled, extra_body=extra_body,
        ))
        return Generation(self._runner, inner)


class Models:
    """``client.models``: the model catalog. Same as `AsyncModels`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncModels) -> None:
        self._runner = runner
        self._inner = inner

    def list(self, type: str | None = "video") -> list[Model]:
        """List the models for `type`. Same as `AsyncModels.list`."""
        return self._runner.call(self._inner.list, type)


class Generations:
    """``client.generations``: handles from ids. Same as `AsyncGenerations`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncGenerations) -> None:
        self._runner = runner
        self._inner = inner

    def attach(self, generation_id: str) -> Generation:
        """A handle from an id alone; no request is made."""
        return Generation(self._runner, self._inner.attach(generation_id))


class Account:
    """``client.account``: the balance. Same as `AsyncAccount`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncAccount) -> None:
        self._runner = runner
        self._inner = inner

    def credits(self) -> Credits:
        """The credit balance. Same as `AsyncAccount.credits`."""
        return self._runner.call(self._inner.credits)


class Generation:
    """A blocking handle on one generation. Same as `AsyncGeneration`."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: _Runner, inner: AsyncGeneration) -> None:
        self._runner = runner
        self._inner = inner

    @property
    def id(self) -> str:
        """The generation's id."""
        return self._inner.id

    @property
    def submission(self) -> Submission | None:
        """The POST's answer, or None for an attached handle."""
        return self._inner.submission

    def __repr__(self) -> str:
        return f"<Generation id={self.id!r}>"

    def status(self) -> GenerationStatus:
        """Fetch the current status (one GET). Same as `AsyncGeneration.status`."""
        return self._runner.call(self._inner.status)

    def progress(self, timeout: float | None = DEFAULT_WAIT) -> Iterator[GenerationStatus]:
        """Yield the status at each change of state or progress, as it happens.

        Same as `AsyncGeneration.progress`; ``break`` stops the polling at once.
        """
        return _stream(self._runner, self._inner.progress(timeout))

    def wait(self, timeout: float | None = DEFAULT_WAIT) -> GenerationStatus:
        """Block until the generation ends. Same as `AsyncGeneration.wait`."""
        return self._runner.call(self._inner.wait, timeout)

    def result(self, timeout: float | None = DEFAULT_WAIT) -> VideoResult:
        """Block until the video is ready and return it. Same as `AsyncGeneration.result`."""
        return self._runner.call(self._inner.result, timeout)

    def download(
        self,
        path: str | os.PathLike[str],
        *,
        index: int = 0,
        overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = DEFAULT_WAIT,
    ) -> Path:
        """Stream the video to `path`. Same as `AsyncGeneration.download`.

        `on_progress` runs on the client's event loop thread.
        """
        return self._runner.call(partial(
            self._inner.download, path, index=index, overwrite=overwrite,
            on_progress=on_progress, timeout=timeout,
        ))

    def download_thumbnail(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = DEFAULT_WAIT,
    ) -> Path:
        """Stream the thumbnail to `path`. Same as `AsyncGeneration.download_thumbnail`."""
        return self._runner.call(partial(
            self._inner.download_thumbnail, path, overwrite=overwrite,
            on_progress=on_progress, timeout=timeout,
        ))

    def cancel(self) -> GenerationStatus:
        """Cancel the generation; return its status. Same as `AsyncGeneration.cancel`."""
        return self._runner.call(self._inner.cancel)


def _stream(runner: _Runner, updates: GenerationProgress) -> Iterator[GenerationStatus]:
    try:
        while True:
            try:
                yield runner.call(updates.__anext__)
            except StopAsyncIteration:
                return
    finally:
        if not runner.closed:
            runner.call(updates.aclose)
