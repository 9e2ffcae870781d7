"""`AsyncKolbo`, the async client: settings, the parts it shares, and its lifetime."""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import httpx

from ._clock import SYSTEM_CLOCK, Clock
from ._config import (
    DEFAULT_TIMEOUT,
    RateLimits,
    Settings,
    make_timeout,
    positive_int,
    resolve_api_key,
    resolve_base_url,
)
from ._exceptions import InvalidRequestError
from ._handles import AsyncGeneration, fetch_status
from ._namespaces import (
    AsyncAccount,
    AsyncGenerations,
    AsyncImages,
    AsyncMediaLibrary,
    AsyncModels,
    AsyncVideos,
)
from ._pacing import Pacer
from ._pipeline import Pipeline
from ._poller import Poller
from ._tls import shared_ssl_context
from ._transfers import Transfers

if TYPE_CHECKING:
    from ._hooks import Hook
    from ._raw import AsyncWithRawResponse

__all__ = ["DEFAULT_RATE_LIMITS", "AsyncKolbo"]

DEFAULT_RATE_LIMITS = RateLimits()
_UNSET: Any = object()


class AsyncKolbo:
    """The async Kolbo client, for asyncio and trio alike.

    Args:
        api_key: a ``kolbo_live_...`` key; defaults to ``$KOLBO_API_KEY``.
        base_url: defaults to ``$KOLBO_BASE_URL``, ``$KOLBO_API_URL``, ``$KOLBO_API_BASE``, then
            ``https://api.kolbo.ai``. A trailing ``/api`` or ``/api/v1`` is accepted.
        timeout: per HTTP request, in seconds or as an `httpx.Timeout` (a generation POST
            always gets at least 120 s). Waiting for a generation has its own deadline: see
            `AsyncGeneration.wait`.
        max_retries: retries of one request on transient failures (never a paid POST that
            may have reached Kolbo).
        http_client: an `httpx.AsyncClient` to send through; it is left open on close.
        rate_limits: client-side pacing, `RateLimits()` by default; None turns it off.
        max_concurrent_requests: requests in flight at once, across every handle.
        hooks: callables, each called with every event of the client (`RequestDone`,
            `Retrying`, `PacingWait`, `CooldownStarted`, `GenerationSubmitted`,
            `StateChanged`, `DownloadProgress`: subclasses of `Event`), inline where it
            happens: keep them quick. An exception from a hook is logged, never raised.
            ``kolbo_async.otel.TracingHook()`` turns the events into OpenTelemetry spans.

    Example:
        >>> async with AsyncKolbo() as client:                            # doctest: +SKIP
        ...     gen = await client.videos.generate("A drone over snowy peaks")
        ...     result = await gen.result()
        ...     print(result.url)
    """

    videos: AsyncVideos
    images: AsyncImages
    media: AsyncMediaLibrary
    models: AsyncModels
    generations: AsyncGenerations
    account: AsyncAccount

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
        hooks: Iterable[Hook] = (),
        _clock: Clock | None = None,
        _transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        settings = Settings(
            api_key=resolve_api_key(api_key),
            base_url=resolve_base_url(base_url),
            timeout=make_timeout(timeout),
            max_retries=_max_retries(max_retries),
        )
        if rate_limits is not None and not isinstance(rate_limits, RateLimits):
            raise InvalidRequestError(
                "rate_limits", f"must be a RateLimits or None, not {type(rate_limits).__name__}"
            )
        positive_int("max_concurrent_requests", max_concurrent_requests)
        hooks = _checked_hooks(hooks)
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                f"http_client must be an httpx.AsyncClient, not {type(http_client).__name__}"
            )
        self._owns_http = http_client is None
        self._is_copy = False
        if http_client is None:
            http_client = httpx.AsyncClient(
                transport=_transport,
                verify=shared_ssl_context() if _transport is None else True,
                timeout=settings.timeout,
                follow_redirects=False,
                limits=httpx.Limits(
                    max_connections=max_concurrent_requests,
                    max_keepalive_connections=max_concurrent_requests,
                ),
            )
        clock = _clock or SYSTEM_CLOCK
        self._rate_limits = rate_limits
        pacer = Pacer(rate_limits, clock, api_key=settings.api_key, hooks=hooks)
        rng = random.Random()
        self._pipeline = Pipeline(
            settings=settings,
            http=http_client,
            pacer=pacer,
            # fast_acquire: an uncontended slot costs no trip through the event loop.
            limiter=anyio.Semaphore(max_concurrent_requests, fast_acquire=True),
            clock=clock,
            rng=rng,
            hooks=hooks,
        )
        self._poller = Poller(
            fetch=fetch_status,
            clock=clock,
            pacer=pacer,
            rate_limits=rate_limits,
            max_in_flight=max_concurrent_requests,
            rng=rng,
            hooks=hooks,
        )
        # CDN downloads: their own connections and cap.
        self._transfers = Transfers(
            limit=max_concurrent_requests,
            transport=_transport,
            http_client=None if self._owns_http else http_client,
        )
        self._bind()

    def _bind(self) -> None:
        pipeline = self._pipeline
        handle = partial(
            AsyncGeneration, pipeline=pipeline, poller=self._poller, transfers=self._transfers
        )
        self.media = AsyncMediaLibrary(pipeline, self._transfers)
        self.videos = AsyncVideos(pipeline, self._poller, handle, self._transfers)
        self.images = AsyncImages(self.videos)
        self.models = AsyncModels(pipeline)
        self.generations = AsyncGenerations(handle)
        self.account = AsyncAccount(pipeline)
        self._handle = handle

    @property
    def with_raw_response(self) -> AsyncWithRawResponse:
        """The calls that send a request, each returning a `RawResponse`: the HTTP answer's
        ``status_code`` and ``headers``, and `parse()` for the call's usual result.

        Example:
            >>> raw = await client.with_raw_response.account.credits()  # doctest: +SKIP
            >>> raw.headers.get("x-request-id"), raw.parse().total
        """
        from ._raw import AsyncWithRawResponse  # loaded on first use: import time counts

        return AsyncWithRawResponse(self._pipeline, self._poller, self._handle)

    @property
    def base_url(self) -> httpx.URL:
        """The API root the client calls."""
        return self._pipeline.settings.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """The per-request timeout."""
        return self._pipeline.settings.timeout

    @property
    def max_retries(self) -> int:
        """Retries of one request on transient failures."""
        return self._pipeline.settings.max_retries

    @property
    def rate_limits(self) -> RateLimits | None:
        """Client-side pacing, or None when off."""
        return self._rate_limits

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | None = _UNSET,
        max_retries: int = _UNSET,
    ) -> AsyncKolbo:
        """A client for a few calls with other settings.

        It shares this client's connection pool, rate limiter and concurrency cap; closing
        it does nothing, close the original.

        Example:
            >>> patient = client.with_options(timeout=300, max_retries=5)  # doctest: +SKIP
        """
        changes: dict[str, Any] = {}
        if timeout is not _UNSET:
            changes["timeout"] = make_timeout(timeout)
        if max_retries is not _UNSET:
            changes["max_retries"] = _max_retries(max_retries)
        copy = object.__new__(AsyncKolbo)
        copy._owns_http = False
        copy._is_copy = True
        copy._rate_limits = self._rate_limits
        copy._poller = self._poller
        copy._transfers = self._transfers
        copy._pipeline = self._pipeline.with_settings(
            attrs.evolve(self._pipeline.settings, **changes)
        )
        copy._bind()
        return copy

    async def aclose(self) -> None:
        """Close the connection pool the client opened (never a user-supplied one)."""
        if self._is_copy:  # a with_options copy: the original owns the pool and its lifecycle
            return
        lifecycle = self._pipeline.lifecycle
        lifecycle.closed = True
        # A paid POST whose caller left is still on the wire: its answer says whether Kolbo
        # charged, so the pool stays open until it lands (within the POST's own timeout).
        if lifecycle.paid_in_flight:
            lifecycle.landed = anyio.Event()
            await lifecycle.landed.wait()
        await self._transfers.aclose()
        if self._owns_http:
            await self._pipeline.http.aclose()

    async def __aenter__(self) -> AsyncKolbo:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        settings = self._pipeline.settings
        return (
            f"<AsyncKolbo base_url={str(settings.base_url)!r} "
            f"max_retries={settings.max_retries} rate_limits={self._rate_limits!r}>"
        )


def _checked_hooks(hooks: object) -> tuple[Hook, ...]:
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise InvalidRequestError("hooks", f"must be a list of callables, not {hooks!r}")
    hooks = tuple(hooks)
    for index, hook in enumerate(hooks):
        if not callable(hook):
            raise InvalidRequestError(f"hooks[{index}]", f"must be callable, not {hook!r}")
    return hooks


def _max_retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError("max_retries", f"must be a non-negative integer, not {value!r}")
    return value
